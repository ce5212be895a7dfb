package dataplane

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memConn is an in-memory ShardConn: Recv takes from inbox, Send appends to sent.
type memConn struct {
	mu      sync.Mutex
	inbox   []Packet
	sent    []Packet
	wake    chan struct{}
	slots   [][]byte
	handed  int
	recvErr error
	closed  atomic.Bool
	waits   atomic.Int64
}

func newMemConn(batch int) *memConn {
	c := &memConn{wake: make(chan struct{}, 1)}
	for range batch {
		c.slots = append(c.slots, make([]byte, 0, 1500))
	}
	return c
}

func (c *memConn) deliver(p ...Packet) {
	c.mu.Lock()
	c.inbox = append(c.inbox, p...)
	c.mu.Unlock()
	c.Wake()
}

func (c *memConn) Recv(pkts []Packet) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recvErr != nil {
		return 0, c.recvErr
	}
	n := copy(pkts, c.inbox)
	c.inbox = c.inbox[n:]
	return n, nil
}

func (c *memConn) Release([]Packet) {}

func (c *memConn) TxBuffers(pkts []Packet) int {
	n := min(len(pkts), len(c.slots))
	for i := range n {
		pkts[i].Buf = c.slots[i][:0]
	}
	c.handed = n
	return n
}

func (c *memConn) Send(pkts []Packet) (int, error) {
	if len(pkts) > c.handed {
		panic("Send of more buffers than TxBuffers handed out")
	}
	c.handed = 0
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range pkts {
		c.sent = append(c.sent, Packet{Buf: append([]byte(nil), p.Buf...), Addr: p.Addr})
	}
	return len(pkts), nil
}

func (c *memConn) Wait(deadline, _ time.Time) error {
	c.waits.Add(1)
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		timeout = time.After(time.Until(deadline))
	}
	select {
	case <-c.wake:
	case <-timeout:
	}
	return nil
}

func (c *memConn) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *memConn) LocalAddr() netip.AddrPort { return netip.MustParseAddrPort("198.18.0.1:9000") }
func (c *memConn) Stats() Stats              { return Stats{} }
func (c *memConn) Close() error              { c.closed.Store(true); return nil }

func (c *memConn) sentCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sent)
}

type memBackend struct{ conns []*memConn }

func (*memBackend) Name() string { return "mem" }
func (b *memBackend) Open(cfg Config) ([]ShardConn, error) {
	var out []ShardConn
	for range cfg.Shards {
		c := newMemConn(cfg.Batch)
		b.conns = append(b.conns, c)
		out = append(out, c)
	}
	return out, nil
}

// scripted is a Handler that echoes what it receives, sends `burst` extra
// datagrams when woken with work, and asks for a timer.
type scripted struct {
	mu       sync.Mutex
	queue    []Packet
	deadline time.Time
	fired    atomic.Int64
	received atomic.Int64
}

func (h *scripted) push(p ...Packet) {
	h.mu.Lock()
	h.queue = append(h.queue, p...)
	h.mu.Unlock()
}

func (h *scripted) Receive(pkts []Packet, _ time.Time) {
	for _, p := range pkts {
		h.push(Packet{Buf: append([]byte(nil), p.Buf...), Addr: p.Addr})
	}
	h.received.Add(int64(len(pkts)))
}

func (h *scripted) Transmit(out []Packet, now time.Time) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.deadline.IsZero() && !now.Before(h.deadline) {
		h.deadline = time.Time{}
		h.fired.Add(1)
	}
	n := min(len(out), len(h.queue))
	for i := range n {
		out[i].Buf = append(out[i].Buf, h.queue[i].Buf...)
		out[i].Addr = h.queue[i].Addr
	}
	h.queue = h.queue[n:]
	return n
}

func (h *scripted) Deadline() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.deadline
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestEngineMovesBatchesAndFlushesUntilDone(t *testing.T) {
	b := &memBackend{}
	hs := map[int]*scripted{}
	var mu sync.Mutex
	e, err := Start(b, Config{Shards: 2, Batch: 8}, func(i int) Handler {
		mu.Lock()
		defer mu.Unlock()
		hs[i] = &scripted{}
		return hs[i]
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	if e.Shards() != 2 || e.Backend() != "mem" {
		t.Fatalf("engine: %d shards of %s", e.Shards(), e.Backend())
	}
	from := netip.MustParseAddrPort("198.18.0.2:4000")
	// 20 datagrams: more than one batch in and out; every one echoed on its shard.
	for i := range 20 {
		b.conns[1].deliver(Packet{Buf: []byte{byte(i)}, Addr: from})
	}
	waitFor(t, "20 echoes", func() bool { return b.conns[1].sentCount() == 20 })
	if hs[0].received.Load() != 0 || b.conns[0].sentCount() != 0 {
		t.Fatal("shard 0 saw shard 1's traffic")
	}
	for i, p := range b.conns[1].sent {
		if len(p.Buf) != 1 || p.Buf[0] != byte(i) || p.Addr != from {
			t.Fatalf("echo %d = %v to %v", i, p.Buf, p.Addr)
		}
	}
	// Work handed over from another goroutine goes out after Wake, more than a batch of it.
	for i := range 17 {
		hs[0].push(Packet{Buf: []byte{0xA0, byte(i)}, Addr: from})
	}
	e.Wake(0)
	waitFor(t, "17 sends after Wake", func() bool { return b.conns[0].sentCount() == 17 })
}

func TestEngineDeadlineFires(t *testing.T) {
	b := &memBackend{}
	h := &scripted{}
	h.deadline = time.Now().Add(30 * time.Millisecond)
	e, err := Start(b, Config{}, func(int) Handler { return h })
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	waitFor(t, "the timer", func() bool { return h.fired.Load() == 1 })
	if h.Deadline() != (time.Time{}) {
		t.Fatal("deadline not cleared by the handler")
	}
	// With no deadline and no traffic the shard sleeps instead of spinning.
	w := b.conns[0].waits.Load()
	time.Sleep(50 * time.Millisecond)
	if d := b.conns[0].waits.Load() - w; d > 2 {
		t.Fatalf("%d waits in 50ms while idle: the shard spins", d)
	}
}

func TestEngineStopsOnBackendErrorAndCloses(t *testing.T) {
	b := &memBackend{}
	e, err := Start(b, Config{Shards: 2}, func(int) Handler { return &scripted{} })
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("ring broken")
	b.conns[1].mu.Lock()
	b.conns[1].recvErr = boom
	b.conns[1].mu.Unlock()
	b.conns[1].Wake()
	select {
	case <-e.Failed():
	case <-time.After(5 * time.Second):
		t.Fatal("the engine did not report the failed shard")
	}
	err = e.Stop()
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "shard 1") {
		t.Fatalf("Stop = %v, want the shard's error", err)
	}
	for i, c := range b.conns {
		if !c.closed.Load() {
			t.Errorf("shard %d not closed", i)
		}
	}
}

func TestEnginePinsShards(t *testing.T) {
	b := &memBackend{}
	e, err := Start(b, Config{Shards: 2, Pin: true}, func(int) Handler { return &scripted{} })
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Stop(); err != nil {
		t.Fatalf("pinned shards: %v", err)
	}
}

func TestSelect(t *testing.T) {
	mem := &memBackend{}
	cands := []Candidate{
		{"xdp", NotBuilt("xdp", "not in this build")},
		{"uring", func(Config) (Backend, error) {
			return nil, &UnavailableError{Backend: "uring", Feature: "io_uring", Reason: "kernel.io_uring_disabled=2"}
		}},
		{"mem", func(Config) (Backend, error) { return mem, nil }},
	}
	sel, err := Select("auto", Config{}, cands)
	if err != nil || sel.Backend != mem || len(sel.Rejected) != 2 {
		t.Fatalf("auto: %v, %v", sel, err)
	}
	line := sel.String()
	for _, want := range []string{"backend mem", "xdp (xdp: backend unavailable: not in this build)", "uring (uring: io_uring unavailable: kernel.io_uring_disabled=2)"} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %q lacks %q", line, want)
		}
	}
	if _, err := Select("uring", Config{}, cands); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "io_uring_disabled") {
		t.Errorf("forced uring: %v", err)
	}
	if sel, err := Select("mem", Config{}, cands); err != nil || sel.Backend != mem || len(sel.Rejected) != 0 {
		t.Errorf("forced mem: %v %v", sel, err)
	}
	// Candidates ranked below the chosen one are named in the line, not probed.
	probed := false
	below := append(cands[:len(cands):len(cands)], Candidate{"slow", func(Config) (Backend, error) { probed = true; return mem, nil }})
	if sel, err := Select("auto", Config{}, below); err != nil || sel.Backend != mem || probed ||
		!strings.Contains(sel.String(), "ranked below it: slow") {
		t.Errorf("auto with a lower-ranked candidate: %q %v (probed %v)", sel.String(), err, probed)
	}
	if _, err := Select("dpdk", Config{}, cands); err == nil || !strings.Contains(err.Error(), "xdp, uring, mem") {
		t.Errorf("unknown: %v", err)
	}
	if _, err := Select("auto", Config{}, cands[:2]); !errors.Is(err, ErrUnavailable) {
		t.Errorf("nothing available: %v", err)
	}
}

// Sub undoes Add, field by field (a field left out of either would show).
func TestStatsAddSub(t *testing.T) {
	s := Stats{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	o := Stats{100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200}
	if got := s.Add(o).Sub(o); got != s {
		t.Fatalf("s + o - o = %+v, want %+v", got, s)
	}
	if got := s.Add(o).Sub(s); got != o {
		t.Fatalf("s + o - s = %+v, want %+v", got, o)
	}
	// Every field is a counter Add sums: one left out of the list would
	// come back unchanged.
	v := reflect.ValueOf(s.Add(o))
	for i := range v.NumField() {
		if got, want := v.Field(i).Uint(), uint64(101*(i+1)); got != want {
			t.Errorf("Add: %s = %d, want %d", v.Type().Field(i).Name, got, want)
		}
	}
}

// AddRx and AddTx add each figure to its own counter (zeros change nothing).
func TestCountersAddRxTx(t *testing.T) {
	var c Counters
	c.AddRx(3, 300, 1, 2)
	c.AddRx(0, 0, 0, 0)
	c.AddTx(4, 400, 2, 1)
	c.AddTx(1, 100, 0, 0)
	want := Stats{RxPackets: 3, RxBytes: 300, RxGROSplits: 1, RxDropped: 2, TxPackets: 5, TxBytes: 500, TxGSOSends: 2, TxDropped: 1}
	if got := c.Snapshot(); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
