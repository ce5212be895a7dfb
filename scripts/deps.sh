#!/usr/bin/env bash
# Installs what the tests and tools need when it is missing. Each entry is
# "command:debian-package". Installs only as root (CI); elsewhere it says what
# is missing and the tests that need it skip with a message.
set -euo pipefail
needs=(
  "gcc:gcc" # the race detector's cgo runtime
  "ip:iproute2" # testnet: Host.Exec runs `ip netns exec`
)
missing=()
for entry in "${needs[@]}"; do
  command -v "${entry%%:*}" >/dev/null 2>&1 || missing+=("${entry#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing ${missing[*]}; not root, so not installing (tests that need them will skip)" >&2
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
