package dataplane

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// sendsBackend opens memConns that let TryTurn send while the shard waits.
type sendsBackend struct{ memBackend }

type sendsConn struct{ *memConn }

func (sendsConn) SendsWhileWaiting() bool { return true }

func (b *sendsBackend) Open(cfg Config) ([]ShardConn, error) {
	conns, err := b.memBackend.Open(cfg)
	for i, c := range conns {
		conns[i] = sendsConn{c.(*memConn)}
	}
	return conns, err
}

// turnHandler sends `work` datagrams when asked, reports the deadline it is
// given, and blocks in Receive while hold is set (a turn in progress).
type turnHandler struct {
	mu       sync.Mutex
	work     int
	deadline time.Time
	hold     chan struct{}
	holding  atomic.Bool
}

func (h *turnHandler) add(n int, deadline time.Time) {
	h.mu.Lock()
	h.work += n
	h.deadline = deadline
	h.mu.Unlock()
}

func (h *turnHandler) Receive([]Packet, time.Time) {
	if h.hold != nil {
		h.holding.Store(true)
		<-h.hold
		h.holding.Store(false)
	}
}

func (h *turnHandler) Transmit(out []Packet, _ time.Time) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := min(h.work, len(out))
	for i := range n {
		out[i].Buf = append(out[i].Buf[:0], 'x')
	}
	h.work -= n
	return n
}

func (h *turnHandler) Deadline() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.deadline
}

// TryTurn sends on the calling goroutine while the shard waits, without
// waking it when its wait need not change; wakes it when the handler's
// deadline came earlier; refuses while the shard is in a turn, and for a
// backend that cannot send while waiting.
func TestTryTurn(t *testing.T) {
	b := &sendsBackend{}
	h := &turnHandler{}
	e, err := Start(b, Config{Batch: 8}, func(int) Handler { return h })
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	c := b.conns[0]
	waitFor(t, "the shard to wait", func() bool { return c.waits.Load() > 0 })
	time.Sleep(10 * time.Millisecond)
	w0 := c.waits.Load()

	h.add(3, time.Time{})
	if !e.TryTurn(0) {
		t.Fatal("TryTurn refused while the shard waits")
	}
	if n := c.sentCount(); n != 3 {
		t.Fatalf("%d datagrams sent when TryTurn returned, want 3 (sent by the caller)", n)
	}
	time.Sleep(20 * time.Millisecond)
	if w := c.waits.Load(); w != w0 {
		t.Errorf("the shard was woken (%d waits, was %d) though its wait did not change", w, w0)
	}

	// A timer earlier than the shard's wait: the shard must wake and wait anew.
	h.add(1, time.Now().Add(time.Hour))
	if !e.TryTurn(0) {
		t.Fatal("TryTurn refused")
	}
	waitFor(t, "the shard to wait again with the new deadline", func() bool { return c.waits.Load() > w0 })
	if n := c.sentCount(); n != 4 {
		t.Fatalf("%d datagrams sent, want 4", n)
	}

	// A turn in progress: TryTurn says no; the shard sends the work once its turn goes on.
	h.hold = make(chan struct{})
	c.deliver(Packet{Buf: []byte("in")})
	waitFor(t, "the shard's turn", h.holding.Load)
	h.add(2, time.Time{})
	if e.TryTurn(0) {
		t.Fatal("TryTurn ran while the shard was in a turn")
	}
	close(h.hold)
	waitFor(t, "the shard to send the work after its turn", func() bool { return c.sentCount() == 6 })
	h.hold = nil

	// A backend whose sends may not run beside its waits.
	plain := &memBackend{}
	e2, err := Start(plain, Config{}, func(int) Handler { return &turnHandler{} })
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Stop()
	if e2.TryTurn(0) {
		t.Fatal("TryTurn on a backend that does not send while waiting")
	}
}
