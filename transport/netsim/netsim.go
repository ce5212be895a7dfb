// Package netsim is a deterministic network simulator for testing sans-I/O
// endpoints.
//
// A Sim owns a virtual clock and an event queue. Endpoints are attached at
// addresses and joined by one-way links that model propagation delay, jitter,
// random loss, duplication, reordering, a bandwidth-limited FIFO with a
// drop-tail queue, and an MTU. Everything is driven by a seeded PRNG and a
// (time, sequence) ordered event heap, so the same seed and the same endpoint
// behaviour give the same run, bit for bit. There are no goroutines, sockets
// or real clock reads.
//
// Endpoints are polled: after every Receive, at their Deadline, and once when
// they are added (or when Wake is called), the simulator calls Transmit
// repeatedly until it appends nothing.
package netsim

import (
	"container/heap"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"time"
)

// Addr is the address of an endpoint.
type Addr = netip.AddrPort

// Datagram is one UDP-like datagram.
type Datagram struct {
	From, To Addr
	Data     []byte
}

// Endpoint is a sans-I/O node driven by the simulator.
type Endpoint interface {
	// Receive delivers a datagram at now. d.Data is a fresh copy owned by
	// the endpoint from then on: the simulator never touches it again.
	Receive(now time.Time, d Datagram)
	// Transmit appends the datagrams to send at now and returns the slice.
	// It is called until it appends none. A datagram with a zero From is
	// sent from the endpoint's own address. The simulator copies Data
	// before Transmit is called again, so the endpoint may reuse buffers.
	Transmit(now time.Time, out []Datagram) []Datagram
	// Deadline is the endpoint's next timer; the zero time means none.
	// When it is reached the endpoint is polled with Transmit.
	Deadline() time.Time
}

// LinkConfig describes one direction of a link.
type LinkConfig struct {
	// Delay is the one-way propagation delay; Jitter adds a uniform random
	// delay in [0, Jitter) to each datagram independently (so a large jitter
	// also reorders).
	Delay, Jitter time.Duration
	// Loss, Duplicate and Reorder are per-datagram probabilities. Loss
	// happens on the wire, after the bandwidth queue (a lost datagram has
	// used its serialization time). A duplicate is an extra copy with its
	// own jitter that uses no bandwidth. A reordered datagram (each copy
	// drawn separately) gets an extra uniform delay in [0, ReorderDelay).
	Loss, Duplicate, Reorder float64
	ReorderDelay             time.Duration
	// Bandwidth in bits per second; 0 means infinite (no serialization).
	// With a bandwidth, datagrams are serialized one after another through
	// a FIFO queue.
	Bandwidth int64
	// QueueBytes limits the bytes waiting in (or being serialized from) the
	// FIFO when Bandwidth > 0; a datagram that does not fit is dropped
	// (drop-tail). 0 means about one bandwidth-delay product, taking the
	// round trip as 2*Delay, and at least 16 datagrams of 1500 bytes.
	QueueBytes int
	// MTU drops datagrams whose Data is longer; 0 means no limit.
	MTU int
}

// LinkStats counts what happened on one direction of a link.
type LinkStats struct {
	Sent           int64 // datagrams handed to the link
	Delivered      int64 // datagrams (including duplicates) delivered to an endpoint
	Lost           int64 // random loss
	Duplicated     int64 // extra copies made
	Reordered      int64 // datagrams given the extra reorder delay
	QueueDrops     int64 // drop-tail drops at the bandwidth queue
	MTUDrops       int64 // too large for the MTU
	Undeliverable  int64 // arrived at an address with no endpoint
	BytesSent      int64
	BytesDelivered int64
	MaxQueueBytes  int64 // high-water mark of the FIFO
}

// EventKind names a traced event.
type EventKind uint8

// Traced event kinds.
const (
	EvSend      EventKind = iota // an endpoint handed a datagram to a link
	EvDeliver                    // a datagram was delivered to an endpoint
	EvLoss                       // random loss
	EvQueueDrop                  // drop-tail
	EvMTUDrop                    // larger than the MTU
	EvNoRoute                    // no link from From to To
	EvTimer                      // an endpoint's deadline fired
)

func (k EventKind) String() string {
	switch k {
	case EvSend:
		return "send"
	case EvDeliver:
		return "deliver"
	case EvLoss:
		return "loss"
	case EvQueueDrop:
		return "queue-drop"
	case EvMTUDrop:
		return "mtu-drop"
	case EvNoRoute:
		return "no-route"
	case EvTimer:
		return "timer"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// TraceEvent is passed to the trace hook set with SetTrace.
type TraceEvent struct {
	At       time.Time
	Kind     EventKind
	From, To Addr
	Len      int
}

// Epoch is the virtual instant every Sim starts at.
var Epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Default limits; see the Sim fields of the same names.
const (
	DefaultMaxPerPoll    = 4096
	DefaultMaxPerInstant = 1 << 20
	DefaultMaxIdlePolls  = 64
)

type evKind uint8

const (
	evDeliver evKind = iota
	evPoll           // a poll at a scheduled time (timer or wake)
)

type event struct {
	at   time.Time
	seq  uint64
	kind evKind
	node *node
	gen  uint64 // for timer polls: the node's timer generation
	d    Datagram
	link *link
}

type eventHeap []*event

func (h eventHeap) Len() int { return len(h) }
func (h eventHeap) Less(i, j int) bool {
	if !h[i].at.Equal(h[j].at) {
		return h[i].at.Before(h[j].at)
	}
	return h[i].seq < h[j].seq
}
func (h eventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *eventHeap) Push(x any)   { *h = append(*h, x.(*event)) }
func (h *eventHeap) Pop() any {
	old := *h
	n := len(old)
	e := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return e
}

type node struct {
	addr  Addr
	ep    Endpoint
	timer time.Time // scheduled deadline, zero if none
	gen   uint64
	// stall detection
	lastPollAt time.Time
	idlePolls  int
	sentAtNow  int
}

type queued struct {
	done  time.Time // when its serialization ends
	bytes int
}

type link struct {
	cfg   LinkConfig
	rng   *rand.Rand
	stats LinkStats
	// serialization state: the link has been busy since epoch, having been
	// handed cumBits bits; a datagram's serialization ends at
	// epoch + cumBits/Bandwidth.
	epoch   time.Time
	cumBits uint64
	busy    time.Time // end of the last serialization
	fifo    []queued
	head    int
	qbytes  int
	qlimit  int
}

// Sim is a deterministic network simulator. It is not safe for concurrent use.
type Sim struct {
	// MaxPerPoll caps the datagrams taken from one endpoint in one poll;
	// past it the endpoint is polled again later at the same instant.
	MaxPerPoll int
	// MaxPerInstant: an endpoint that sends more datagrams than this at
	// one virtual instant makes the simulator panic (an endless Transmit).
	MaxPerInstant int
	// MaxIdlePolls: an endpoint whose Deadline stays at or before now while
	// Transmit sends nothing is polled again at the same instant; after
	// this many such polls the simulator panics (an endpoint bug).
	MaxIdlePolls int

	now    time.Time
	seed   uint64
	seq    uint64
	events eventHeap
	nodes  map[Addr]*node
	order  []*node
	links  map[[2]Addr]*link
	nlinks uint64
	trace  func(TraceEvent)
	out    []Datagram
	free   []*event
}

// New returns a simulator whose virtual clock starts at Epoch and whose
// randomness is derived from seed.
func New(seed uint64) *Sim {
	return &Sim{
		MaxPerPoll:    DefaultMaxPerPoll,
		MaxPerInstant: DefaultMaxPerInstant,
		MaxIdlePolls:  DefaultMaxIdlePolls,
		now:           Epoch,
		seed:          seed,
		nodes:         make(map[Addr]*node),
		links:         make(map[[2]Addr]*link),
	}
}

// Now is the virtual time.
func (s *Sim) Now() time.Time { return s.now }

// SetTrace installs a hook called for every send, delivery, drop and timer.
func (s *Sim) SetTrace(f func(TraceEvent)) { s.trace = f }

// Add attaches ep at addr and schedules a first poll at the current time.
func (s *Sim) Add(addr Addr, ep Endpoint) {
	if _, dup := s.nodes[addr]; dup {
		panic(fmt.Sprintf("netsim: address %v added twice", addr))
	}
	n := &node{addr: addr, ep: ep}
	s.nodes[addr] = n
	s.order = append(s.order, n)
	s.Wake(addr)
}

// Wake schedules a poll of the endpoint at addr at the current time, for a
// test that changed the endpoint's state from outside (for example queued
// application data).
func (s *Sim) Wake(addr Addr) {
	n := s.nodes[addr]
	if n == nil {
		panic(fmt.Sprintf("netsim: Wake of unknown address %v", addr))
	}
	e := s.newEvent(s.now, evPoll)
	e.node = n
	e.gen = 0 // a wake is never stale
	heap.Push(&s.events, e)
}

// Connect creates the link a→b with config ab and b→a with config ba,
// replacing any previous ones (and their statistics).
func (s *Sim) Connect(a, b Addr, ab, ba LinkConfig) {
	s.links[[2]Addr{a, b}] = s.newLink(ab)
	s.links[[2]Addr{b, a}] = s.newLink(ba)
}

func (s *Sim) newLink(c LinkConfig) *link {
	s.nlinks++
	l := &link{cfg: c, rng: rand.New(rand.NewPCG(s.seed, 0x9e3779b97f4a7c15*s.nlinks))}
	if c.Bandwidth > 0 {
		l.qlimit = c.QueueBytes
		if l.qlimit <= 0 {
			bdp := c.Bandwidth / 8 * int64(2*c.Delay) / int64(time.Second)
			l.qlimit = int(max(bdp, 16*1500))
		}
	}
	return l
}

// Stats returns the counters of the link a→b (zero if there is none).
func (s *Sim) Stats(a, b Addr) LinkStats {
	if l := s.links[[2]Addr{a, b}]; l != nil {
		return l.stats
	}
	return LinkStats{}
}

// Pending reports the number of scheduled events.
func (s *Sim) Pending() int { return len(s.events) }

// Step processes the next event, advancing the clock to it. It returns false
// when nothing is scheduled.
func (s *Sim) Step() bool {
	if len(s.events) == 0 {
		return false
	}
	e := heap.Pop(&s.events).(*event)
	s.now = e.at
	switch e.kind {
	case evDeliver:
		n := e.node
		l := e.link
		l.stats.Delivered++
		l.stats.BytesDelivered += int64(len(e.d.Data))
		s.emit(EvDeliver, e.d.From, e.d.To, len(e.d.Data))
		d := e.d
		s.release(e)
		n.ep.Receive(s.now, d)
		s.poll(n, false)
	case evPoll:
		n := e.node
		if e.gen != 0 {
			if e.gen != n.gen {
				s.release(e) // superseded timer
				return true
			}
			n.timer = time.Time{}
			s.emit(EvTimer, n.addr, Addr{}, 0)
		}
		s.release(e)
		s.poll(n, true)
	}
	return true
}

// RunFor processes events up to and including now+d, then sets the clock to
// now+d.
func (s *Sim) RunFor(d time.Duration) {
	end := s.now.Add(d)
	for len(s.events) > 0 && !s.events[0].at.After(end) {
		s.Step()
	}
	if end.After(s.now) {
		s.now = end
	}
}

// RunUntil processes events until cond returns true (checked before the
// first event and after each) or the next event lies beyond now+limit. It
// reports whether cond became true; if not, the clock is left at now+limit.
func (s *Sim) RunUntil(cond func() bool, limit time.Duration) bool {
	end := s.now.Add(limit)
	if cond() {
		return true
	}
	for len(s.events) > 0 && !s.events[0].at.After(end) {
		s.Step()
		if cond() {
			return true
		}
	}
	if end.After(s.now) {
		s.now = end
	}
	return false
}

func (s *Sim) newEvent(at time.Time, k evKind) *event {
	var e *event
	if n := len(s.free); n > 0 {
		e = s.free[n-1]
		s.free = s.free[:n-1]
	} else {
		e = new(event)
	}
	s.seq++
	*e = event{at: at, seq: s.seq, kind: k}
	return e
}

func (s *Sim) release(e *event) {
	*e = event{}
	s.free = append(s.free, e)
}

func (s *Sim) emit(k EventKind, from, to Addr, n int) {
	if s.trace != nil {
		s.trace(TraceEvent{At: s.now, Kind: k, From: from, To: to, Len: n})
	}
}

// poll drains the endpoint's Transmit and re-arms its timer. fromTimer is
// true for polls that were not caused by a Receive.
func (s *Sim) poll(n *node, fromTimer bool) {
	if !n.lastPollAt.Equal(s.now) {
		n.lastPollAt = s.now
		n.idlePolls = 0
		n.sentAtNow = 0
	}
	limit := s.MaxPerPoll
	if limit <= 0 {
		limit = DefaultMaxPerPoll
	}
	total := 0
	for {
		s.out = n.ep.Transmit(s.now, s.out[:0])
		if len(s.out) == 0 {
			break
		}
		for i := range s.out {
			d := s.out[i]
			if !d.From.IsValid() {
				d.From = n.addr
			}
			s.send(d)
			s.out[i] = Datagram{}
		}
		total += len(s.out)
		if total >= limit {
			n.sentAtNow += total
			if n.sentAtNow > s.maxPerInstant() {
				panic(fmt.Sprintf("netsim: endpoint %v sent %d datagrams at virtual time %v without time advancing "+
					"(endless Transmit): endpoint bug", n.addr, n.sentAtNow, s.now.Sub(Epoch)))
			}
			// Storm: finish later at the same instant, after other events.
			s.Wake(n.addr)
			return
		}
	}
	n.sentAtNow += total
	dl := n.ep.Deadline()
	if dl.IsZero() {
		n.timer = time.Time{}
		n.gen++ // cancel any scheduled timer
		return
	}
	if !dl.After(s.now) {
		// Deadline not in the future although Transmit has nothing to
		// send: poll again at this instant, and give up on an endpoint
		// that keeps doing this without progress.
		if fromTimer && total == 0 {
			n.idlePolls++
			if n.idlePolls > s.maxIdle() {
				panic(fmt.Sprintf("netsim: endpoint %v: Deadline %v is not after virtual now %v and Transmit "+
					"made no progress in %d polls: endpoint bug (a timer that is never cleared)",
					n.addr, dl.Sub(Epoch), s.now.Sub(Epoch), n.idlePolls))
			}
		}
		dl = s.now
		n.timer = time.Time{} // always schedule a fresh poll
	}
	if dl.Equal(n.timer) {
		return
	}
	n.gen++
	n.timer = dl
	e := s.newEvent(dl, evPoll)
	e.node = n
	e.gen = n.gen
	heap.Push(&s.events, e)
}

func (s *Sim) maxIdle() int {
	if s.MaxIdlePolls > 0 {
		return s.MaxIdlePolls
	}
	return DefaultMaxIdlePolls
}

func (s *Sim) maxPerInstant() int {
	if s.MaxPerInstant > 0 {
		return s.MaxPerInstant
	}
	return DefaultMaxPerInstant
}

// send puts a datagram on its link.
func (s *Sim) send(d Datagram) {
	l := s.links[[2]Addr{d.From, d.To}]
	if l == nil {
		s.emit(EvNoRoute, d.From, d.To, len(d.Data))
		return
	}
	size := len(d.Data)
	l.stats.Sent++
	l.stats.BytesSent += int64(size)
	s.emit(EvSend, d.From, d.To, size)
	c := &l.cfg
	if c.MTU > 0 && size > c.MTU {
		l.stats.MTUDrops++
		s.emit(EvMTUDrop, d.From, d.To, size)
		return
	}
	depart := s.now
	if c.Bandwidth > 0 {
		// Retire datagrams whose serialization has ended.
		for l.head < len(l.fifo) && !l.fifo[l.head].done.After(s.now) {
			l.qbytes -= l.fifo[l.head].bytes
			l.head++
		}
		if l.head == len(l.fifo) {
			l.fifo = l.fifo[:0]
			l.head = 0
		} else if l.head >= 1024 && l.head*2 >= len(l.fifo) {
			// A queue that never empties: reclaim the retired prefix.
			l.fifo = l.fifo[:copy(l.fifo, l.fifo[l.head:])]
			l.head = 0
		}
		if l.qbytes+size > l.qlimit {
			l.stats.QueueDrops++
			s.emit(EvQueueDrop, d.From, d.To, size)
			return
		}
		if !l.busy.After(s.now) {
			l.epoch = s.now
			l.cumBits = 0
		}
		l.cumBits += uint64(size) * 8
		hi, lo := bits.Mul64(l.cumBits, uint64(time.Second))
		q, r := bits.Div64(hi, lo, uint64(c.Bandwidth))
		if r != 0 {
			q++
		}
		depart = l.epoch.Add(time.Duration(q))
		l.busy = depart
		l.fifo = append(l.fifo, queued{done: depart, bytes: size})
		l.qbytes += size
		if int64(l.qbytes) > l.stats.MaxQueueBytes {
			l.stats.MaxQueueBytes = int64(l.qbytes)
		}
	}
	if c.Loss > 0 && l.rng.Float64() < c.Loss {
		l.stats.Lost++
		s.emit(EvLoss, d.From, d.To, size)
		return
	}
	copies := 1
	if c.Duplicate > 0 && l.rng.Float64() < c.Duplicate {
		copies = 2
		l.stats.Duplicated++
	}
	for i := 0; i < copies; i++ {
		at := depart.Add(c.Delay)
		if c.Jitter > 0 {
			at = at.Add(time.Duration(l.rng.Int64N(int64(c.Jitter))))
		}
		if c.Reorder > 0 && l.rng.Float64() < c.Reorder {
			l.stats.Reordered++
			if c.ReorderDelay > 0 {
				at = at.Add(time.Duration(l.rng.Int64N(int64(c.ReorderDelay))))
			}
		}
		dst := s.nodes[d.To]
		if dst == nil {
			l.stats.Undeliverable++
			continue
		}
		e := s.newEvent(at, evDeliver)
		e.node = dst
		e.link = l
		e.d = Datagram{From: d.From, To: d.To, Data: append([]byte(nil), d.Data...)}
		heap.Push(&s.events, e)
	}
}
