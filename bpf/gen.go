package bpf

// Regenerate the committed reuseport_bpf{el,eb}.{go,o} after editing
// reuseport.c: scripts/bpf-generate.sh (installs clang if missing). Plain
// `go build` needs no clang.
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cflags "-O2 -g -Wall -Werror" reuseport reuseport.c
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cflags "-O2 -g -Wall -Werror" xdpsteer xdp_steer.c
