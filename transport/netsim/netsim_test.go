package netsim

import (
	"encoding/binary"
	"hash/fnv"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"
)

var (
	addrA = netip.MustParseAddrPort("10.0.0.1:1000")
	addrB = netip.MustParseAddrPort("10.0.0.2:2000")
)

// sender sends count datagrams of size bytes to dst, every interval (all
// at once when interval is 0), each carrying its sequence number.
type sender struct {
	dst      Addr
	size     int
	count    int
	interval time.Duration
	start    time.Time
	next     int
	buf      []byte
	got      []Datagram
}

func (s *sender) Receive(now time.Time, d Datagram) { s.got = append(s.got, d) }
func (s *sender) due(now time.Time) bool {
	return s.next < s.count && !s.start.Add(time.Duration(s.next)*s.interval).After(now)
}
func (s *sender) Transmit(now time.Time, out []Datagram) []Datagram {
	if s.start.IsZero() {
		s.start = now
	}
	s.buf = s.buf[:0]
	for s.due(now) {
		// Reuse one buffer across calls on purpose: the simulator must
		// copy before the next Transmit.
		off := len(s.buf)
		s.buf = append(s.buf, make([]byte, s.size)...)
		binary.BigEndian.PutUint64(s.buf[off:], uint64(s.next))
		out = append(out, Datagram{To: s.dst, Data: s.buf[off : off+s.size]})
		s.next++
		if s.interval > 0 {
			break
		}
	}
	return out
}
func (s *sender) Deadline() time.Time {
	if s.next >= s.count || s.start.IsZero() {
		return time.Time{}
	}
	return s.start.Add(time.Duration(s.next) * s.interval)
}

// sink records arrivals.
type sink struct {
	seqs  []uint64
	times []time.Time
}

func (k *sink) Receive(now time.Time, d Datagram) {
	var b [8]byte
	copy(b[:], d.Data)
	k.seqs = append(k.seqs, binary.BigEndian.Uint64(b[:]))
	k.times = append(k.times, now)
}
func (k *sink) Transmit(now time.Time, out []Datagram) []Datagram { return out }
func (k *sink) Deadline() time.Time                               { return time.Time{} }

// echo sends every datagram back.
type echo struct{ pending []Datagram }

func (e *echo) Receive(now time.Time, d Datagram) {
	e.pending = append(e.pending, Datagram{From: d.To, To: d.From, Data: d.Data})
}
func (e *echo) Transmit(now time.Time, out []Datagram) []Datagram {
	out = append(out, e.pending...)
	e.pending = e.pending[:0]
	return out
}
func (e *echo) Deadline() time.Time { return time.Time{} }

func TestEchoRoundTrip(t *testing.T) {
	s := New(1)
	snd := &sender{dst: addrB, size: 100, count: 1}
	s.Add(addrA, snd)
	s.Add(addrB, &echo{})
	s.Connect(addrA, addrB, LinkConfig{Delay: 10 * time.Millisecond}, LinkConfig{Delay: 10 * time.Millisecond})
	start := s.Now()
	if !s.RunUntil(func() bool { return len(snd.got) == 1 }, time.Second) {
		t.Fatal("echo did not come back")
	}
	if rtt := s.Now().Sub(start); rtt != 20*time.Millisecond {
		t.Fatalf("round trip %v, want 20ms", rtt)
	}
	if got := binary.BigEndian.Uint64(snd.got[0].Data); got != 0 || len(snd.got[0].Data) != 100 {
		t.Fatalf("echo payload corrupted")
	}
	if s.Step() {
		t.Fatal("events left after the round trip")
	}
}

// traceHash runs a lossy ping-pong workload and hashes the trace.
func traceHash(seed uint64) (uint64, int) {
	s := New(seed)
	h := fnv.New64a()
	n := 0
	s.SetTrace(func(e TraceEvent) {
		n++
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(e.At.UnixNano()))
		h.Write(b[:])
		h.Write([]byte{byte(e.Kind), byte(e.Len), byte(e.Len >> 8)})
		h.Write([]byte(e.From.String() + e.To.String()))
	})
	cfg := LinkConfig{Delay: 5 * time.Millisecond, Jitter: 2 * time.Millisecond, Loss: 0.1,
		Duplicate: 0.05, Reorder: 0.1, ReorderDelay: 3 * time.Millisecond, Bandwidth: 10e6, QueueBytes: 20000}
	s.Add(addrA, &sender{dst: addrB, size: 1200, count: 2000, interval: 100 * time.Microsecond})
	s.Add(addrB, &echo{})
	s.Connect(addrA, addrB, cfg, cfg)
	s.RunFor(2 * time.Second)
	return h.Sum64(), n
}

func TestDeterminism(t *testing.T) {
	h1, n1 := traceHash(42)
	h2, n2 := traceHash(42)
	if h1 != h2 || n1 != n2 {
		t.Fatalf("same seed, different traces: %x/%d vs %x/%d", h1, n1, h2, n2)
	}
	h3, _ := traceHash(43)
	if h3 == h1 {
		t.Fatal("different seeds gave the same trace")
	}
	if n1 < 4000 {
		t.Fatalf("trace too short (%d events)", n1)
	}
}

func TestImpairmentRates(t *testing.T) {
	const n = 100000
	s := New(7)
	k := &sink{}
	s.Add(addrA, &sender{dst: addrB, size: 64, count: n, interval: time.Millisecond})
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{Delay: 10 * time.Millisecond, Loss: 0.1, Duplicate: 0.05,
		Reorder: 0.1, ReorderDelay: 5 * time.Millisecond}, LinkConfig{})
	s.RunFor(n*time.Millisecond + time.Second)
	st := s.Stats(addrA, addrB)
	rate := func(x int64) float64 { return float64(x) / n }
	check := func(name string, got, want float64) {
		t.Helper()
		// 5 standard deviations of a binomial proportion.
		tol := 5 * math.Sqrt(want*(1-want)/n)
		if math.Abs(got-want) > tol {
			t.Errorf("%s rate %.4f, want %.4f±%.4f", name, got, want, tol)
		}
	}
	if st.Sent != n {
		t.Fatalf("sent %d", st.Sent)
	}
	check("loss", rate(st.Lost), 0.1)
	check("duplicate", float64(st.Duplicated)/float64(n-st.Lost), 0.05)
	check("reorder", float64(st.Reordered)/float64(n-st.Lost+st.Duplicated), 0.1)
	if st.Delivered != n-st.Lost+st.Duplicated || int64(len(k.seqs)) != st.Delivered {
		t.Fatalf("delivered %d, sink %d, want %d", st.Delivered, len(k.seqs), n-st.Lost+st.Duplicated)
	}
	// The receiver really sees duplicates and inversions.
	seen := make(map[uint64]int)
	inversions := 0
	for i, q := range k.seqs {
		seen[q]++
		if i > 0 && q < k.seqs[i-1] {
			inversions++
		}
	}
	dups := 0
	for _, c := range seen {
		dups += c - 1
	}
	if int64(dups) != st.Duplicated {
		t.Errorf("receiver saw %d duplicates, stats say %d", dups, st.Duplicated)
	}
	if inversions < n/50 {
		t.Errorf("only %d reorder inversions", inversions)
	}
	t.Logf("loss %.4f dup %.4f reorder %.4f inversions %d", rate(st.Lost),
		float64(st.Duplicated)/float64(n-st.Lost), float64(st.Reordered)/float64(st.Delivered), inversions)
}

func TestJitterRange(t *testing.T) {
	s := New(3)
	k := &sink{}
	snd := &sender{dst: addrB, size: 10, count: 5000, interval: time.Millisecond}
	s.Add(addrA, snd)
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{Delay: 10 * time.Millisecond, Jitter: 4 * time.Millisecond}, LinkConfig{})
	s.RunFor(10 * time.Second)
	minD, maxD := time.Hour, time.Duration(0)
	for i, q := range k.seqs {
		d := k.times[i].Sub(Epoch) - time.Duration(q)*time.Millisecond
		minD, maxD = min(minD, d), max(maxD, d)
	}
	if minD < 10*time.Millisecond || maxD >= 14*time.Millisecond || maxD-minD < 3900*time.Microsecond {
		t.Fatalf("delays in [%v, %v], want spread over [10ms, 14ms)", minD, maxD)
	}
}

func TestBandwidthSerialization(t *testing.T) {
	s := New(1)
	k := &sink{}
	// 1000 bytes at 8 Mbit/s = exactly 1 ms each.
	s.Add(addrA, &sender{dst: addrB, size: 1000, count: 10})
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{Delay: 5 * time.Millisecond, Bandwidth: 8e6, QueueBytes: 100000}, LinkConfig{})
	s.RunFor(time.Second)
	if len(k.times) != 10 {
		t.Fatalf("got %d datagrams", len(k.times))
	}
	for i, at := range k.times {
		want := 5*time.Millisecond + time.Duration(i+1)*time.Millisecond
		if got := at.Sub(Epoch); got != want || k.seqs[i] != uint64(i) {
			t.Fatalf("datagram %d (seq %d) arrived at %v, want %v", i, k.seqs[i], got, want)
		}
	}
	if st := s.Stats(addrA, addrB); st.MaxQueueBytes != 10000 {
		t.Fatalf("max queue %d, want 10000", st.MaxQueueBytes)
	}

	// An awkward rate: 1200-byte datagrams at 7 Mbit/s (9600/7 ms each)
	// must not drift from the exact cumulative schedule.
	s = New(1)
	k = &sink{}
	const n = 3000
	s.Add(addrA, &sender{dst: addrB, size: 1200, count: n})
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{Bandwidth: 7e6, QueueBytes: 1 << 30}, LinkConfig{})
	s.RunFor(10 * time.Second)
	for i, at := range k.times {
		bits := int64(i+1) * 9600
		want := time.Duration((bits*1e9 + 7e6 - 1) / 7e6)
		if got := at.Sub(Epoch); got != want {
			t.Fatalf("datagram %d arrived at %v, want %v", i, got, want)
		}
	}
}

func TestPacedBelowBandwidthHasNoQueue(t *testing.T) {
	s := New(1)
	k := &sink{}
	// 1000 bytes every 2 ms over 8 Mbit/s: each takes 1 ms, no queueing.
	s.Add(addrA, &sender{dst: addrB, size: 1000, count: 100, interval: 2 * time.Millisecond})
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{Delay: time.Millisecond, Bandwidth: 8e6}, LinkConfig{})
	s.RunFor(time.Second)
	for i, at := range k.times {
		if want := time.Duration(2*i+2) * time.Millisecond; at.Sub(Epoch) != want {
			t.Fatalf("datagram %d at %v, want %v", i, at.Sub(Epoch), want)
		}
	}
}

func TestMTUDrops(t *testing.T) {
	s := New(1)
	k := &sink{}
	s.Add(addrA, &sender{dst: addrB, size: 1501, count: 5})
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{MTU: 1500}, LinkConfig{})
	s.RunFor(time.Second)
	if st := s.Stats(addrA, addrB); st.MTUDrops != 5 || st.Delivered != 0 || len(k.seqs) != 0 {
		t.Fatalf("stats %+v", st)
	}
	s = New(1)
	k = &sink{}
	s.Add(addrA, &sender{dst: addrB, size: 1500, count: 5})
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{MTU: 1500}, LinkConfig{})
	s.RunFor(time.Second)
	if st := s.Stats(addrA, addrB); st.MTUDrops != 0 || st.Delivered != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestQueueDrops(t *testing.T) {
	s := New(1)
	k := &sink{}
	snd := &sender{dst: addrB, size: 1000, count: 10}
	s.Add(addrA, snd)
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{Delay: time.Millisecond, Bandwidth: 8e6, QueueBytes: 5000}, LinkConfig{})
	s.RunFor(time.Second)
	st := s.Stats(addrA, addrB)
	if st.QueueDrops != 5 || st.Delivered != 5 {
		t.Fatalf("stats %+v", st)
	}
	for i, q := range k.seqs {
		if q != uint64(i) {
			t.Fatalf("drop-tail should keep the first five, got %v", k.seqs)
		}
	}
	// Once drained the queue accepts again.
	snd.count, snd.next, snd.start = 3, 0, time.Time{}
	s.Wake(addrA)
	s.RunFor(time.Second)
	if st := s.Stats(addrA, addrB); st.Delivered != 8 || st.QueueDrops != 5 {
		t.Fatalf("after drain: %+v", st)
	}
}

func TestDefaultQueueIsAboutOneBDP(t *testing.T) {
	s := New(1)
	// 100 Mbit/s, 10 ms one way: BDP = 12.5e6 B/s * 20 ms = 250000 bytes.
	s.Add(addrA, &sender{dst: addrB, size: 1000, count: 1000})
	s.Add(addrB, &sink{})
	s.Connect(addrA, addrB, LinkConfig{Delay: 10 * time.Millisecond, Bandwidth: 100e6}, LinkConfig{})
	s.RunFor(time.Second)
	if st := s.Stats(addrA, addrB); st.Delivered != 250 || st.QueueDrops != 750 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNoRouteAndUnknownDestination(t *testing.T) {
	s := New(1)
	var kinds []EventKind
	s.SetTrace(func(e TraceEvent) { kinds = append(kinds, e.Kind) })
	s.Add(addrA, &sender{dst: addrB, size: 10, count: 1})
	s.RunFor(time.Second)
	if len(kinds) != 1 || kinds[0] != EvNoRoute {
		t.Fatalf("trace %v", kinds)
	}
	s = New(1)
	s.Add(addrA, &sender{dst: addrB, size: 10, count: 1})
	s.Connect(addrA, addrB, LinkConfig{}, LinkConfig{})
	s.RunFor(time.Second)
	if st := s.Stats(addrA, addrB); st.Undeliverable != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRunUntilAndRunFor(t *testing.T) {
	s := New(1)
	k := &sink{}
	s.Add(addrA, &sender{dst: addrB, size: 10, count: 10, interval: 10 * time.Millisecond})
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{Delay: time.Millisecond}, LinkConfig{})
	if !s.RunUntil(func() bool { return len(k.seqs) == 3 }, time.Second) {
		t.Fatal("cond not met")
	}
	if got := s.Now().Sub(Epoch); got != 21*time.Millisecond {
		t.Fatalf("now %v", got)
	}
	if s.RunUntil(func() bool { return len(k.seqs) == 100 }, 500*time.Millisecond) {
		t.Fatal("impossible cond met")
	}
	if got := s.Now().Sub(Epoch); got != 521*time.Millisecond {
		t.Fatalf("now %v after RunUntil limit", got)
	}
	s.RunFor(time.Second)
	if got := s.Now().Sub(Epoch); got != 1521*time.Millisecond || len(k.seqs) != 10 {
		t.Fatalf("now %v, %d received", got, len(k.seqs))
	}
}

// timerEP fires a datagram each time its timer expires.
type timerEP struct {
	dst   Addr
	at    time.Time
	every time.Duration
	fired int
	stuck bool // never clears its deadline
}

func (e *timerEP) Receive(time.Time, Datagram) {}
func (e *timerEP) Transmit(now time.Time, out []Datagram) []Datagram {
	if e.stuck || e.at.IsZero() || now.Before(e.at) {
		return out
	}
	e.fired++
	e.at = now.Add(e.every)
	return append(out, Datagram{To: e.dst, Data: []byte{byte(e.fired)}})
}
func (e *timerEP) Deadline() time.Time { return e.at }

func TestTimers(t *testing.T) {
	s := New(1)
	ep := &timerEP{dst: addrB, at: Epoch.Add(5 * time.Millisecond), every: 10 * time.Millisecond}
	s.Add(addrA, ep)
	s.Add(addrB, &sink{})
	s.Connect(addrA, addrB, LinkConfig{}, LinkConfig{})
	s.RunFor(100 * time.Millisecond)
	if ep.fired != 10 {
		t.Fatalf("fired %d times, want 10", ep.fired)
	}
}

func expectPanic(t *testing.T, substr string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Fatalf("no panic, want %q", substr)
		}
		if msg, _ := r.(string); !strings.Contains(msg, substr) {
			t.Fatalf("panic %v, want %q", r, substr)
		}
	}()
	f()
}

func TestStuckDeadlinePanics(t *testing.T) {
	s := New(1)
	s.Add(addrA, &timerEP{dst: addrB, at: Epoch.Add(time.Millisecond), stuck: true})
	expectPanic(t, "not after virtual now", func() { s.RunFor(time.Second) })
}

// storm always has something to send.
type storm struct{ dst Addr }

func (e *storm) Receive(time.Time, Datagram) {}
func (e *storm) Transmit(now time.Time, out []Datagram) []Datagram {
	return append(out, Datagram{To: e.dst, Data: []byte{1}})
}
func (e *storm) Deadline() time.Time { return time.Time{} }

func TestTransmitStormPanics(t *testing.T) {
	s := New(1)
	s.MaxPerInstant = 100000
	s.Add(addrA, &storm{dst: addrB})
	expectPanic(t, "endless Transmit", func() { s.RunFor(time.Second) })
}

func TestStormCapInterleaves(t *testing.T) {
	// A burst larger than MaxPerPoll is sent in several polls at the same
	// instant, and all of it goes out.
	s := New(1)
	s.MaxPerPoll = 10
	k := &sink{}
	s.Add(addrA, &sender{dst: addrB, size: 8, count: 95})
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{Delay: time.Millisecond}, LinkConfig{})
	s.RunFor(time.Second)
	if len(k.seqs) != 95 {
		t.Fatalf("got %d", len(k.seqs))
	}
}

func TestManyArrivalsAtOneInstantAreNotAStall(t *testing.T) {
	s := New(1)
	k := &sink{}
	s.Add(addrA, &sender{dst: addrB, size: 8, count: 5000})
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{Delay: time.Millisecond}, LinkConfig{})
	s.RunFor(time.Second)
	if len(k.seqs) != 5000 {
		t.Fatalf("got %d", len(k.seqs))
	}
}

func BenchmarkDeliver(b *testing.B) {
	b.ReportAllocs()
	s := New(1)
	k := &sink{}
	snd := &sender{dst: addrB, size: 1200, count: b.N, interval: time.Microsecond}
	s.Add(addrA, snd)
	s.Add(addrB, k)
	s.Connect(addrA, addrB, LinkConfig{Delay: time.Millisecond, Bandwidth: 100e9}, LinkConfig{})
	b.ResetTimer()
	for s.Step() {
	}
}

func TestSaturatedQueueMemoryBounded(t *testing.T) {
	// A sender that keeps the queue busy for a long time: the FIFO's
	// backing array stays small.
	s := New(1)
	s.Add(addrA, &sender{dst: addrB, size: 1000, count: 40000, interval: 999 * time.Microsecond})
	s.Add(addrB, &sink{})
	s.Connect(addrA, addrB, LinkConfig{Bandwidth: 8e6, QueueBytes: 50000}, LinkConfig{})
	s.RunFor(45 * time.Second)
	l := s.links[[2]Addr{addrA, addrB}]
	if c := cap(l.fifo); c > 4096 {
		t.Fatalf("fifo capacity %d after a long busy period", c)
	}
	if st := s.Stats(addrA, addrB); st.Delivered < 39900 {
		t.Fatalf("stats %+v", st)
	}
}
