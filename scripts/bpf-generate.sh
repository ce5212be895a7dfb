#!/usr/bin/env bash
# Regenerates the committed BPF objects and Go bindings in bpf/ (bpf2go) after
# a change to bpf/*.c. Plain `go build` never needs this: the generated
# bpf/*_bpfel.{go,o} and *_bpfeb.{go,o} are committed.
# Needs clang (and llvm-strip from llvm); installs them with apt when missing
# and running as root. The C sources include only bpf/bpf_defs.h, so no kernel
# or libbpf headers are needed.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v llvm-strip >/dev/null 2>&1 || missing+=(llvm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bpf-generate: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  echo "bpf-generate: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
go generate ./bpf/...
echo "bpf-generate: regenerated; commit bpf/*_bpfel.* and bpf/*_bpfeb.*" >&2
