package uring

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/bpf"
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
	"github.com/mxp-dataplane/mxp/dataplane/uring/ring"
)

// Backend is the io_uring backend. The zero value is ready to use.
type Backend struct {
	// Steering says how datagrams reach their shard with more than one
	// shard, as for the portable backend (the same SK_REUSEPORT program).
	Steering portable.Steering
	// SQPoll runs a kernel thread per ring that polls its SQ, so sends need
	// no system call while it is awake. Off by default: it was slower here
	// with 2 cores, where the thread competes with the shards.
	SQPoll bool
	// ThreadPerShard keeps each shard on a thread of its own that waits in
	// io_uring_enter, woken by an eventfd read posted on the ring, instead
	// of parking in Go's network poller on the ring's descriptor (the
	// default, which costs fewer thread switches when the shard hands work
	// to other goroutines). Config.Pin implies it.
	ThreadPerShard bool
	// RxBuffers is the number of provided receive buffers per shard (a
	// power of two); 0 chooses by buffer size (see docs/uring.md).
	RxBuffers int

	note string
}

// Name returns "uring".
func (*Backend) Name() string { return "uring" }

// Notes says how the last Open steers datagrams to shards.
func (b *Backend) Notes() []string {
	if b.note == "" {
		return nil
	}
	return []string{b.note}
}

// Features reports what a shard of this backend got from the kernel.
type Features struct {
	GSO, GRO               bool
	RecvBuffer, SendBuffer int
	SteeredByBPF           bool
	SQPoll                 bool
	RxBuffers, RxBufSize   int    // provided buffers and the size of each
	RingFeatures           uint32 // ring.Feat* bits
	SQEntries, CQEntries   uint32
	// Netpoll: the shard waits in Go's network poller (else in
	// io_uring_enter on a thread of its own).
	Netpoll bool
	// Disabled lists what this shard asked for and the kernel refused,
	// each a typed error (*PollerError, ...), the shard running without it.
	Disabled []error
}

// FeaturesOf reports what the kernel offered a ShardConn of this backend.
func FeaturesOf(c dataplane.ShardConn) (Features, bool) {
	sc, ok := c.(*shardConn)
	if !ok {
		return Features{}, false
	}
	return sc.features, true
}

// Open binds cfg.Shards sockets to cfg.Addr (with SO_REUSEPORT when there
// are several), each with its ring, and with more than one shard attaches
// the steering asked for.
func (b *Backend) Open(cfg dataplane.Config) ([]dataplane.ShardConn, error) {
	cfg = cfg.WithDefaults()
	addr := cfg.Addr
	var shards []*shardConn
	closeAll := func() {
		for _, c := range shards {
			c.Close()
		}
	}
	for i := range cfg.Shards {
		c, err := openShard(cfg, addr, b)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("uring: shard %d: %w", i, err)
		}
		shards = append(shards, c)
		addr = c.local
	}
	b.note = ""
	if cfg.Shards > 1 && b.Steering != portable.SteerHash {
		fds := make([]int, len(shards))
		for i, c := range shards {
			fds[i] = c.fd
		}
		r, err := bpf.SteerGroup(fds)
		if err != nil {
			if b.Steering == portable.SteerBPF {
				closeAll()
				return nil, fmt.Errorf("uring: steering: %w", err)
			}
			b.note = "shards steered by the kernel's 4-tuple hash: " + err.Error()
		} else {
			b.note = "shards steered by connection ID (SK_REUSEPORT program)"
			shards[0].steering = r
			for _, c := range shards {
				c.features.SteeredByBPF = true
			}
		}
	}
	conns := make([]dataplane.ShardConn, len(shards))
	for i, c := range shards {
		conns[i] = c
	}
	return conns, nil
}

func unavailable(feature, reason string) error {
	return &dataplane.UnavailableError{Backend: "uring", Feature: feature, Reason: reason}
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "unknown kernel"
	}
	return "Linux " + unix.ByteSliceToString(u.Release[:])
}

// Probe checks that this kernel lets the process run the backend: io_uring
// not disabled (kernel.io_uring_disabled), the opcodes and features it
// uses, provided-buffer rings and multishot recvmsg. It returns the backend,
// or an *dataplane.UnavailableError naming what is missing.
func Probe(dataplane.Config) (dataplane.Backend, error) {
	sysctl := "absent"
	if b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil {
		sysctl = strings.TrimSpace(string(b))
	}
	if sysctl == "2" {
		return nil, unavailable("io_uring", "kernel.io_uring_disabled = 2: io_uring is disabled for all processes")
	}
	r, err := ring.New(ring.Config{Entries: 8})
	switch {
	case errors.Is(err, unix.ENOSYS):
		return nil, unavailable("io_uring", "io_uring_setup: ENOSYS: "+kernelRelease()+" has no io_uring (CONFIG_IO_URING off, or before 5.1)")
	case errors.Is(err, unix.EPERM):
		return nil, unavailable("io_uring", "io_uring_setup: EPERM (kernel.io_uring_disabled = "+sysctl+", or a seccomp filter): not permitted to this process")
	case err != nil:
		return nil, unavailable("io_uring", err.Error())
	}
	defer r.Close()
	for _, f := range []struct {
		bit  uint32
		name string
	}{{ring.FeatExtArg, "IORING_FEAT_EXT_ARG"}, {ring.FeatNoDrop, "IORING_FEAT_NODROP"}, {ring.FeatFastPoll, "IORING_FEAT_FAST_POLL"}} {
		if r.Features()&f.bit == 0 {
			return nil, unavailable(f.name, kernelRelease()+" does not report it")
		}
	}
	ops, err := r.Probe()
	if err != nil {
		return nil, unavailable("IORING_REGISTER_PROBE", err.Error())
	}
	for _, op := range []struct {
		op   uint8
		name string
	}{{ring.OpRecvmsg, "IORING_OP_RECVMSG"}, {ring.OpSendmsg, "IORING_OP_SENDMSG"}, {ring.OpRead, "IORING_OP_READ"}, {ring.OpAsyncCancel, "IORING_OP_ASYNC_CANCEL"}} {
		if !ops.Supports(op.op) {
			return nil, unavailable(op.name, "not supported by "+kernelRelease())
		}
	}
	br, err := r.RegisterBufRing(8, 0)
	if err != nil {
		return nil, unavailable("IORING_REGISTER_PBUF_RING", err.Error()+" ("+kernelRelease()+"; needs 5.19+)")
	}
	defer br.Close()
	if err := probeMultishot(r, br); err != nil {
		return nil, unavailable("IORING_RECV_MULTISHOT", err.Error()+" ("+kernelRelease()+"; needs 6.0+)")
	}
	return &Backend{}, nil
}
