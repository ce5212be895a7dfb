package dataplane

import (
	"bytes"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// lendBackend opens memConns that send while waiting (sendsBackend) and
// wait on any goroutine, as the portable backend in the network poller
// does.
type lendBackend struct{ sendsBackend }

type lendConn struct{ sendsConn }

func (lendConn) Lendable() bool { return true }

func (b *lendBackend) Open(cfg Config) ([]ShardConn, error) {
	conns, err := b.sendsBackend.Open(cfg)
	for i, c := range conns {
		conns[i] = lendConn{c.(sendsConn)}
	}
	return conns, err
}

// lendHandler counts what it receives and on which goroutine, and says
// whether its shard may lend its wait.
type lendHandler struct {
	received atomic.Int64
	lastG    atomic.Int64 // goroutine of the last Receive
	refuse   atomic.Bool  // MayLend says no
}

func (h *lendHandler) Receive(pkts []Packet, _ time.Time) {
	h.lastG.Store(goid())
	h.received.Add(int64(len(pkts)))
}
func (h *lendHandler) Transmit([]Packet, time.Time) int { return 0 }
func (h *lendHandler) Deadline() time.Time              { return time.Time{} }
func (h *lendHandler) MayLend() bool                    { return !h.refuse.Load() }

// goid is the calling goroutine's number, from its stack header.
func goid() int64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseInt(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}

func startLending(t *testing.T) (*Engine, *memConn, *lendHandler) {
	t.Helper()
	b := &lendBackend{}
	h := &lendHandler{}
	e, err := Start(b, Config{Batch: 8}, func(int) Handler { return h })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop() })
	if !e.Lends(0) {
		t.Fatal("a Lendable backend's shard does not lend")
	}
	return e, b.conns[0], h
}

// borrow calls Await until one borrows the shard's wait, and returns what
// that one returned. An Await that finds the shard holding its wait asks
// it to lend it after its next turn (in use, the turn that brings the
// caller's reply; here a Wake), and the shard takes a lent wait back when
// nobody borrows it for LendFor: so it may take a few tries.
func borrow(t *testing.T, e *Engine, done func() bool, until time.Time) bool {
	t.Helper()
	ok, borrowed := tryBorrow(e, done, until)
	if !borrowed {
		t.Fatal("no Await borrowed the shard's wait")
	}
	return ok
}

// tryBorrow is borrow for any goroutine: borrowed is false if no Await
// borrowed the wait within 5 s.
func tryBorrow(e *Engine, done func() bool, until time.Time) (ok, borrowed bool) {
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		b0 := e.Stats().Borrows
		ok := e.Await(0, done, until, time.Time{})
		if e.Stats().Borrows > b0 {
			return ok, true
		}
		e.conns[0].Wake()
		time.Sleep(20 * time.Microsecond)
	}
	return false, false
}

// Await runs the shard's turns on the calling goroutine once the shard has
// lent its wait: the datagram the caller waits for is received there, and
// the engine counts the borrow.
func TestAwaitReceivesOnTheCallingGoroutine(t *testing.T) {
	e, c, h := startLending(t)
	waitFor(t, "the shard to wait", func() bool { return c.waits.Load() > 0 })
	me := goid()
	var sent atomic.Bool
	done := func() bool {
		// The first turn of the borrower sends the datagram it waits for.
		if sent.CompareAndSwap(false, true) {
			go func() {
				time.Sleep(2 * time.Millisecond)
				c.deliver(Packet{Buf: []byte("reply")})
			}()
		}
		return h.received.Load() == 1
	}
	b0 := e.Stats().Borrows
	if !borrow(t, e, done, time.Now().Add(5*time.Second)) {
		t.Fatal("Await did not see the datagram come")
	}
	if g := h.lastG.Load(); g != me {
		t.Errorf("the datagram was received on goroutine %d, not the caller's (%d)", g, me)
	}
	if d := e.Stats().Borrows - b0; d != 1 {
		t.Errorf("Borrows grew by %d, want 1", d)
	}
}

// A lent wait nobody borrows goes back to the shard's goroutine within
// about 2×LendFor, which then receives what comes; so does one whose
// borrower gave up (until passed), at once.
func TestLentWaitComesBack(t *testing.T) {
	e, c, h := startLending(t)
	waitFor(t, "the shard to wait", func() bool { return c.waits.Load() > 0 })
	borrow(t, e, func() bool { return true }, time.Time{})
	if r := e.turns[0].role.Load(); r == roleBorrowed {
		t.Fatal("the wait is still borrowed after Await returned")
	}
	waitFor(t, "the shard to take its wait back", func() bool { return e.turns[0].role.Load() == roleShard })
	c.deliver(Packet{Buf: []byte("later")})
	waitFor(t, "the shard to receive", func() bool { return h.received.Load() == 1 })
	if h.lastG.Load() == goid() {
		t.Fatal("received on the test's goroutine")
	}

	start := time.Now()
	if borrow(t, e, func() bool { return false }, time.Now().Add(2*time.Millisecond)) {
		t.Fatal("Await reported done for a condition that never held")
	}
	if d := time.Since(start); d < 2*time.Millisecond {
		t.Errorf("Await gave up after %v, before its bound", d)
	}
	// The borrower gave up: the shard takes its wait back at once, not
	// after LendFor, and receives.
	c.deliver(Packet{Buf: []byte("after")})
	waitFor(t, "the shard to receive after the borrower gave up", func() bool { return h.received.Load() == 2 })
}

// A Handler that says no (Lender) keeps its wait; Await then never borrows.
func TestLenderRefuses(t *testing.T) {
	e, c, h := startLending(t)
	h.refuse.Store(true)
	waitFor(t, "the shard to wait", func() bool { return c.waits.Load() > 0 })
	// Ask often (as tryBorrow does): a wait lent by mistake would be free
	// only until the shard takes it back, LendFor later.
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
		if e.Await(0, func() bool { return true }, time.Time{}, time.Time{}) {
			t.Fatal("Await borrowed a wait its handler refused to lend")
		}
		c.Wake() // a turn, after which the shard would lend
		time.Sleep(20 * time.Microsecond)
	}
	if e.Stats().Borrows != 0 {
		t.Fatal("a borrow was counted")
	}
}

// Reclaim brings a lent, unused wait back at once.
func TestReclaim(t *testing.T) {
	e, c, _ := startLending(t)
	waitFor(t, "the shard to wait", func() bool { return c.waits.Load() > 0 })
	borrow(t, e, func() bool { return true }, time.Time{})
	w0 := c.waits.Load()
	e.Reclaim(0)
	waitFor(t, "the shard to wait again", func() bool { return c.waits.Load() > w0 })
	if r := e.turns[0].role.Load(); r != roleShard {
		t.Fatalf("role %d after Reclaim, want the shard's", r)
	}
}

// A backend that cannot wait on any goroutine never lends.
func TestAwaitNeedsALendableBackend(t *testing.T) {
	b := &sendsBackend{}
	e, err := Start(b, Config{}, func(int) Handler { return &lendHandler{} })
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	if e.Lends(0) {
		t.Fatal("Lends on a backend that is not Lendable")
	}
	// Lends is fixed at Start, and Await returns at once when it is false:
	// asking once says what asking again would.
	if e.Await(0, func() bool { return true }, time.Time{}, time.Time{}) {
		t.Fatal("Await on a backend that is not Lendable")
	}
	if e.Stats().Borrows != 0 {
		t.Fatal("a borrow was counted")
	}
}

// Stop ends an Await that holds the wait.
func TestStopEndsAwait(t *testing.T) {
	b := &lendBackend{}
	e, err := Start(b, Config{Batch: 8}, func(int) Handler { return &lendHandler{} })
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the shard to wait", func() bool { return b.conns[0].waits.Load() > 0 })
	res := make(chan bool, 1)
	var borrowed atomic.Bool
	go func() {
		ok, _ := tryBorrow(e, func() bool { borrowed.Store(true); return false }, time.Time{})
		res <- ok
	}()
	waitFor(t, "an Await to borrow", borrowed.Load)
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case ok := <-res:
		if ok {
			t.Fatal("Await reported done after Stop")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Await still waits after Stop")
	}
}
