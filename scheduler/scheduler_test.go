package scheduler

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// hasCredit reports whether class c is ready and could be served now in the
// current round (white box: mirrors Next's lazy crediting).
func (s *Scheduler) hasCredit(c Class) bool {
	cs := &s.cls[c]
	if cs.n == 0 {
		return false
	}
	if cs.round == s.round {
		return cs.deficit > 0
	}
	return min(cs.deficit, 0)+cs.quantum > 0
}

func TestClassString(t *testing.T) {
	for c, want := range map[Class]string{Control: "Control", Interactive: "Interactive", Bulk: "Bulk", NumClasses: "Class(3)", 200: "Class(200)"} {
		if got := c.String(); got != want {
			t.Errorf("Class(%d).String() = %q, want %q", uint8(c), got, want)
		}
	}
}

func TestNewPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"zero quantum":  func() { New(DefaultWeights, 0) },
		"zero weight":   func() { New(Weights{1, 0, 1}, 1200) },
		"negative":      func() { New(Weights{1, 1, -1}, 1200) },
		"overflow":      func() { New(Weights{1 << 30, 1, 1}, 1<<20) },
		"bad class reg": func() { New(DefaultWeights, 1200).Register(1, NumClasses) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestEmptyAndUnknown(t *testing.T) {
	s := New(DefaultWeights, 1200)
	if id, ok := s.Next(); ok {
		t.Fatalf("Next on empty = %d, true", id)
	}
	// Unknown ids: all no-ops.
	s.Ready(7)
	s.Sent(7, 100, true)
	s.Idle(7)
	s.SetClass(7, Bulk)
	s.Unregister(7)
	if s.Len() != 0 || s.Queues() != 0 || s.IsReady(7) {
		t.Fatal("unknown id changed state")
	}
	if _, ok := s.Next(); ok {
		t.Fatal("unknown id became ready")
	}
	s.Register(7, Bulk)
	if _, ok := s.Next(); ok {
		t.Fatal("registered queue is ready before Ready")
	}
	s.Ready(7)
	s.Ready(7) // idempotent
	if s.Len() != 1 {
		t.Fatalf("Len = %d after double Ready", s.Len())
	}
	if id, ok := s.Next(); !ok || id != 7 {
		t.Fatalf("Next = %d, %v", id, ok)
	}
	if id, _ := s.Next(); id != 7 {
		t.Fatal("Next is not stable without Sent")
	}
	s.Sent(7, 100, false)
	if s.Len() != 0 || s.IsReady(7) {
		t.Fatal("Sent(stillReady=false) left it ready")
	}
	s.Sent(7, 100, true) // charging an idle queue with stillReady makes it ready
	if !s.IsReady(7) {
		t.Fatal("Sent(stillReady=true) did not make it ready")
	}
	if c, ok := s.ClassOf(7); !ok || c != Bulk {
		t.Fatal("ClassOf")
	}
	st := s.Stats()
	if st.Class[Bulk].Bytes != 200 || st.Class[Bulk].Sends != 2 || st.Class[Bulk].Queues != 1 || st.Ready != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUnregisterReady(t *testing.T) {
	s := New(DefaultWeights, 1200)
	for id := uint64(1); id <= 3; id++ {
		s.Register(id, Interactive)
		s.Ready(id)
	}
	a, _ := s.Next()
	s.Unregister(a) // the queue whose turn it is
	if s.Len() != 2 || s.IsReady(a) {
		t.Fatal("unregistered queue still counted")
	}
	s.Sent(a, 500, true) // stale Sent after Unregister: ignored
	s.Ready(a)
	if s.Len() != 2 {
		t.Fatal("stale id came back")
	}
	seen := map[uint64]bool{}
	for range 10 {
		id, ok := s.Next()
		if !ok || id == a {
			t.Fatalf("Next = %d, %v", id, ok)
		}
		seen[id] = true
		s.Sent(id, 1200, true)
	}
	if len(seen) != 2 {
		t.Fatalf("served %v", seen)
	}
	for id := range seen {
		s.Unregister(id)
	}
	if _, ok := s.Next(); ok || s.Len() != 0 || s.Queues() != 0 {
		t.Fatal("not empty after unregistering all")
	}
	// The handle may be reused, with a new class.
	s.Register(a, Control)
	s.Ready(a)
	if id, ok := s.Next(); !ok || id != a {
		t.Fatal("re-registered handle not served")
	}
}

func TestSetClassReady(t *testing.T) {
	s := New(DefaultWeights, 1200)
	s.Register(1, Bulk)
	s.Register(2, Bulk)
	s.Ready(1)
	s.Ready(2)
	s.Register(3, Interactive)
	s.Ready(3)
	if id, _ := s.Next(); id != 3 {
		t.Fatalf("Interactive not first: %d", id)
	}
	s.SetClass(2, Control)
	if id, _ := s.Next(); id != 2 {
		t.Fatal("queue moved to Control not served first")
	}
	s.Register(2, Bulk) // Register of an existing id = SetClass, stays ready
	if !s.IsReady(2) {
		t.Fatal("re-Register lost ready state")
	}
	if id, _ := s.Next(); id != 3 {
		t.Fatal("after moving back, Interactive should be first")
	}
	st := s.Stats()
	if st.Class[Bulk].Queues != 2 || st.Class[Interactive].Queues != 1 || st.Class[Control].Queues != 0 || st.Class[Bulk].Ready != 2 {
		t.Fatalf("per-class counts %+v", st.Class)
	}
}

// backlog drives s with every registered queue always ready; charge returns
// the bytes of each send. It returns bytes per queue.
func backlog(s *Scheduler, sends int, charge func(id uint64) int, each func(id uint64, n int)) map[uint64]int {
	got := map[uint64]int{}
	for range sends {
		id, ok := s.Next()
		if !ok {
			panic("nothing ready")
		}
		n := charge(id)
		got[id] += n
		if each != nil {
			each(id, n)
		}
		s.Sent(id, n, true)
	}
	return got
}

func shareOf(s *Scheduler) [NumClasses]float64 {
	st := s.Stats()
	var tot float64
	for _, c := range st.Class {
		tot += float64(c.Bytes)
	}
	var sh [NumClasses]float64
	for c := range sh {
		sh[c] = float64(st.Class[c].Bytes) / tot
	}
	return sh
}

func TestSharesFollowWeights(t *testing.T) {
	for _, w := range []Weights{DefaultWeights, {1, 1, 1}, {3, 2, 1}, {1, 4, 16}, {100, 10, 1}} {
		s := New(w, 1200)
		rng := rand.New(rand.NewPCG(1, 2))
		for id := range uint64(9) {
			s.Register(id, Class(id%3))
			s.Ready(id)
		}
		backlog(s, 300_000, func(uint64) int { return 1 + rng.IntN(1500) }, nil)
		sh := shareOf(s)
		sum := float64(w[0] + w[1] + w[2])
		var worst float64
		for c := range sh {
			want := float64(w[c]) / sum
			rel := (sh[c] - want) / want
			worst = max(worst, rel, -rel)
			if rel > 0.02 || rel < -0.02 {
				t.Errorf("weights %v: %v share %.4f, want %.4f", w, Class(c), sh[c], want)
			}
		}
		t.Logf("weights %v: shares %.4f %.4f %.4f, worst relative error %.3f%%", w, sh[0], sh[1], sh[2], 100*worst)
	}
}

func TestSharesTwoClasses(t *testing.T) {
	s := New(DefaultWeights, 1200)
	s.Register(1, Interactive)
	s.Register(2, Bulk)
	s.Ready(1)
	s.Ready(2)
	backlog(s, 100_000, func(uint64) int { return 1200 }, nil)
	sh := shareOf(s)
	if sh[Interactive] < 0.79 || sh[Interactive] > 0.81 || sh[Control] != 0 {
		t.Fatalf("Interactive/Bulk shares %.4f/%.4f, want 0.8/0.2", sh[Interactive], sh[Bulk])
	}
	t.Logf("Interactive:Bulk = %.4f:%.4f", sh[Interactive], sh[Bulk])
}

// starvationBound is the most bytes the other classes can send while class c
// waits, with all classes backlogged and charges at most m ≤ quantum.
func starvationBound(s *Scheduler, c Class, m int) int {
	b := 0
	for o := range NumClasses {
		if o != c {
			b += int(s.cls[o].quantum) + m - 1
		}
	}
	return b
}

func TestNoStarvationBacklogged(t *testing.T) {
	const m = 1200
	s := New(DefaultWeights, 1200)
	rng := rand.New(rand.NewPCG(3, 4))
	for id := range uint64(6) {
		s.Register(id, Class(id%3))
		s.Ready(id)
	}
	var since, worst [NumClasses]int
	backlog(s, 200_000, func(uint64) int { return 1 + rng.IntN(m) }, func(id uint64, n int) {
		c := Class(id % 3)
		since[c] = 0
		for o := range NumClasses {
			if o != c {
				since[o] += n
				worst[o] = max(worst[o], since[o])
			}
		}
	})
	for c := range NumClasses {
		bound := starvationBound(s, c, m)
		if worst[c] > bound {
			t.Errorf("%v waited behind %d bytes, bound %d", c, worst[c], bound)
		}
		t.Logf("%v: longest wait %d bytes of other classes (bound %d)", c, worst[c], bound)
	}
}

// A Control queue that becomes ready while Interactive and Bulk saturate the
// path is the very next queue served, as long as Control has not used its
// quantum in the current round.
func TestControlLatency(t *testing.T) {
	s := New(DefaultWeights, 1200)
	rng := rand.New(rand.NewPCG(5, 6))
	s.Register(10, Interactive)
	s.Register(11, Bulk)
	s.Register(12, Bulk)
	for _, id := range []uint64{10, 11, 12} {
		s.Ready(id)
	}
	s.Register(1, Control)
	events, lower := 0, 0
	for range 100_000 {
		if rng.IntN(20) == 0 {
			s.Ready(1)
			events++
			id, _ := s.Next()
			if id != 1 {
				t.Fatalf("Control became ready but Next = %d", id)
			}
			s.Sent(1, 50+rng.IntN(300), false) // ACK / MAX_DATA sized
			continue
		}
		id, _ := s.Next()
		c, _ := s.ClassOf(id)
		if c == Bulk {
			lower++
		}
		s.Sent(id, 1+rng.IntN(1200), true)
	}
	if events < 1000 || lower == 0 {
		t.Fatalf("test did not exercise: %d events, %d bulk sends", events, lower)
	}
	t.Logf("%d Control wake-ups, each served by the next Next (0 lower-class bytes before it); Bulk still sent %d times", events, lower)
}

// When Control is itself saturating, a newly ready Control queue waits at most
// one quantum of each other class (plus one send's overshoot each).
func TestControlLatencyWhenSaturated(t *testing.T) {
	const m = 1200
	s := New(DefaultWeights, 1200)
	rng := rand.New(rand.NewPCG(7, 8))
	for id, c := range []Class{Control, Interactive, Bulk} {
		s.Register(uint64(id), c)
		s.Ready(uint64(id))
	}
	s.Register(99, Control)
	bound := starvationBound(s, Control, m)
	worst := 0
	for range 20_000 {
		if rng.IntN(30) == 0 && !s.IsReady(99) {
			s.Ready(99)
			lower := 0
			for {
				id, _ := s.Next()
				if c, _ := s.ClassOf(id); c == Control {
					break
				}
				n := 1 + rng.IntN(m)
				lower += n
				s.Sent(id, n, true)
			}
			worst = max(worst, lower)
		}
		id, _ := s.Next()
		s.Sent(id, 1+rng.IntN(m), id != 99)
	}
	if worst > bound {
		t.Fatalf("Control waited behind %d lower-class bytes, bound %d", worst, bound)
	}
	t.Logf("saturated Control: worst wait %d lower-class bytes (bound %d)", worst, bound)
}

func TestRoundRobinWithinClass(t *testing.T) {
	s := New(DefaultWeights, 1200)
	sizes := map[uint64]int{1: 100, 2: 1200, 3: 1500, 4: 37, 5: 999}
	for id := range sizes {
		s.Register(id, Bulk)
		s.Ready(id)
	}
	var since = map[uint64]int{}
	worst := 0
	got := backlog(s, 200_000, func(id uint64) int { return sizes[id] }, func(id uint64, n int) {
		since[id] = 0
		for o := range sizes {
			if o != id {
				since[o] += n
				worst = max(worst, since[o])
			}
		}
	})
	var tot int
	for _, b := range got {
		tot += b
	}
	for id, b := range got {
		sh := float64(b) / float64(tot)
		if sh < 0.198 || sh > 0.202 {
			t.Errorf("queue %d (chunks of %d) got %.4f of Bulk bytes, want 0.2", id, sizes[id], sh)
		}
	}
	// Between two turns of a queue, each of the 4 others sends at most a
	// quantum plus one overshoot (< 1500).
	if bound := 4 * (1200 + 1500 - 1); worst > bound {
		t.Errorf("a queue waited behind %d bytes, bound %d", worst, bound)
	}
	t.Logf("5 Bulk queues, chunk sizes 37..1500: byte shares %v of %d, worst wait %d bytes", got, tot, worst)
}

func TestGiantCharges(t *testing.T) {
	s := New(DefaultWeights, 1200)
	for id := range uint64(6) {
		s.Register(id, Class(id%3))
		s.Ready(id)
	}
	rng := rand.New(rand.NewPCG(9, 10))
	// Charges up to 64 KiB (a whole GSO batch at once) against a 1200-byte
	// quantum: debt is repaid, shares still converge, and Next stays bounded.
	backlog(s, 50_000, func(uint64) int { return 1 + rng.IntN(65536) }, nil)
	sh := shareOf(s)
	for c, w := range DefaultWeights {
		want := float64(w) / 21
		if rel := (sh[c] - want) / want; rel > 0.05 || rel < -0.05 {
			t.Errorf("%v share %.4f, want %.4f", Class(c), sh[c], want)
		}
	}
	t.Logf("charges up to 64 KiB: shares %.4f %.4f %.4f", sh[0], sh[1], sh[2])
}

func TestZeroAllocs(t *testing.T) {
	s := New(DefaultWeights, 1200)
	const n = 1000
	for id := range uint64(n) {
		s.Register(id<<2|1, Class(id%3))
	}
	i := 0
	allocs := testing.AllocsPerRun(10_000, func() {
		s.Ready(uint64(i%n)<<2 | 1)
		s.Ready(uint64((i*7)%n)<<2 | 1)
		id, ok := s.Next()
		if !ok {
			panic("none")
		}
		s.Sent(id, 1+i%1400, i%3 != 0)
		_ = s.Stats()
		i++
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per Ready+Next+Sent", allocs)
	}
	// SetClass and Unregister never allocate; Register of a recycled slot
	// only when the map grows.
	allocs = testing.AllocsPerRun(1000, func() {
		id := uint64(i%n)<<2 | 1
		s.SetClass(id, Class(i%3))
		s.Unregister(id)
		s.Register(id, Bulk)
		s.Ready(id)
		i++
	})
	if allocs != 0 {
		t.Fatalf("SetClass+Unregister+Register+Ready churn: %v allocs per op", allocs)
	}
	fresh := New(DefaultWeights, 1200)
	for id := range uint64(100) {
		fresh.Register(id, Bulk)
	}
	id := uint64(0)
	if a := testing.AllocsPerRun(99, func() { fresh.Unregister(id); id++ }); a != 0 {
		t.Fatalf("Unregister: %v allocs", a)
	}
}

func benchNextSent(b *testing.B, queues int) {
	s := New(DefaultWeights, 1200)
	s.Reserve(queues)
	for id := range uint64(queues) {
		s.Register(id*4, Class(id%3))
		s.Ready(id * 4)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id, _ := s.Next()
		s.Sent(id, 1200, true)
	}
}

func BenchmarkNextSent(b *testing.B) {
	for _, q := range []int{1, 16, 1024} {
		b.Run(strconv.Itoa(q)+"queues", func(b *testing.B) { benchNextSent(b, q) })
	}
}

// BenchmarkNextSentChurn: each send empties its queue and another becomes
// ready (Ready + Next + Sent per op), as with many small messages.
func BenchmarkNextSentChurn(b *testing.B) {
	const queues = 1024
	s := New(DefaultWeights, 1200)
	for id := range uint64(queues) {
		s.Register(id, Class(id%3))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Ready(uint64(i*31) % queues)
		id, _ := s.Next()
		s.Sent(id, 64, false)
	}
}

func TestReserve(t *testing.T) {
	s := New(DefaultWeights, 1200)
	s.Reserve(256)
	id := uint64(0)
	if a := testing.AllocsPerRun(200, func() { s.Register(id, Class(id%3)); id++ }); a != 0 {
		t.Fatalf("Register after Reserve: %v allocs", a)
	}
	s.Reserve(10) // smaller: no-op
	if s.Queues() != 201 {
		t.Fatalf("Queues = %d", s.Queues())
	}
}
