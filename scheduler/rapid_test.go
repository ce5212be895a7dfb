package scheduler

import (
	"testing"

	"pgregory.net/rapid"
)

type modelQueue struct {
	class Class
	ready bool
	// Within-class round robin: bytes that other queues of the class sent
	// since this one was last served while continuously ready, and which
	// queues sent them.
	wait   int
	others map[uint64]bool
}

func (q *modelQueue) resetWait() {
	q.wait = 0
	clear(q.others)
}

// TestPropertyOperations runs random operation sequences against a model and
// checks, after every step: Len and the ready set agree with the model; Next
// never returns an unready or unregistered id; the class it returns is the
// highest-priority ready class with credit in the round; and, with charges at
// most one quantum, a continuously ready class never waits behind more than
// two rounds' worth of the other classes (one round when they stay busy is
// checked in TestNoStarvationBacklogged); within a class, a continuously
// ready queue waits behind at most one turn (quantum + charge - 1) of each
// other queue.
func TestPropertyOperations(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var w Weights
		for c := range w {
			w[c] = rapid.IntRange(1, 32).Draw(t, "weight")
		}
		quantum := rapid.IntRange(16, 2000).Draw(t, "quantum")
		maxCharge := rapid.IntRange(quantum/4, quantum).Draw(t, "maxCharge")
		s := New(w, quantum)
		model := map[uint64]*modelQueue{}
		readyIn := func(c Class) int {
			n := 0
			for _, q := range model {
				if q.ready && q.class == c {
					n++
				}
			}
			return n
		}
		// wait[c]: bytes of other classes since c was last served while
		// continuously ready (-1: class not ready).
		var wait [NumClasses]int
		var bound [NumClasses]int
		for c := range NumClasses {
			wait[c] = -1
			for o := range NumClasses {
				if o != c {
					bound[c] += 2 * (w[o]*quantum + maxCharge - 1)
				}
			}
		}
		sync := func() {
			for c := range NumClasses {
				if readyIn(c) == 0 {
					wait[c] = -1
				} else if wait[c] < 0 {
					wait[c] = 0
				}
			}
		}
		idGen := rapid.Uint64Range(0, 12)
		classGen := rapid.Custom(func(t *rapid.T) Class { return Class(rapid.IntRange(0, int(NumClasses)-1).Draw(t, "class")) })
		steps := rapid.IntRange(1, 1000).Draw(t, "steps")
		for range steps {
			switch op := rapid.IntRange(0, 9).Draw(t, "op"); op {
			case 0:
				id, c := idGen.Draw(t, "id"), classGen.Draw(t, "c")
				s.Register(id, c)
				if q, ok := model[id]; ok {
					if q.class != c {
						q.resetWait()
					}
					q.class = c
				} else {
					model[id] = &modelQueue{class: c, others: map[uint64]bool{}}
				}
			case 1:
				id := idGen.Draw(t, "id")
				s.Unregister(id)
				delete(model, id)
			case 2:
				id, c := idGen.Draw(t, "id"), classGen.Draw(t, "c")
				s.SetClass(id, c)
				if q, ok := model[id]; ok {
					if q.class != c {
						q.resetWait()
					}
					q.class = c
				}
			case 3, 4:
				id := idGen.Draw(t, "id")
				s.Ready(id)
				if q, ok := model[id]; ok && !q.ready {
					q.ready = true
					q.resetWait()
				}
			default: // 5..9: a send
				id, ok := s.Next()
				q := model[id]
				if !ok {
					for mid, mq := range model {
						if mq.ready {
							t.Fatalf("Next = none but %d is ready", mid)
						}
					}
					continue
				}
				if q == nil || !q.ready {
					t.Fatalf("Next returned %d, not registered and ready (%v)", id, q)
				}
				if c, _ := s.ClassOf(id); c != q.class {
					t.Fatalf("class of %d is %v, model %v", id, c, q.class)
				}
				for hi := range q.class {
					if s.hasCredit(hi) {
						t.Fatalf("served %v while %v is ready with credit", q.class, hi)
					}
				}
				if id2, _ := s.Next(); id2 != id {
					t.Fatalf("Next not stable: %d then %d", id, id2)
				}
				n := maxCharge - rapid.IntRange(0, maxCharge).Draw(t, "bytes") // biased to full sends
				still := rapid.IntRange(0, 7).Draw(t, "still") > 0
				for c := range NumClasses {
					if c == q.class {
						wait[c] = 0
					} else if wait[c] >= 0 {
						wait[c] += n
						if wait[c] > bound[c] {
							t.Fatalf("%v waited behind %d bytes, bound %d", c, wait[c], bound[c])
						}
					}
				}
				for oid, o := range model {
					switch {
					case oid == id:
						o.resetWait()
					case o.ready && o.class == q.class:
						o.wait += n
						o.others[id] = true
						if b := len(o.others) * (quantum + maxCharge - 1); o.wait > b {
							t.Fatalf("queue %d waited behind %d bytes of %d other %v queues, bound %d", oid, o.wait, len(o.others), q.class, b)
						}
					}
				}
				s.Sent(id, n, still)
				q.ready = still
			}
			sync()
			want := 0
			for mid, q := range model {
				if q.ready {
					want++
				}
				if s.IsReady(mid) != q.ready {
					t.Fatalf("IsReady(%d) = %v, model %v", mid, s.IsReady(mid), q.ready)
				}
			}
			if s.Len() != want || s.Queues() != len(model) || s.Stats().Ready != want {
				t.Fatalf("Len %d Queues %d, model %d %d", s.Len(), s.Queues(), want, len(model))
			}
		}
	})
}

// TestPropertySharesConverge: for random weights, quantum, charge sizes and
// queue counts, with every class backlogged the byte shares match the weights
// within 1% (relative) after 300 rounds of the lightest class, and no class
// waits more than one round of the others.
func TestPropertySharesConverge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var w Weights
		sum := 0
		for c := range w {
			w[c] = rapid.IntRange(1, 20).Draw(t, "weight")
			sum += w[c]
		}
		quantum := rapid.IntRange(64, 1500).Draw(t, "quantum")
		maxCharge := rapid.IntRange(quantum/4, quantum).Draw(t, "maxCharge")
		s := New(w, quantum)
		var id uint64
		for c := range NumClasses {
			for range rapid.IntRange(1, 4).Draw(t, "queues") {
				s.Register(id, c)
				s.Ready(id)
				id++
			}
		}
		seed := rapid.Uint64().Draw(t, "seed")
		x := seed | 1
		var since [NumClasses]int
		for s.Stats().Rounds < 300 {
			qid, _ := s.Next()
			c, _ := s.ClassOf(qid)
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			n := 1 + int(x%uint64(maxCharge))
			for o := range NumClasses {
				if o == c {
					since[o] = 0
				} else if since[o] += n; since[o] > starvationBound(s, o, maxCharge) {
					t.Fatalf("%v waited behind %d bytes", o, since[o])
				}
			}
			s.Sent(qid, n, true)
		}
		sh := shareOf(s)
		for c := range sh {
			want := float64(w[c]) / float64(sum)
			if rel := (sh[c] - want) / want; rel > 0.01 || rel < -0.01 {
				t.Fatalf("weights %v quantum %d: %v share %.4f, want %.4f", w, quantum, Class(c), sh[c], want)
			}
		}
	})
}
