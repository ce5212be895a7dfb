#!/usr/bin/env bash
# The whole test suite: what README.md calls and .ci/run runs.
# Works on a fresh machine with only Go and gcc: anything else a test needs is
# installed by scripts/deps.sh first. Privileged tests run for real as root and
# skip, naming the missing feature, elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
# -race needs cgo; gcc is on every machine here.
CGO_ENABLED=1 go test -race -count=1 -timeout 30m ./...
