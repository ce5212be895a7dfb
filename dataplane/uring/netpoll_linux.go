package uring

import (
	"errors"
	"os"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/dataplane/uring/ring"
)

// Waiting in Go's network poller.
//
// A shard locked to its thread and blocked in io_uring_enter holds that
// thread, and every goroutine it hands work to (a handler, a caller waiting
// for its reply) is run by another thread: each hand-off is an OS thread
// switch, and goroutines readied by a shard that then blocks can sit on its
// P until the runtime takes it back. Instead the shard parks in the poller
// like any goroutine blocked on a socket: the ring's descriptor polls
// readable when a CQE is posted, so a duplicate of it (its own descriptor,
// closed by the os.File) is registered with the poller.
//
// Requests keep working when the shard's goroutine moves between threads: a
// request belongs to the thread that submitted it, whose task runs the
// request's task work (a multishot receive's recvmsg, for one). The ring is
// set up without IORING_SETUP_COOP_TASKRUN, so the kernel interrupts or
// wakes that thread to run it wherever it is, and no flag ties the ring to
// one submitter (SINGLE_ISSUER, DEFER_TASKRUN). Go never ends the threads
// of unlocked goroutines, which would cancel their requests.

// PollerError says why a shard could not wait in the network poller, which
// it then does in io_uring_enter on a thread of its own.
type PollerError struct {
	Op  string // "dup", "O_NONBLOCK", "register with the poller"
	Err error
}

func (e *PollerError) Error() string {
	return "uring: the ring's descriptor cannot wait in the network poller (" + e.Op + "): " + e.Err.Error()
}

func (e *PollerError) Unwrap() error { return e.Err }

// openPoller registers a duplicate of the ring's descriptor with the
// network poller, and gives sends a ring of their own (see sendRing).
func (c *shardConn) openPoller(batch int, sqpoll bool) error {
	fd, err := unix.FcntlInt(uintptr(c.ring.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return &PollerError{Op: "dup", Err: err}
	}
	// O_NONBLOCK is a flag of the open file, shared with the ring's own
	// descriptor; io_uring_enter ignores it. os.NewFile registers only
	// non-blocking descriptors with the poller.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return &PollerError{Op: "O_NONBLOCK", Err: err}
	}
	f := os.NewFile(uintptr(fd), "io_uring")
	raw, err := f.SyscallConn()
	if err == nil {
		err = f.SetReadDeadline(time.Time{}) // fails unless the poller took it
	}
	if err != nil {
		f.Close()
		return &PollerError{Op: "register with the poller", Err: err}
	}
	txr, err := c.sendRing(batch, sqpoll)
	if err != nil {
		f.Close()
		return &PollerError{Op: "send ring", Err: err}
	}
	c.txr = txr
	c.pollFile, c.pollRaw = f, raw
	c.pollFn = c.pollReady
	return nil
}

// sendRing sets up the ring the shard's sends go through when it waits in
// the poller. Every CQE posted to a polled ring wakes the thread blocked in
// the poller's epoll_wait, if one is, so with sends on the polled ring an
// unpaced sender woke a thread per send (~40k voluntary context switches a
// second, 60-70 % more CPU per datagram). The send ring is not polled: its
// completions are reaped as the shard goes, and it signals the shard's
// eventfd (IORING_REGISTER_EVENTFD), which the polled ring reads only when
// the shard parks with sends in flight (waiting for room in the socket
// buffer, or taken by the SQPOLL thread), so that they end the wait.
func (c *shardConn) sendRing(batch int, sqpoll bool) (*ring.Ring, error) {
	cq := uint32(1)
	for cq < uint32(txChunks*batch+16) {
		cq <<= 1
	}
	r, err := ring.New(ring.Config{Entries: sqEntries, CQEntries: cq, SQPoll: sqpoll, Flags: ring.SetupSubmitAll})
	if err != nil {
		return nil, err
	}
	if err := r.RegisterFiles([]int32{int32(c.fd)}); err != nil {
		r.Close()
		return nil, err
	}
	if err := r.RegisterEventfd(c.wakeFD); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// ThreadAffine reports whether the shard must stay on one OS thread: only
// when it waits in io_uring_enter (ThreadPerShard, Pin, or no poller).
func (c *shardConn) ThreadAffine() bool { return c.pollFile == nil }

// waitNetpoll parks in the network poller until a completion is posted
// that the engine must see, Wake is called, or the deadline passes. The
// caller reaped and armed.
func (c *shardConn) waitNetpoll(deadline time.Time) error {
	if err := c.submit(); err != nil {
		return err
	}
	if c.woken.Swap(false) || c.hasWork() {
		return nil
	}
	if !deadline.IsZero() && !time.Now().Before(deadline) {
		return nil
	}
	if c.busyPoll > 0 && c.spin(deadline) {
		return nil
	}
	c.pollFile.SetReadDeadline(deadline)
	c.parked.Store(true) // before looking at woken: a Wake after this interrupts the Read
	if c.woken.Swap(false) {
		c.parked.Store(false)
		return nil
	}
	c.stats.Wakeups.Add(1)
	err := c.pollRaw.Read(c.pollFn)
	c.parked.Store(false)
	c.woken.Store(false)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return err
	}
	return nil
}

// hasWork reports what ends a Wait besides Wake: datagrams to hand out, a
// receive to re-arm, a send chunk freed after TxBuffers ran out, or the
// wake read done while sends are in flight (it is posted then, so that
// their completions, on the unpolled send ring, end the wait).
func (c *shardConn) hasWork() bool {
	r := &c.rx
	return r.ready() || !r.armed && r.provided > 0 || c.txStarved && len(c.tx.free) > 0 || !c.wakeArmed && !c.tx.idle()
}

// pollReady is the poller's readiness check: reap what was posted.
func (c *shardConn) pollReady(uintptr) bool {
	c.reap()
	return c.hasWork() || c.woken.Load()
}

// spin reaps for up to busyPoll, yielding to other goroutines in between;
// it reports whether something came (work, a Wake, the deadline).
func (c *shardConn) spin(deadline time.Time) bool {
	start := time.Now()
	for now := start; now.Sub(start) < c.busyPoll; now = time.Now() {
		if c.woken.Swap(false) || !deadline.IsZero() && !now.Before(deadline) {
			return true
		}
		if c.pollReady(0) {
			return true
		}
		runtime.Gosched()
	}
	return false
}

// wakeNetpoll makes a parked Wait return, or the next one.
func (c *shardConn) wakeNetpoll() {
	if c.closed.Load() {
		return
	}
	c.woken.Store(true)
	if c.parked.Load() { // else the shard sees woken before it parks
		c.pollFile.SetReadDeadline(time.Now())
	}
}
