// Package bpf holds MXP's BPF programs and their loaders. The C sources are
// compiled by bpf2go (see gen.go, scripts/bpf-generate.sh) into the committed
// reuseport_bpf{el,eb}.{go,o}, so building this package needs no clang.
//
// The SK_REUSEPORT program (reuseport.c) steers each UDP datagram arriving
// at a SO_REUSEPORT group to the socket of the shard its connection ID names:
// payload byte 7 (wire.ConnIDShardOffset) modulo the number of shards. Use
// LoadReuseport, put each shard's socket in its slot with SetShard, and
// attach the program to the group with AttachTo.
//
// The XDP program (xdp_steer.c) steers MXP datagrams into the AF_XDP socket
// of the shard their connection ID names (handshakes: of the queue they
// arrived on) and passes everything else to the kernel: LoadXDP, SetSocket
// for each shard's socket, Attach to the interface (see docs/xdp.md).
//
// Library code here never logs; errors are typed (see Error and the Err*
// values).
package bpf
