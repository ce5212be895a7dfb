#!/usr/bin/env bash
# Runs every Go fuzz target of the given packages, one after the other, for a
# fixed time each, and optionally saves the corpus the fuzzer grew into the
# package's testdata/fuzz/<Target>/ so that plain `go test` replays it.
#
#   scripts/fuzz.sh [-t DURATION] [-j WORKERS] [-s] [PACKAGE...]
#     -t  time per target (default 30s), e.g. 5m
#     -j  fuzzing workers per target (default 1)
#     -s  save the grown corpus into testdata/fuzz (commit it afterwards)
#   default packages: ./...
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=30s workers=1 save=0
while getopts "t:j:s" o; do
  case $o in
    t) fuzztime=$OPTARG ;;
    j) workers=$OPTARG ;;
    s) save=1 ;;
    *) sed -n '2,10p' "$0"; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || set -- ./...
cache=$(go env GOCACHE)/fuzz
status=0
for pkg in $(go list "$@"); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    start=$(date +%s)
    if go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel "$workers" >"/tmp/fuzz-$target.log" 2>&1; then
      verdict=ok
    else
      verdict=FAIL status=1
    fi
    execs=$(grep -o 'execs: [0-9]*' "/tmp/fuzz-$target.log" | tail -1 | cut -d' ' -f2)
    echo "$verdict $pkg $target $(( $(date +%s) - start ))s execs=${execs:-?}"
    [ $verdict = ok ] || tail -20 "/tmp/fuzz-$target.log"
    if [ $save = 1 ] && [ -d "$cache/$pkg/$target" ]; then
      mkdir -p "$dir/testdata/fuzz/$target"
      cp -n "$cache/$pkg/$target"/* "$dir/testdata/fuzz/$target/"
    fi
  done
done
exit $status
