// Package scheduler decides which send queue of a connection fills the next
// bytes of a packet.
//
// Queues (streams, the datagram queue, the control queue) are registered with a
// priority [Class] under a caller-chosen uint64 handle. Classes share the
// path by deficit round robin (DRR) with per-class weights, served in priority
// order inside each round; queues of one class share their class's bytes by a
// second, byte-counting round robin. No class is ever starved, and a class that
// still has credit in the current round is served before any lower class. See
// docs/scheduler.md for the algorithm, the exact bounds and measured figures.
//
// A Scheduler is sans-I/O and allocation free in steady state: only Register
// (a new handle) may allocate. It is not safe for concurrent use; one
// connection owns one Scheduler.
package scheduler

import (
	"fmt"
	"strconv"
)

// Class is a priority class. Lower values are higher priority.
type Class uint8

// The priority classes, highest first.
const (
	// Control carries connection control: ACKs, flow-control credit, pings,
	// path validation, close.
	Control Class = iota
	// Interactive carries latency-sensitive messages (RPC, agent chatter).
	Interactive
	// Bulk carries throughput traffic (large transfers, streaming).
	Bulk
	// NumClasses is the number of classes; it is not a valid Class.
	NumClasses
)

// String returns "Control", "Interactive", "Bulk" or "Class(n)".
func (c Class) String() string {
	switch c {
	case Control:
		return "Control"
	case Interactive:
		return "Interactive"
	case Bulk:
		return "Bulk"
	}
	return "Class(" + strconv.Itoa(int(c)) + ")"
}

// Weights are the per-class shares when several classes are busy (weighted
// fair, never strict starvation). Every weight must be at least 1. A class
// with weight w receives w × quantum bytes of credit per round.
type Weights [NumClasses]int

// DefaultWeights: while all three classes are saturated, Control gets 16/21
// (76%), Interactive 4/21 (19%) and Bulk 1/21 (4.8%) of the bytes; with
// Control idle, Interactive:Bulk is 80%:20%. Control traffic is small and
// bursty, so in practice its large weight only means a burst of up to 16
// quanta goes out without waiting for anyone, while even a runaway control
// queue cannot take Bulk below 1/21. See docs/scheduler.md.
var DefaultWeights = Weights{Control: 16, Interactive: 4, Bulk: 1}

// DefaultQuantum is a good quantum for New: about one packet payload on a
// 1280–1500 byte path, so the round robin among queues of a class
// interleaves them packet by packet.
const DefaultQuantum = 1200

// maxQuantum bounds weight × quantum so deficits cannot overflow int64 even
// after very large charges.
const maxQuantum = 1 << 40

const none = -1

type queue struct {
	id      uint64
	deficit int64 // byte credit of the current turn (≤ 0: debt carried forward)
	next    int32 // ring of ready queues of the class
	prev    int32
	class   Class
	live    bool
	ready   bool
	turn    bool // credited for its current turn at the head of the ring
}

type classState struct {
	head    int32  // current queue of the ready ring, none if empty
	n       int    // ready queues in the ring
	queues  int    // registered queues
	quantum int64  // weight × quantum
	deficit int64  // credit left in round `round`
	round   uint64 // the scheduler round this class was last credited for
	bytes   uint64
	sends   uint64
	turns   uint64
}

// Scheduler picks which queue sends next: deficit round robin across classes by
// weight (quantum = weight × Quantum bytes), and round robin among the ready
// queues of a class. Zero allocations in steady state. Not safe for concurrent
// use (one per connection, owned by a shard).
type Scheduler struct {
	q        []queue
	free     []int32
	idx      map[uint64]int32
	cls      [NumClasses]classState
	quantum  int64
	weights  Weights
	round    uint64
	ready    int
	lastID   uint64 // cache of the last id returned by Next, for Sent
	lastSlot int32
}

// New returns a scheduler with the given class weights and quantum (bytes per
// round per weight unit, e.g. DefaultQuantum). It panics if a weight or the
// quantum is below 1, or weight × quantum exceeds 2^40.
func New(w Weights, quantum int) *Scheduler {
	if quantum < 1 {
		panic(fmt.Sprintf("scheduler: quantum %d < 1", quantum))
	}
	s := &Scheduler{
		idx:      make(map[uint64]int32),
		quantum:  int64(quantum),
		weights:  w,
		round:    1,
		lastSlot: none,
	}
	for c := range s.cls {
		if w[c] < 1 {
			panic(fmt.Sprintf("scheduler: weight of %v is %d, must be ≥ 1", Class(c), w[c]))
		}
		if int64(w[c]) > maxQuantum/int64(quantum) {
			panic(fmt.Sprintf("scheduler: weight %d × quantum %d too large", w[c], quantum))
		}
		s.cls[c] = classState{head: none, quantum: int64(w[c]) * int64(quantum)}
	}
	return s
}

// Weights returns the class weights.
func (s *Scheduler) Weights() Weights { return s.weights }

// Quantum returns the per-weight-unit quantum in bytes.
func (s *Scheduler) Quantum() int { return int(s.quantum) }

// Reserve makes room for n registered queues, so that Register does not
// allocate until more than n queues exist at once.
func (s *Scheduler) Reserve(n int) {
	if n <= cap(s.q) {
		return
	}
	q := make([]queue, len(s.q), n)
	copy(q, s.q)
	s.q = q
	f := make([]int32, len(s.free), n)
	copy(f, s.free)
	s.free = f
	if len(s.idx) == 0 {
		s.idx = make(map[uint64]int32, n)
	}
}

func (s *Scheduler) slot(id uint64) (int32, bool) {
	if s.lastSlot != none && s.lastID == id {
		return s.lastSlot, true
	}
	i, ok := s.idx[id]
	return i, ok
}

// Register declares a queue (stream, datagram queue, control queue) with the
// given class; it starts not ready. Registering an id that already exists
// changes its class like SetClass and keeps its ready state. It panics if c is
// not a valid class. Register may allocate (the only method that does).
func (s *Scheduler) Register(id uint64, c Class) {
	if c >= NumClasses {
		panic(fmt.Sprintf("scheduler: invalid class %d", c))
	}
	if _, ok := s.idx[id]; ok {
		s.SetClass(id, c)
		return
	}
	var i int32
	if n := len(s.free); n > 0 {
		i = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		s.q = append(s.q, queue{})
		i = int32(len(s.q) - 1)
		if cap(s.free) < cap(s.q) {
			// Unregister must not allocate: room for every slot.
			f := make([]int32, 0, cap(s.q))
			s.free = append(f, s.free...)
		}
	}
	s.q[i] = queue{id: id, class: c, live: true, next: none, prev: none}
	s.idx[id] = i
	s.cls[c].queues++
}

// Unregister forgets a queue, ready or not. Unknown ids are ignored. The
// handle may be registered again afterwards.
func (s *Scheduler) Unregister(id uint64) {
	i, ok := s.slot(id)
	if !ok {
		return
	}
	q := &s.q[i]
	if q.ready {
		s.unlink(i)
	}
	s.cls[q.class].queues--
	*q = queue{next: none, prev: none}
	delete(s.idx, id)
	s.free = append(s.free, i)
	if s.lastSlot == i {
		s.lastSlot = none
	}
}

// SetClass moves a queue to another class. A ready queue stays ready and joins
// the tail of its new class's round robin. Unknown ids are ignored; it panics
// if c is not a valid class.
func (s *Scheduler) SetClass(id uint64, c Class) {
	if c >= NumClasses {
		panic(fmt.Sprintf("scheduler: invalid class %d", c))
	}
	i, ok := s.slot(id)
	if !ok {
		return
	}
	q := &s.q[i]
	if q.class == c {
		return
	}
	wasReady := q.ready
	if wasReady {
		s.unlink(i)
	}
	s.cls[q.class].queues--
	q.class = c
	s.cls[c].queues++
	if wasReady {
		s.link(i)
	}
}

// Ready marks the queue as having data to send. It is idempotent; a queue
// that becomes ready joins the tail of its class's round robin. Ready of an
// unknown (never registered or unregistered) id is a no-op.
func (s *Scheduler) Ready(id uint64) {
	if i, ok := s.slot(id); ok && !s.q[i].ready {
		s.link(i)
	}
}

// Idle marks the queue as having nothing to send, like Sent(id, 0, false).
// Unknown ids are ignored.
func (s *Scheduler) Idle(id uint64) {
	if i, ok := s.slot(id); ok && s.q[i].ready {
		s.unlink(i)
	}
}

// link appends slot i at the tail of its class ring.
func (s *Scheduler) link(i int32) {
	q := &s.q[i]
	cs := &s.cls[q.class]
	q.ready = true
	q.turn = false
	if cs.head == none {
		cs.head = i
		q.next, q.prev = i, i
	} else {
		h := &s.q[cs.head]
		t := h.prev
		q.prev, q.next = t, cs.head
		s.q[t].next = i
		h.prev = i
	}
	cs.n++
	s.ready++
}

// unlink removes slot i from its class ring. Credit left over in its turn is
// dropped; debt is kept and repaid on its next turns.
func (s *Scheduler) unlink(i int32) {
	q := &s.q[i]
	cs := &s.cls[q.class]
	if q.next == i {
		cs.head = none
	} else {
		s.q[q.prev].next = q.next
		s.q[q.next].prev = q.prev
		if cs.head == i {
			cs.head = q.next
		}
	}
	q.next, q.prev = none, none
	q.ready = false
	q.turn = false
	q.deficit = min(q.deficit, 0)
	cs.n--
	s.ready--
}

// Next returns the queue that should fill the next bytes: a ready queue of the
// highest-priority class that still has credit in the current round, and
// within that class the queue whose round-robin turn it is. ok is false when
// no queue is ready. Next does not change which queue is chosen until Sent,
// Ready, Unregister or SetClass is called: calling it twice returns the same
// id.
func (s *Scheduler) Next() (id uint64, ok bool) {
	if s.ready == 0 {
		return 0, false
	}
	for {
		for c := range s.cls {
			cs := &s.cls[c]
			if cs.n == 0 {
				continue
			}
			if cs.round != s.round {
				// First activity of this class in the round: one quantum of
				// credit; leftover credit from older rounds is not hoarded.
				cs.deficit = min(cs.deficit, 0) + cs.quantum
				cs.round = s.round
				cs.turns++
			}
			if cs.deficit > 0 {
				i := s.pick(cs)
				s.lastID, s.lastSlot = s.q[i].id, i
				return s.q[i].id, true
			}
		}
		s.newRound()
	}
}

// newRound starts the next round when no ready class has credit left. If
// every ready class is still in debt after one quantum (only possible after
// charges larger than a quantum), it grants the number of rounds that lets the
// first of them send, at once, instead of looping.
func (s *Scheduler) newRound() {
	k := int64(-1)
	for c := range s.cls {
		cs := &s.cls[c]
		if cs.n == 0 {
			continue
		}
		need := (1 - cs.deficit + cs.quantum - 1) / cs.quantum // rounds until > 0
		if k < 0 || need < k {
			k = need
		}
	}
	s.round++
	for c := range s.cls {
		cs := &s.cls[c]
		if cs.n == 0 {
			continue
		}
		cs.deficit += k * cs.quantum
		cs.round = s.round
		cs.turns++
	}
}

// pick returns the head of the class ring with positive credit, rotating the
// ring past queues whose turn is over.
func (s *Scheduler) pick(cs *classState) int32 {
	i := cs.head
	q := &s.q[i]
	if !q.turn {
		q.deficit = min(q.deficit, 0) + s.quantum
		q.turn = true
	}
	for visits := 0; q.deficit <= 0; visits++ {
		if visits == cs.n {
			// A whole cycle without credit: only after charges much larger
			// than the quantum. Repay in one step (once per call).
			s.repayRing(cs)
		}
		q.turn = false
		i = q.next
		cs.head = i
		q = &s.q[i]
		q.deficit = min(q.deficit, 0) + s.quantum
		q.turn = true
	}
	return i
}

// repayRing is pick's escape from long loops: when every queue of the ring is
// in debt deeper than a quantum, it credits all of them with the number of
// turns after which the first can send.
func (s *Scheduler) repayRing(cs *classState) {
	k := int64(-1)
	i := cs.head
	for range cs.n {
		q := &s.q[i]
		need := (1 - q.deficit + s.quantum - 1) / s.quantum
		if k < 0 || need < k {
			k = need
		}
		i = q.next
	}
	for range cs.n {
		s.q[i].deficit += (k - 1) * s.quantum
		i = s.q[i].next
	}
}

// Sent charges bytes sent from queue id to the queue and its class. If
// stillReady is false the queue leaves the ready set; if true it stays (or
// becomes) ready. Normally id is the one Next returned, but any registered
// queue may be charged (bytes sent outside Next count against its share).
// Unknown ids are ignored; negative byte counts count as 0.
func (s *Scheduler) Sent(id uint64, bytes int, stillReady bool) {
	i, ok := s.slot(id)
	if !ok {
		return
	}
	b := int64(max(bytes, 0))
	q := &s.q[i]
	cs := &s.cls[q.class]
	q.deficit -= b
	cs.deficit -= b
	cs.bytes += uint64(b)
	cs.sends++
	switch {
	case stillReady && !q.ready:
		s.link(i)
	case !stillReady && q.ready:
		s.unlink(i)
	}
}

// Len returns the number of ready queues.
func (s *Scheduler) Len() int { return s.ready }

// Queues returns the number of registered queues.
func (s *Scheduler) Queues() int { return len(s.idx) }

// IsReady reports whether id is registered and ready.
func (s *Scheduler) IsReady(id uint64) bool {
	i, ok := s.slot(id)
	return ok && s.q[i].ready
}

// ClassOf returns the class of a registered queue.
func (s *Scheduler) ClassOf(id uint64) (Class, bool) {
	i, ok := s.slot(id)
	if !ok {
		return 0, false
	}
	return s.q[i].class, true
}

// ClassStats are the counters of one class.
type ClassStats struct {
	Bytes  uint64 // bytes charged by Sent
	Sends  uint64 // Sent calls
	Turns  uint64 // rounds in which the class received its quantum
	Ready  int    // queues ready now
	Queues int    // queues registered now
}

// Stats are the scheduler's counters, for metrics
// (scheduler_priority_class{class=...}).
type Stats struct {
	Class  [NumClasses]ClassStats
	Rounds uint64 // DRR rounds begun (the first begins at New)
	Ready  int    // ready queues
}

// Stats returns the counters. It does not allocate.
func (s *Scheduler) Stats() Stats {
	st := Stats{Rounds: s.round, Ready: s.ready}
	for c := range s.cls {
		cs := &s.cls[c]
		st.Class[c] = ClassStats{Bytes: cs.bytes, Sends: cs.sends, Turns: cs.turns, Ready: cs.n, Queues: cs.queues}
	}
	return st
}
