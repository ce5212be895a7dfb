# Common tasks. The scripts in scripts/ do the work, so each also runs without make.
.PHONY: all build test lint fuzz bench demo

all: build

build:
	go build -o bin/mxpd ./cmd/mxpd

# The whole test suite (what .ci/run calls).
test:
	scripts/test.sh

lint:
	scripts/lint.sh

# Each fuzz target for FUZZTIME (default 30s); SAVE=1 keeps the grown corpus in testdata/fuzz.
FUZZTIME ?= 30s
fuzz:
	scripts/fuzz.sh -t $(FUZZTIME) $(if $(SAVE),-s) ./...

bench:
	go test -run '^$$' -bench . -benchmem ./...

demo:
	go run ./cmd/mxpd demo

# MXP side by side with raw UDP, HTTP(S), gRPC, NATS and quic-go on loopback
# (docs/performance.md): QUICK=1 for the ~60 s mode, the full one takes ~8 min.
.PHONY: compare
OUT ?= compare-out
compare:
	go run ./perf/compare $(if $(QUICK),--quick) --out $(OUT)
