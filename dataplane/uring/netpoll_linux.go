package uring

import (
	"github.com/mxp-dataplane/mxp/dataplane/internal/netpark"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Waiting in Go's network poller.
//
// A shard locked to its thread and blocked in io_uring_enter holds that
// thread, and every goroutine it hands work to (a handler, a caller waiting
// for its reply) runs on another: each hand-off is an OS thread switch, and
// goroutines readied by a shard that then blocks can sit on its P until the
// runtime takes it back. So by default the shard is not tied to a thread
// and parks in the poller on its socket, like a goroutine blocked on a
// net.UDPConn: Wake sets a read deadline in the past when it is parked.
//
// Nothing poll-driven is left in the ring while the shard is parked. A
// request that waits for its socket (a multishot receive armed for good)
// belongs to the thread that submitted it, and its task work (the recvmsg
// into a provided buffer) runs on that thread: with a goroutine that moves
// between threads, a datagram woke that thread to run it, and then the
// thread in the poller for the completion (several context switches per
// call through a node, where the poller on the socket has under one;
// docs/uring.md). Instead
// each receive is a multishot RECVMSG with MSG_DONTWAIT: it takes every
// datagram the socket holds into provided buffers and ends with EAGAIN, all
// within the io_uring_enter that submitted it. Sends complete within their
// io_uring_enter too, unless the socket buffer is full; a shard whose
// chunks are all in flight waits for a send completion in io_uring_enter
// instead (at most sendWaitMax at a time), and one that parks with some in
// flight looks again every sendWaitMax.

// sendWaitMax bounds a wait for send completions, during which datagrams
// and Wake wait too.
const sendWaitMax = time.Millisecond

// PollerError says why a shard could not wait in the network poller, which
// it then does in io_uring_enter on a thread of its own.
type PollerError struct {
	Op  string // "dup", "O_NONBLOCK", "register with the poller"
	Err error
}

func (e *PollerError) Error() string {
	return "uring: the socket cannot wait in the network poller (" + e.Op + "): " + e.Err.Error()
}

func (e *PollerError) Unwrap() error { return e.Err }

// openPoller registers a duplicate of the socket with the network poller.
func (c *shardConn) openPoller() error {
	fd, err := unix.FcntlInt(uintptr(c.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return &PollerError{Op: "dup", Err: err}
	}
	// os.NewFile registers only non-blocking descriptors with the poller.
	// O_NONBLOCK is a flag of the open file, shared with c.fd: it is
	// cleared again once registered, so that a send the socket has no room
	// for waits in io_uring (a blocking socket) instead of failing with
	// EAGAIN. Nothing reads the descriptor but the ring.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return &PollerError{Op: "O_NONBLOCK", Err: err}
	}
	f := os.NewFile(uintptr(fd), "mxp-udp")
	park, err := netpark.New(f, c.pollReady)
	if err == nil {
		err = f.SetReadDeadline(time.Time{}) // fails unless the poller took it
	}
	if err == nil {
		err = unix.SetNonblock(fd, false)
	}
	if err != nil {
		f.Close()
		return &PollerError{Op: "register with the poller", Err: err}
	}
	c.park = park
	return nil
}

// ThreadAffine reports whether the shard must stay on one OS thread: only
// when it waits in io_uring_enter (ThreadPerShard, Pin, SQPoll, or no
// poller).
func (c *shardConn) ThreadAffine() bool { return c.park == nil }

// waitNetpoll parks in the network poller until the socket has datagrams,
// Wake is called, or the deadline passes. The caller reaped and armed.
func (c *shardConn) waitNetpoll(deadline, now time.Time) error {
	if err := c.submit(); err != nil {
		return err
	}
	if c.park.TakeWake() || c.hasWork() {
		return nil
	}
	if now.IsZero() {
		now = time.Now()
	}
	if !deadline.IsZero() && !now.Before(deadline) {
		return nil
	}
	if c.txStarved && len(c.tx.free) == 0 {
		return c.waitSends(deadline, now)
	}
	if c.busyPoll > 0 {
		if done, err := c.park.Spin(c.busyPoll, deadline); done || err != nil {
			return err
		}
	}
	park := deadline
	if !c.tx.idle() { // sends wait for room in the socket buffer: look again soon
		if t := now.Add(sendWaitMax); park.IsZero() || t.Before(park) {
			park = t
		}
	}
	return c.park.Park(park, now, &c.stats.Wakeups)
}

// waitSends waits in io_uring_enter for a send completion, every chunk
// being in flight, for at most sendWaitMax.
func (c *shardConn) waitSends(deadline, now time.Time) error {
	timeout := sendWaitMax
	if !deadline.IsZero() {
		timeout = min(timeout, deadline.Sub(now))
	}
	c.stats.Wakeups.Add(1)
	if err := c.ring.WaitCQEs(1, timeout); err != nil && err != unix.EBUSY && err != unix.EAGAIN {
		return os.NewSyscallError("io_uring_enter", err)
	}
	return nil
}

// hasWork reports what ends a Wait besides Wake: datagrams to hand out, or
// a send chunk freed after TxBuffers ran out.
func (c *shardConn) hasWork() bool {
	return c.rx.ready() || c.txStarved && len(c.tx.free) > 0
}

// pollReady is the poller's readiness check: drain the socket. The poller
// forgets the socket's edges before its first call (it is edge-triggered),
// so that one drains too, though Recv just found the socket empty.
func (c *shardConn) pollReady() (bool, error) {
	c.reap()
	if c.hasWork() || c.park.Woken() {
		return true, nil
	}
	if err := c.drainSocket(); err != nil {
		return true, err
	}
	return c.hasWork(), nil
}

// drainSocket takes what the socket holds into provided buffers: one
// MSG_DONTWAIT receive, completed within its io_uring_enter.
func (c *shardConn) drainSocket() error {
	if err := c.arm(); err != nil {
		return err
	}
	if err := c.submit(); err != nil {
		return err
	}
	c.reap()
	return nil
}

// wakeNetpoll makes a parked Wait return, or the next one.
func (c *shardConn) wakeNetpoll() {
	if c.closed.Load() {
		return
	}
	c.park.Wake()
}
