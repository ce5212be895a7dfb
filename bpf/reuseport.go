//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"github.com/mxp-dataplane/mxp/internal/caps"
	"os"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// MaxShards is the largest shard count the reuseport program steers to: the
// shard is one byte of the connection ID.
const MaxShards = 256

// Counter indexes of the program's per-CPU counters map (enum counter in
// reuseport.c).
const (
	counterSteered = iota
	counterFallbackShort
	counterSelectFailed
	numCounters
)

// ReuseportCounters are the program's counters, summed over all CPUs, since
// it was loaded.
type ReuseportCounters struct {
	// Steered datagrams went to the socket of the shard their connection
	// ID names.
	Steered uint64
	// FallbackShort datagrams were too short to carry a connection ID
	// (payload under 8 bytes) and went to the kernel's default choice (a
	// hash of the 4-tuple).
	FallbackShort uint64
	// SelectFailed datagrams named a shard whose slot had no usable socket
	// and went to the kernel's default choice.
	SelectFailed uint64
}

// Sentinel errors, matched with errors.Is on the errors this package returns.
var (
	// ErrPermission: the process may not load BPF programs or create the
	// maps (needs root, or CAP_BPF and CAP_NET_ADMIN; CAP_SYS_ADMIN before
	// Linux 5.8).
	ErrPermission = errors.New("bpf: not permitted (needs root, or CAP_BPF + CAP_NET_ADMIN; CAP_SYS_ADMIN before Linux 5.8)")
	// ErrMemlock: the kernel charges BPF memory to RLIMIT_MEMLOCK (before
	// Linux 5.11) and the limit is too low; raise it (ulimit -l, or
	// github.com/cilium/ebpf/rlimit.RemoveMemlock in the program's main).
	ErrMemlock = errors.New("bpf: RLIMIT_MEMLOCK too low for BPF maps (kernel before 5.11 charges BPF memory to it)")
	// ErrNotSupported: the kernel lacks BPF_PROG_TYPE_SK_REUSEPORT or
	// BPF_MAP_TYPE_REUSEPORT_SOCKARRAY (Linux 4.19+ with CONFIG_BPF_SYSCALL
	// and CONFIG_INET).
	ErrNotSupported = errors.New("bpf: kernel lacks SK_REUSEPORT programs or REUSEPORT_SOCKARRAY maps (needs Linux 4.19+)")
	// ErrClosed: the Reuseport has been closed.
	ErrClosed = errors.New("bpf: reuseport program closed")
)

// Error is a failure of one operation of this package.
type Error struct {
	Op  string // e.g. "load reuseport program", "attach", "set shard 3"
	Err error  // wraps one of the Err* sentinels where one applies
}

func (e *Error) Error() string { return "bpf: " + e.Op + ": " + e.Err.Error() }

func (e *Error) Unwrap() error { return e.Err }

// Reuseport is the loaded SK_REUSEPORT shard-steering program with its maps.
type Reuseport struct {
	objs    reuseportObjects
	nShards int
	closed  bool
}

// LoadReuseport loads the steering program for nShards shards (1 to
// MaxShards) into the kernel. Nothing is attached until AttachTo.
func LoadReuseport(nShards int) (*Reuseport, error) {
	const op = "load reuseport program"
	if nShards < 1 || nShards > MaxShards {
		return nil, &Error{Op: op, Err: fmt.Errorf("shard count %d out of range 1..%d", nShards, MaxShards)}
	}
	spec, err := loadReuseport()
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	if err := spec.Variables[reuseportVarNshards].Set(uint32(nShards)); err != nil {
		return nil, &Error{Op: op, Err: fmt.Errorf("set nshards: %w", err)}
	}
	spec.Maps[reuseportMapShardSocks].MaxEntries = uint32(nShards)
	r := &Reuseport{nShards: nShards}
	if err := spec.LoadAndAssign(&r.objs, nil); err != nil {
		return nil, &Error{Op: op, Err: classifyLoadError(err)}
	}
	return r, nil
}

// classifyLoadError wraps err with the sentinel that says what is missing.
func classifyLoadError(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		if !hasBPFCaps() {
			return fmt.Errorf("%w: %w", ErrPermission, err)
		}
		// With the capabilities, EPERM from map creation is the memlock
		// limit on kernels that still charge BPF memory to it.
		var lim unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil && lim.Cur != unix.RLIM_INFINITY {
			return fmt.Errorf("%w (limit %d bytes): %w", ErrMemlock, lim.Cur, err)
		}
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	if errors.Is(err, ebpf.ErrNotSupported) ||
		features.HaveProgramType(ebpf.SkReuseport) != nil ||
		features.HaveMapType(ebpf.ReusePortSockArray) != nil {
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	return err
}

// hasBPFCaps tells whether the effective capabilities suffice to load the
// program and create its maps.
func hasBPFCaps() bool {
	if _, err := caps.Effective(); err != nil {
		return os.Geteuid() == 0
	}
	return caps.Has(caps.SysAdmin) || caps.Has(caps.BPF, caps.NetAdmin)
}

// NumShards returns the shard count the program was loaded for.
func (r *Reuseport) NumShards() int { return r.nShards }

// ProgramFD returns the program's file descriptor (owned by r).
func (r *Reuseport) ProgramFD() int { return r.objs.SelectShard.FD() }

// AttachTo attaches the program to the SO_REUSEPORT group of the UDP socket
// fd (setsockopt SO_ATTACH_REUSEPORT_EBPF): it then chooses the socket for
// every datagram that reaches the group. fd must have SO_REUSEPORT set; it
// may be bound already or not yet. Attaching to one socket of a group
// attaches to the whole group.
func (r *Reuseport) AttachTo(fd int) error {
	if r.closed {
		return &Error{Op: "attach", Err: ErrClosed}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, r.ProgramFD()); err != nil {
		return &Error{Op: "attach (SO_ATTACH_REUSEPORT_EBPF)", Err: err}
	}
	return nil
}

// SetShard makes the bound SO_REUSEPORT UDP socket fd the one that receives
// shard's datagrams (0 ≤ shard < NumShards). The map holds a reference to
// the socket, not to fd: closing fd removes the socket from the map.
func (r *Reuseport) SetShard(shard int, fd int) error {
	op := fmt.Sprintf("set shard %d", shard)
	if r.closed {
		return &Error{Op: op, Err: ErrClosed}
	}
	if shard < 0 || shard >= r.nShards {
		return &Error{Op: op, Err: fmt.Errorf("shard out of range 0..%d", r.nShards-1)}
	}
	if fd < 0 {
		return &Error{Op: op, Err: fmt.Errorf("bad fd %d", fd)}
	}
	if err := r.objs.ShardSocks.Update(uint32(shard), uint64(fd), ebpf.UpdateAny); err != nil {
		return &Error{Op: op, Err: err}
	}
	return nil
}

// ClearShard empties shard's slot: its datagrams then go to the kernel's
// default choice (counted as SelectFailed).
func (r *Reuseport) ClearShard(shard int) error {
	op := fmt.Sprintf("clear shard %d", shard)
	if r.closed {
		return &Error{Op: op, Err: ErrClosed}
	}
	if shard < 0 || shard >= r.nShards {
		return &Error{Op: op, Err: fmt.Errorf("shard out of range 0..%d", r.nShards-1)}
	}
	if err := r.objs.ShardSocks.Delete(uint32(shard)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return &Error{Op: op, Err: err}
	}
	return nil
}

// Counters returns the program's counters summed over all CPUs.
func (r *Reuseport) Counters() (ReuseportCounters, error) {
	if r.closed {
		return ReuseportCounters{}, &Error{Op: "read counters", Err: ErrClosed}
	}
	var sums [numCounters]uint64
	for i := range sums {
		var perCPU []uint64
		if err := r.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return ReuseportCounters{}, &Error{Op: "read counters", Err: err}
		}
		for _, v := range perCPU {
			sums[i] += v
		}
	}
	return ReuseportCounters{
		Steered:       sums[counterSteered],
		FallbackShort: sums[counterFallbackShort],
		SelectFailed:  sums[counterSelectFailed],
	}, nil
}

// Close releases the program and its maps. A group the program is attached
// to keeps using it until the group's sockets are closed or another
// program is attached (the kernel holds its own reference).
func (r *Reuseport) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if err := r.objs.Close(); err != nil {
		return &Error{Op: "close", Err: err}
	}
	return nil
}

// AttachToConn is AttachTo for a socket held by a Go value such as
// *net.UDPConn.
func (r *Reuseport) AttachToConn(c syscall.Conn) error {
	return withFD(c, "attach", r.AttachTo)
}

// SetShardConn is SetShard for a socket held by a Go value such as
// *net.UDPConn.
func (r *Reuseport) SetShardConn(shard int, c syscall.Conn) error {
	return withFD(c, fmt.Sprintf("set shard %d", shard), func(fd int) error { return r.SetShard(shard, fd) })
}

func withFD(c syscall.Conn, op string, fn func(fd int) error) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return &Error{Op: op, Err: err}
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return &Error{Op: op, Err: err}
	}
	return ferr
}
