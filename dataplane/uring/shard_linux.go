package uring

import (
	"errors"
	"fmt"
	"github.com/mxp-dataplane/mxp/dataplane/internal/netpark"
	"io"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/internal/udpsock"
	"github.com/mxp-dataplane/mxp/dataplane/uring/ring"
)

// Fixed-file indexes registered with each ring.
const (
	fileSocket = 0
	fileWake   = 1
)

// User data of the shard's requests: the kind in the top byte; sends carry
// their chunk and message index.
const (
	udRecv   = 1 << 56
	udWake   = 2 << 56
	udSend   = 3 << 56
	udCancel = 4 << 56
	udKind   = 0xff << 56
)

// Ring sizes: a Send is at most one SQE per datagram of a batch; the CQ
// holds every send, receive and wake completion that can be outstanding
// (the kernel keeps any excess in its overflow list anyway).
const (
	sqEntries = 256
	txChunks  = 8
)

// maxRxFailures is how many times in a row the receive may end with an
// error other than ENOBUFS, without a datagram in between, before Recv
// reports it.
const maxRxFailures = 8

// shardConn is one shard's socket and ring. Only the shard's goroutine
// touches it, except Wake and Stats.
type shardConn struct {
	fd, wakeFD int
	local      netip.AddrPort
	v6         bool
	gso, gro   bool
	maxDgram   int
	ring       *ring.Ring
	features   Features
	steering   io.Closer
	stats      dataplane.Counters

	closed      atomic.Bool
	wakers      atomic.Int32 // Wake calls between their check of closed and their write
	wakePending atomic.Bool  // an eventfd write not yet seen by the shard
	wakeBuf     [8]byte
	wakeArmed   bool
	woke        bool // a wake completion was reaped: the next Wait returns (ThreadPerShard)

	// Network-poller mode (the default): the shard is not tied to a thread
	// and parks in Go's network poller on a duplicate of its socket (see
	// netpoll_linux.go).
	park      *netpark.Parker // waiting in Go's network poller; nil: in io_uring_enter
	busyPoll  time.Duration
	txStarved bool // TxBuffers found every chunk in flight: a freed one ends Wait

	rx rxState
	tx txState
}

func (c *shardConn) Stats() dataplane.Stats { return c.stats.Snapshot() }

func (c *shardConn) LocalAddr() netip.AddrPort { return c.local }

func openShard(cfg dataplane.Config, addr netip.AddrPort, b *Backend) (c *shardConn, err error) {
	// A blocking socket and eventfd: io_uring issues every operation
	// without blocking and waits by polling; O_NONBLOCK would make the
	// eventfd read complete at once with EAGAIN instead.
	s, err := udpsock.Open(addr, udpsock.Options{Buffer: cfg.SocketBuffer, DisableGSO: cfg.DisableGSO, DisableGRO: cfg.DisableGRO, Shared: cfg.Shards > 1})
	if err != nil {
		return nil, err
	}
	c = &shardConn{fd: s.FD, wakeFD: -1, local: s.Local, v6: s.V6, gso: s.GSO, gro: s.GRO, maxDgram: cfg.MaxDatagram}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	c.features.GSO, c.features.GRO = c.gso, c.gro
	c.features.RecvBuffer, c.features.SendBuffer = s.RecvBuffer, s.SendBuffer
	nbufs, bufSize := rxGeometry(c.gro, cfg.MaxDatagram, b.RxBuffers)
	cqEntries := uint32(1)
	for cqEntries < uint32(txChunks*cfg.Batch+nbufs+16) {
		cqEntries <<= 1
	}
	c.ring, err = ring.New(ring.Config{Entries: sqEntries, CQEntries: cqEntries, SQPoll: b.SQPoll, Flags: ring.SetupSubmitAll})
	if err != nil {
		return nil, err
	}
	// The shard waits in the network poller unless told to keep a thread
	// (ThreadPerShard, Pin, SQPoll) or the poller refuses the socket; then
	// it waits in io_uring_enter and Wake writes an eventfd the ring reads.
	if !b.ThreadPerShard && !cfg.Pin && !b.SQPoll {
		if perr := c.openPoller(); perr != nil {
			c.features.Disabled = append(c.features.Disabled, perr)
		} else {
			c.busyPoll = cfg.BusyPoll
			c.rx.drain = true
		}
	}
	files := []int32{int32(c.fd)}
	if c.park == nil {
		if c.wakeFD, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
			return nil, os.NewSyscallError("eventfd", err)
		}
		files = append(files, int32(c.wakeFD))
	}
	if err := c.ring.RegisterFiles(files); err != nil {
		return nil, err
	}
	if err := c.rx.init(c.ring, nbufs, bufSize, c.gro); err != nil {
		return nil, err
	}
	c.tx.init(cfg.Batch, cfg.MaxDatagram)
	c.features.SQPoll = c.ring.Flags()&ring.SetupSQPoll != 0
	c.features.Netpoll = c.park != nil
	c.features.RxBuffers, c.features.RxBufSize = nbufs, bufSize
	c.features.RingFeatures = c.ring.Features()
	c.features.SQEntries, c.features.CQEntries = c.ring.SQEntries(), c.ring.CQEntries()
	// Nothing is submitted yet: the first Recv or Wait arms the receive and
	// the wake read from the shard's own thread, whose task owns them (a
	// thread that exits, like testnet's Do threads, cancels its requests).
	return c, nil
}

// reap consumes every ready CQE: receive completions queue their buffers
// for Recv, send completions free their chunk, the wake read is noted. The
// counters are added once for the whole pass.
func (c *shardConn) reap() {
	r := c.ring
	var tx txTally
	for {
		n := r.CQReady()
		if n == 0 {
			if !r.CQOverflowPending() && !r.TaskrunPending() {
				break
			}
			if r.FlushOverflow() != nil {
				break
			}
			if n = r.CQReady(); n == 0 {
				break
			}
		}
		for i := range n {
			cqe := r.PeekCQE(i)
			switch cqe.UserData & udKind {
			case udRecv:
				c.rx.complete(cqe)
			case udSend:
				c.tx.complete(cqe, &tx, &c.gso)
			case udWake:
				c.wakeArmed = false
				c.wakePending.Store(false)
				// A Wake between the eventfd's read and this saw a write
				// pending and skipped its own: the next Wait returns.
				c.woke = true
			}
		}
		r.CQAdvance(n)
	}
	tx.add(&c.stats)
}

// arm prepares the requests that must be in flight: the multishot receive
// (when the ring has buffers for it) and the wake read. It returns the
// fatal error that ended the receive, if any.
func (c *shardConn) arm() error {
	r := &c.rx
	if !r.armed && r.provided > 0 && r.slab != nil && !(r.drain && r.ready()) {
		if r.failures > maxRxFailures {
			return fmt.Errorf("uring: the multishot receive ended %d times in a row without a datagram: %w", r.failures, unix.Errno(r.lastErr))
		}
		sqe := c.getSQE()
		if sqe == nil {
			return nil
		}
		ring.PrepRecvmsgMultishot(sqe, fileSocket, true, &r.msg, bufGroup, udRecv)
		if r.drain {
			sqe.OpFlags = unix.MSG_DONTWAIT
		}
		r.armed = true
		r.arms++
	}
	if !c.wakeArmed && c.park == nil {
		sqe := c.getSQE()
		if sqe == nil {
			return nil
		}
		ring.PrepRead(sqe, fileWake, true, c.wakeBuf[:], 0, udWake)
		c.wakeArmed = true
	}
	return nil
}

// getSQE returns a free SQE, submitting what is queued to make room.
func (c *shardConn) getSQE() *ring.SQE {
	if sqe := c.ring.GetSQE(); sqe != nil {
		return sqe
	}
	c.submit()
	return c.ring.GetSQE()
}

// submit hands queued SQEs to the kernel. EBUSY and EAGAIN (the kernel is
// short of room for completions) leave them queued for the next enter.
func (c *shardConn) submit() error {
	if c.ring.SQPending() == 0 {
		return nil
	}
	_, err := c.ring.Submit()
	switch err {
	case nil, unix.EBUSY, unix.EAGAIN, unix.EINTR:
		return nil
	}
	return os.NewSyscallError("io_uring_enter", err)
}

// Wait blocks until a datagram may be ready, Wake is called, or the
// deadline passes: in the network poller (the default), or in
// io_uring_enter on the shard's thread (ThreadPerShard).
func (c *shardConn) Wait(deadline, now time.Time) error {
	c.reap()
	if c.rx.ready() {
		return nil
	}
	if c.woke {
		c.woke = false
		return nil
	}
	if c.park != nil {
		return c.waitNetpoll(deadline, now) // drains the socket itself when it must
	}
	if err := c.arm(); err != nil {
		return err
	}
	timeout := time.Duration(-1)
	if !deadline.IsZero() {
		if timeout = time.Until(deadline); timeout <= 0 {
			return c.submit()
		}
	}
	c.stats.Wakeups.Add(1)
	if err := c.ring.WaitCQEs(1, timeout); err != nil && err != unix.EBUSY && err != unix.EAGAIN {
		return os.NewSyscallError("io_uring_enter", err)
	}
	return nil
}

// Wake makes the shard's Wait return: a write to the eventfd that the ring
// has a read posted on. Writes are skipped while one is pending.
func (c *shardConn) Wake() {
	if c.park != nil {
		c.wakeNetpoll()
		return
	}
	if c.closed.Load() || c.wakePending.Swap(true) {
		return
	}
	c.wakers.Add(1)
	if !c.closed.Load() {
		one := [8]byte{1}
		unix.Write(c.wakeFD, one[:])
	}
	c.wakers.Add(-1)
}

// Close cancels the ring's requests and waits for them to end (so the kernel
// writes no more into the receive buffers), then releases the ring, the
// buffers and the descriptors.
func (c *shardConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	for c.wakers.Load() != 0 {
		runtime.Gosched()
	}
	var errs []error
	drained := true
	if c.ring != nil {
		if drained = c.drain(); !drained {
			errs = append(errs, errors.New("uring: requests still in flight 2s after cancel; receive buffers left mapped"))
		}
	}
	errs = append(errs, c.rx.close(drained))
	if c.park != nil {
		errs = append(errs, c.park.File().Close())
	}
	if c.ring != nil {
		errs = append(errs, c.ring.Close())
	}
	if c.steering != nil {
		errs = append(errs, c.steering.Close())
	}
	if c.fd >= 0 {
		errs = append(errs, unix.Close(c.fd))
	}
	if c.wakeFD >= 0 {
		errs = append(errs, unix.Close(c.wakeFD))
	}
	return errors.Join(errs...)
}

// drain cancels every request in flight (the receive, the wake read, sends
// waiting for room in the socket buffer) and waits, a bounded time, until
// each has completed.
func (c *shardConn) drain() bool {
	c.reap()
	if c.rx.armed || c.wakeArmed || !c.tx.idle() {
		if sqe := c.getSQE(); sqe != nil {
			ring.PrepCancelAll(sqe, udCancel)
		}
		c.submit()
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		c.reap()
		if !c.rx.armed && !c.wakeArmed && c.tx.idle() {
			return true
		}
		c.ring.WaitCQEs(1, 20*time.Millisecond)
	}
	return false
}
