// Package ring is a small io_uring driver on golang.org/x/sys/unix: setup
// with feature probing, the SQ/CQ rings and SQE array mapped into the
// process, batched submission and completion, registered files,
// provided-buffer rings, and teardown that leaves no descriptor or mapping
// behind. It never logs.
//
// A Ring is not safe for concurrent use: one goroutine (a dataplane shard)
// owns it. Memory ordering with the kernel follows the io_uring rules: the
// application writes SQEs and then stores the SQ tail with release
// semantics, loads the CQ tail with acquire semantics before reading CQEs,
// and stores the CQ head with release semantics after it has read them. Go's
// sync/atomic loads and stores are sequentially consistent, which is at least
// that strong, and the compiler never moves ordinary memory accesses across
// them.
//
// This file and bufring_linux.go are the package's uses of unsafe: views of
// the kernel's mappings, and pointers passed to the system calls.
package ring

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Config says how to set a ring up.
type Config struct {
	// Entries is the SQ size (rounded up to a power of two by the kernel).
	Entries uint32
	// CQEntries is the CQ size; 0 leaves the kernel's default (2×Entries).
	CQEntries uint32
	// SQPoll starts a kernel thread that polls the SQ, so submitting needs
	// no system call while it is awake. SQThreadIdle is how long it spins
	// before sleeping (0: the kernel's default, 1 s).
	SQPoll       bool
	SQThreadIdle time.Duration
	// Flags are more setup flags (Setup*) to ask for. Those the kernel
	// refuses with EINVAL are dropped, in the order SubmitAll, CoopTaskrun,
	// TaskrunFlag; Ring.Flags says what was accepted.
	Flags uint32
}

// Ring is one io_uring instance.
type Ring struct {
	fd         int
	flags      uint32
	features   uint32
	singleMmap bool

	sqMem, cqMem, sqeMem []byte // cqMem aliases sqMem with FeatSingleMmap

	sqHead, sqTail, sqFlags, sqDropped *uint32
	sqMask, sqEntries                  uint32
	sqes                               []SQE
	sqeTail                            uint32 // next SQE handed out by GetSQE
	sqeHead                            uint32 // first SQE not yet published in the SQ tail

	cqHead, cqTail, cqOverflow *uint32
	cqMask, cqEntries          uint32
	cqes                       []CQE
	cqLocal                    uint32 // our head: CQEs before it are consumed

	// The timeout of WaitCQEs lives here, not on a stack, so the kernel's
	// view of it (a pointer inside waitArg) stays valid and nothing is
	// allocated per call.
	waitTS  unix.Timespec
	waitArg getEventsArg
}

// ErrClosed is returned by a closed Ring.
var ErrClosed = errors.New("io_uring: ring closed")

// New sets a ring up and maps its queues.
func New(cfg Config) (*Ring, error) {
	if cfg.Entries == 0 {
		cfg.Entries = 64
	}
	var p params
	p.Flags = cfg.Flags
	if cfg.CQEntries != 0 {
		p.Flags |= SetupCQSize
		p.CQEntries = cfg.CQEntries
	}
	if cfg.SQPoll {
		p.Flags |= SetupSQPoll
		p.SQThreadIdle = uint32(cfg.SQThreadIdle.Milliseconds())
	}
	fd, err := setup(cfg.Entries, &p)
	for _, optional := range []uint32{SetupSubmitAll, SetupCoopTaskrun | SetupTaskrunFlag, SetupTaskrunFlag} {
		if err != unix.EINVAL || p.Flags&optional == 0 {
			continue
		}
		flags, cq, idle := p.Flags&^optional, p.CQEntries, p.SQThreadIdle
		p = params{Flags: flags, CQEntries: cq, SQThreadIdle: idle}
		fd, err = setup(cfg.Entries, &p)
	}
	if err != nil {
		return nil, os.NewSyscallError("io_uring_setup", err)
	}
	r := &Ring{fd: fd, flags: p.Flags, features: p.Features}
	if err := r.mapRings(&p); err != nil {
		r.Close()
		return nil, err
	}
	r.waitArg.TS = uint64(uintptr(unsafe.Pointer(&r.waitTS)))
	return r, nil
}

func setup(entries uint32, p *params) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return -1, errno
	}
	unix.CloseOnExec(int(fd))
	return int(fd), nil
}

func (r *Ring) mapRings(p *params) error {
	sqSize := int(p.SQOff.Array) + int(p.SQEntries)*4
	cqSize := int(p.CQOff.CQEs) + int(p.CQEntries)*int(unsafe.Sizeof(CQE{}))
	single := p.Features&FeatSingleMmap != 0
	r.singleMmap = single
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	if r.sqMem, err = mmap(r.fd, offSQRing, sqSize); err != nil {
		return err
	}
	if single {
		r.cqMem = r.sqMem
	} else if r.cqMem, err = mmap(r.fd, offCQRing, cqSize); err != nil {
		return err
	}
	if r.sqeMem, err = mmap(r.fd, offSQEs, int(p.SQEntries)*int(unsafe.Sizeof(SQE{}))); err != nil {
		return err
	}
	u32 := func(mem []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&mem[off])) }
	r.sqHead, r.sqTail = u32(r.sqMem, p.SQOff.Head), u32(r.sqMem, p.SQOff.Tail)
	r.sqFlags, r.sqDropped = u32(r.sqMem, p.SQOff.Flags), u32(r.sqMem, p.SQOff.Dropped)
	r.sqMask, r.sqEntries = *u32(r.sqMem, p.SQOff.RingMask), *u32(r.sqMem, p.SQOff.RingEntries)
	r.cqHead, r.cqTail = u32(r.cqMem, p.CQOff.Head), u32(r.cqMem, p.CQOff.Tail)
	r.cqOverflow = u32(r.cqMem, p.CQOff.Overflow)
	r.cqMask, r.cqEntries = *u32(r.cqMem, p.CQOff.RingMask), *u32(r.cqMem, p.CQOff.RingEntries)
	r.sqes = unsafe.Slice((*SQE)(unsafe.Pointer(&r.sqeMem[0])), r.sqEntries)
	r.cqes = unsafe.Slice((*CQE)(unsafe.Pointer(&r.cqMem[p.CQOff.CQEs])), r.cqEntries)
	// SQ slot i always holds SQE i: the indirection array is the identity,
	// written once before the kernel can read it.
	array := unsafe.Slice(u32(r.sqMem, p.SQOff.Array), r.sqEntries)
	for i := range array {
		array[i] = uint32(i)
	}
	r.cqLocal = atomic.LoadUint32(r.cqHead)
	r.sqeHead = atomic.LoadUint32(r.sqTail)
	r.sqeTail = r.sqeHead
	return nil
}

func mmap(fd int, off int64, size int) ([]byte, error) {
	b, err := unix.Mmap(fd, off, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("io_uring: mmap at %#x: %w", off, err)
	}
	return b, nil
}

// Close unmaps the rings and closes the ring's descriptor; the kernel
// cancels every request still in flight. Closing twice is harmless.
func (r *Ring) Close() error {
	if r.fd < 0 {
		return nil
	}
	var errs []error
	maps := [][]byte{r.sqeMem, r.sqMem}
	if !r.singleMmap {
		maps = append(maps, r.cqMem)
	}
	for _, m := range maps {
		if m == nil {
			continue
		}
		if err := unix.Munmap(m); err != nil {
			errs = append(errs, err)
		}
	}
	r.sqMem, r.cqMem, r.sqeMem, r.sqes, r.cqes = nil, nil, nil, nil, nil
	errs = append(errs, unix.Close(r.fd))
	r.fd = -1
	return errors.Join(errs...)
}

// FD is the ring's file descriptor.
func (r *Ring) FD() int { return r.fd }

// Features are the FeatSet bits the kernel reported.
func (r *Ring) Features() uint32 { return r.features }

// Flags are the setup flags in force.
func (r *Ring) Flags() uint32 { return r.flags }

// SQEntries and CQEntries are the queue sizes the kernel chose.
func (r *Ring) SQEntries() uint32 { return r.sqEntries }

// CQEntries is the CQ size.
func (r *Ring) CQEntries() uint32 { return r.cqEntries }

// GetSQE returns the next free SQE, zeroed, or nil when the SQ is full
// (Submit, then try again). It is published to the kernel by the next
// Submit or WaitCQEs.
func (r *Ring) GetSQE() *SQE {
	head := atomic.LoadUint32(r.sqHead)
	if r.sqeTail-head >= r.sqEntries {
		return nil
	}
	sqe := &r.sqes[r.sqeTail&r.sqMask]
	r.sqeTail++
	*sqe = SQE{}
	return sqe
}

// SQPending is the number of SQEs prepared but not yet submitted.
func (r *Ring) SQPending() uint32 { return r.sqeTail - r.sqeHead }

// flush publishes the prepared SQEs in the SQ tail and returns how many the
// kernel has not consumed yet.
func (r *Ring) flush() uint32 {
	if r.sqeTail != r.sqeHead {
		r.sqeHead = r.sqeTail
		atomic.StoreUint32(r.sqTail, r.sqeTail) // release: the SQEs before the tail
	}
	return r.sqeTail - atomic.LoadUint32(r.sqHead)
}

// Submit hands the prepared SQEs to the kernel and returns how many it took.
// With SQPoll no system call is made unless the polling thread sleeps.
func (r *Ring) Submit() (int, error) {
	if r.fd < 0 {
		return 0, ErrClosed
	}
	n := r.flush()
	if r.flags&SetupSQPoll != 0 {
		// The tail store above is a full barrier, so this load sees the
		// thread's NEED_WAKEUP if it went to sleep before seeing our tail.
		if atomic.LoadUint32(r.sqFlags)&SQNeedWakeup != 0 {
			if _, err := r.enter(0, 0, EnterSQWakeup, nil, 0); err != nil {
				return 0, err
			}
		}
		return int(n), nil
	}
	if n == 0 {
		return 0, nil
	}
	got, err := r.enter(n, 0, 0, nil, 0)
	return got, err
}

// WaitCQEs submits what is prepared and waits until at least min CQEs are
// ready or timeout passes (timeout < 0: no timeout; the ring must have
// FeatExtArg for a timeout). Running out of time, or a signal, is not an
// error: the caller looks at the CQ. It also flushes overflowed CQEs into
// the CQ.
func (r *Ring) WaitCQEs(min uint32, timeout time.Duration) error {
	if r.fd < 0 {
		return ErrClosed
	}
	n := r.flush()
	if r.flags&SetupSQPoll != 0 {
		n = 0 // the thread takes them; wake it if it sleeps
	}
	flags := uint32(EnterGetEvents)
	if r.flags&SetupSQPoll != 0 && atomic.LoadUint32(r.sqFlags)&SQNeedWakeup != 0 {
		flags |= EnterSQWakeup
	}
	var arg unsafe.Pointer
	var argSize uintptr
	if timeout >= 0 {
		if r.features&FeatExtArg == 0 {
			return errors.New("io_uring: wait with a timeout needs IORING_FEAT_EXT_ARG (Linux 5.11)")
		}
		r.waitTS = unix.NsecToTimespec(timeout.Nanoseconds())
		flags |= EnterExtArg
		arg, argSize = unsafe.Pointer(&r.waitArg), unsafe.Sizeof(r.waitArg)
	}
	_, err := r.enter(n, min, flags, arg, argSize)
	switch err {
	case nil, unix.ETIME, unix.EINTR:
		return nil
	}
	return err
}

// FlushOverflow asks the kernel to move CQEs from its overflow list into
// the CQ (call when CQOverflowPending and the CQ has room).
func (r *Ring) FlushOverflow() error {
	_, err := r.enter(0, 0, EnterGetEvents, nil, 0)
	if err == unix.EINTR {
		return nil
	}
	return err
}

// enter calls io_uring_enter, retrying on EINTR while SQEs are pending.
func (r *Ring) enter(toSubmit, minComplete, flags uint32, arg unsafe.Pointer, argSize uintptr) (int, error) {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), uintptr(arg), argSize)
		if errno == 0 {
			return int(n), nil
		}
		if errno == unix.EINTR && toSubmit > 0 {
			continue
		}
		return 0, errno
	}
}

// CQReady is the number of CQEs ready to be read.
func (r *Ring) CQReady() uint32 {
	return atomic.LoadUint32(r.cqTail) - r.cqLocal // acquire: the CQEs before the tail
}

// PeekCQE returns the i-th ready CQE (i < CQReady()), valid until CQAdvance
// passes it.
func (r *Ring) PeekCQE(i uint32) *CQE { return &r.cqes[(r.cqLocal+i)&r.cqMask] }

// CQAdvance marks n CQEs consumed, giving their slots back to the kernel.
func (r *Ring) CQAdvance(n uint32) {
	r.cqLocal += n
	atomic.StoreUint32(r.cqHead, r.cqLocal) // release: we are done reading them
}

// CQOverflowPending reports that the kernel holds CQEs the CQ had no room
// for (FeatNoDrop kernels); FlushOverflow or WaitCQEs moves them in.
func (r *Ring) CQOverflowPending() bool {
	return atomic.LoadUint32(r.sqFlags)&SQCQOverflow != 0
}

// TaskrunPending reports that completions wait as task work
// (SetupTaskrunFlag): enter the kernel (WaitCQEs with timeout 0) to post them.
func (r *Ring) TaskrunPending() bool {
	return atomic.LoadUint32(r.sqFlags)&SQTaskrun != 0
}

// CQOverflowDropped is the number of CQEs the kernel dropped for want of
// room (only kernels without FeatNoDrop drop them).
func (r *Ring) CQOverflowDropped() uint32 { return atomic.LoadUint32(r.cqOverflow) }

// SQDropped is the number of invalid SQEs the kernel skipped.
func (r *Ring) SQDropped() uint32 { return atomic.LoadUint32(r.sqDropped) }

func (r *Ring) register(op uint32, arg unsafe.Pointer, n uint32) error {
	if r.fd < 0 {
		return ErrClosed
	}
	for {
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), uintptr(op), uintptr(arg), uintptr(n), 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
}

// RegisterFiles registers fds as the ring's fixed files: SQEFixedFile
// requests then name them by index in fds.
func (r *Ring) RegisterFiles(fds []int32) error {
	if len(fds) == 0 {
		return errors.New("io_uring: no files to register")
	}
	if err := r.register(registerFiles, unsafe.Pointer(&fds[0]), uint32(len(fds))); err != nil {
		return os.NewSyscallError("io_uring_register(FILES)", err)
	}
	return nil
}

// UnregisterFiles drops the fixed files.
func (r *Ring) UnregisterFiles() error {
	if err := r.register(unregisterFiles, nil, 0); err != nil {
		return os.NewSyscallError("io_uring_register(UNREGISTER_FILES)", err)
	}
	return nil
}

// Opcodes says which opcodes the kernel supports (IORING_REGISTER_PROBE,
// Linux 5.6).
type Opcodes struct {
	Last      uint8
	supported [probeOpsCapacity]bool
}

// Supports reports whether the kernel supports op.
func (o *Opcodes) Supports(op uint8) bool { return o.supported[op] }

// Probe asks the kernel which opcodes it supports.
func (r *Ring) Probe() (*Opcodes, error) {
	buf := make([]byte, sizeofProbeHeader+probeOpsCapacity*sizeofProbeOp)
	if err := r.register(registerProbe, unsafe.Pointer(&buf[0]), probeOpsCapacity); err != nil {
		return nil, os.NewSyscallError("io_uring_register(PROBE)", err)
	}
	o := &Opcodes{Last: buf[0]}
	n := int(buf[1]) // ops_len
	for i := range min(n, probeOpsCapacity) {
		op := buf[sizeofProbeHeader+i*sizeofProbeOp:]
		flags := uint16(op[2]) | uint16(op[3])<<8
		if flags&opSupported != 0 {
			o.supported[op[0]] = true
		}
	}
	return o, nil
}

// IsUnsupported reports whether err means the kernel has no io_uring at all
// (ENOSYS) or refuses it to this process (EPERM: kernel.io_uring_disabled,
// or a seccomp filter).
func IsUnsupported(err error) bool {
	return errors.Is(err, syscall.ENOSYS) || errors.Is(err, syscall.EPERM)
}
