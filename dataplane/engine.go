package dataplane

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Engine runs one shard per ShardConn of a backend, each driving its Handler.
// A shard's goroutine runs its turns (receive, hand over, send) holding the
// shard's turn lock and waits without it; TryTurn lets another goroutine run
// a send turn while the shard waits.
type Engine struct {
	cfg      Config
	name     string
	conns    []ShardConn
	handlers []Handler
	turns    []turnState
	stop     atomic.Bool
	wg       sync.WaitGroup
	errMu    sync.Mutex
	err      error
	failed   chan struct{}
}

// Start opens the backend and starts one shard per cfg.Shards, each with the
// Handler newHandler returns for its index.
func Start(b Backend, cfg Config, newHandler func(shard int) Handler) (*Engine, error) {
	cfg = cfg.WithDefaults()
	conns, err := b.Open(cfg)
	if err != nil {
		return nil, err
	}
	if len(conns) != cfg.Shards {
		for _, c := range conns {
			c.Close()
		}
		return nil, fmt.Errorf("dataplane: backend %s opened %d shards, want %d", b.Name(), len(conns), cfg.Shards)
	}
	e := &Engine{cfg: cfg, name: b.Name(), conns: conns, failed: make(chan struct{}), turns: make([]turnState, len(conns))}
	for i, c := range conns {
		e.handlers = append(e.handlers, newHandler(i))
		t := &e.turns[i]
		t.rx, t.tx = make([]Packet, cfg.Batch), make([]Packet, cfg.Batch)
		sw, ok := c.(SendsWhileWaiting)
		t.tryTurns = ok && sw.SendsWhileWaiting()
		l, ok := c.(Lendable)
		t.lendable = t.tryTurns && ok && l.Lendable() && !cfg.Pin
		t.poke = make(chan struct{}, 1)
		t.lendTimer = time.NewTimer(time.Hour)
		t.lendTimer.Stop()
	}
	e.wg.Add(len(conns))
	for i := range conns {
		go e.runShard(i)
	}
	return e, nil
}

// Backend returns the name of the engine's backend.
func (e *Engine) Backend() string { return e.name }

// Shards returns the number of shards.
func (e *Engine) Shards() int { return len(e.conns) }

// Conn returns shard i's connection (for its LocalAddr, Stats and Wake).
func (e *Engine) Conn(i int) ShardConn { return e.conns[i] }

// Wake makes shard i call its Handler's Transmit soon: call it after handing
// the shard's handler new work from another goroutine. The turn runs on
// whoever holds the shard's wait: its goroutine, or one in Await.
func (e *Engine) Wake(i int) {
	t := &e.turns[i]
	if !t.lendable {
		e.conns[i].Wake()
		return
	}
	t.poked.Store(true) // before looking at the role: see release
	e.conns[i].Wake()
	if t.role.Load() == roleFree {
		t.pokeShard()
	}
}

// turnState is what shard i's goroutine shares with TryTurn and Await.
type turnState struct {
	mu       sync.Mutex   // held while a turn runs: by the shard, TryTurn or Await
	rx, tx   []Packet     // the turn's batches (used under mu)
	tryTurns bool         // the backend sends while the shard waits (SendsWhileWaiting)
	waitAt   atomic.Int64 // the deadline the shard waits for, UnixNano (0: none)

	// Lending the wait (Await). Whoever holds the role receives and waits:
	// the shard's goroutine, a goroutine in Await, or, between two Awaits,
	// nobody (roleFree); the shard's goroutine takes it back once it has
	// been neither borrowed nor poked for LendFor (within 2×LendFor).
	lendable  bool          // the backend waits on any goroutine (Lendable), and the shard is not pinned
	role      atomic.Int32  // roleShard, roleFree or roleBorrowed
	wantLend  atomic.Bool   // an Await found the shard waiting: lend next time
	poked     atomic.Bool   // a Wake came since the last turn began
	borrows   atomic.Int64  // Awaits that held the wait, so far
	poke      chan struct{} // wakes the lending shard (pokeShard)
	lendTimer *time.Timer   // wakes the lending shard to look whether its wait is still in use (the shard's goroutine only)

	_ [64]byte // shards' turn states are written by different cores: keep them off each other's cache lines
}

// Roles of a shard's wait (turnState.role).
const (
	roleShard    int32 = iota // the shard's goroutine receives and waits
	roleFree                  // lent, held by nobody
	roleBorrowed              // held by a goroutine in Await
)

// LendFor is how long a lent wait may stay unused before the shard's
// goroutine takes it back. Datagrams that come while nobody holds it (a
// caller between two calls, or done with its calls) wait up to twice that,
// and its handler's timers run that much late, in principle: Go's network
// poller sleeps in whole milliseconds when nothing else runs, so it can be
// a millisecond or two. A Handler that expects datagrams nobody waits for
// (a server's calls) should not lend (Lender).
const LendFor = 100 * time.Microsecond

func (t *turnState) pokeShard() {
	select {
	case t.poke <- struct{}{}:
	default:
	}
}

// TryTurn runs a send turn of shard i on the calling goroutine — the
// handler's Transmit and the backend's Send, as the shard would after Wake
// — if the shard is not in a turn of its own and its backend allows it. It
// reports whether it ran one; if not, call Wake. A work hand-over then
// costs no goroutine switch (its datagrams leave from the goroutine that
// made the work), and the shard is woken only when its wait must end
// earlier than planned (a new timer, or more to send).
func (e *Engine) TryTurn(i int) bool {
	t := &e.turns[i]
	if !t.tryTurns || !t.mu.TryLock() {
		return false
	}
	if e.stop.Load() {
		t.mu.Unlock()
		return false
	}
	c, h := e.conns[i], e.handlers[i]
	now := time.Now()
	more, err := flush(c, h, t.tx, now)
	dl := h.Deadline()
	t.mu.Unlock()
	if err != nil {
		e.fail(i, err)
		return true
	}
	if w := t.waitAt.Load(); more || !dl.IsZero() && (w == 0 || dl.UnixNano() < w) {
		e.Wake(i)
	}
	return true
}

// Await receives and waits for shard i on the calling goroutine, running
// the shard's turns (Handler.Receive included) until done reports true,
// the time until passes (zero: no bound), or the engine stops; it
// reports whether done did. It does so only when the shard's goroutine
// has lent its wait, and returns false at once otherwise: the shard lends
// it the next time it would wait. A goroutine that waits for what the
// shard will receive (a reply) so wakes up from the network poller
// itself, sparing the hand-over from the shard's goroutine, which on a
// machine with an idle CPU costs the wake-up of another thread.
//
// done is called after each turn, with the turn lock held, and once
// before the first wait without it (so it must not need the lock: an
// atomic, a channel's length). now is the caller's latest reading of the
// clock (the zero time: none), for the first wait (ShardConn.Wait). A
// caller that leaves others waiting for the shard should Wake it after
// Await returns.
func (e *Engine) Await(i int, done func() bool, until, now time.Time) bool {
	t := &e.turns[i]
	if !t.lendable {
		return false
	}
	if !t.role.CompareAndSwap(roleFree, roleBorrowed) {
		if t.role.Load() == roleShard {
			t.wantLend.Store(true)
		}
		return false
	}
	ok := false
	defer func() { e.release(t, !ok) }()
	if e.stop.Load() {
		return false // Stop may be closing the backend
	}
	c := e.conns[i]
	// The caller has just run a send turn (TryTurn), or the shard one
	// before it lent its wait: unless a Wake came since, wait before
	// turning (a turn with nothing to do costs a few hundred ns).
	if !t.poked.Load() {
		if ok = done(); ok {
			return true
		}
		dl := until
		if w := t.waitAt.Load(); w != 0 && (dl.IsZero() || w < dl.UnixNano()) {
			dl = time.Unix(0, w)
		}
		if err := c.Wait(dl, now); err != nil {
			if !e.stop.Load() {
				e.fail(i, err)
			}
			return false
		}
	}
	for {
		t.mu.Lock()
		if e.stop.Load() {
			t.mu.Unlock()
			return false
		}
		busy, dl, now, err := e.turn(i)
		ok = done()
		t.mu.Unlock()
		if err != nil {
			e.fail(i, err)
			return ok
		}
		if ok {
			if busy {
				// More to receive or send: the shard's goroutine goes
				// on at once (release pokes it).
				t.poked.Store(true)
			}
			return true
		}
		if busy {
			continue
		}
		if !until.IsZero() {
			if !now.Before(until) {
				return false
			}
			if dl.IsZero() || until.Before(dl) {
				dl = until
			}
		}
		if dl.IsZero() || dl.After(now) {
			if err := c.Wait(dl, now); err != nil {
				if !e.stop.Load() {
					e.fail(i, err)
				}
				return false
			}
		}
	}
}

// Lends reports whether shard i can lend its wait to Await at all: its
// backend is Lendable and the shard not pinned.
func (e *Engine) Lends(i int) bool { return e.turns[i].lendable }

// Reclaim makes shard i's goroutine take its wait back now if it has lent
// it and nobody holds it: for work that will wait for the shard other than
// through Await (a stream opening).
func (e *Engine) Reclaim(i int) {
	if t := &e.turns[i]; t.role.Load() == roleFree {
		t.pokeShard()
	}
}

// release frees a borrowed wait: the shard's goroutine takes it back
// within LendFor unless another Await does first; at once when a Wake
// came that no turn has served, or when back is set (the borrower goes on
// waiting the usual way). It arms no timer: a timer set here would wake
// another thread for each call.
func (e *Engine) release(t *turnState, back bool) {
	t.borrows.Add(1)
	t.role.Store(roleFree)
	if back || t.poked.Load() || e.stop.Load() {
		t.pokeShard()
	}
}

// lent is the shard's goroutine while it has lent its wait: it sleeps
// until poked or its timer fires (every LendFor while the wait is
// borrowed), and returns once it holds the role again (or the engine
// stops).
func (e *Engine) lent(t *turnState) {
	seen := t.borrows.Load()
	for !e.stop.Load() {
		poked := false
		select {
		case <-t.poke:
			poked = true
		case <-t.lendTimer.C:
		}
		// On the timer, take the wait back only if nobody borrowed it
		// since the last look: a caller in a loop of calls, between two,
		// keeps it.
		b := t.borrows.Load()
		if (poked || b == seen) && t.role.CompareAndSwap(roleFree, roleShard) {
			t.lendTimer.Stop()
			return
		}
		if !poked {
			seen = b
			t.lendTimer.Reset(LendFor)
		}
	}
}

// Stats returns the sum of every shard's counters.
func (e *Engine) Stats() Stats {
	var s Stats
	for i, c := range e.conns {
		s = s.Add(c.Stats())
		s.Borrows += uint64(e.turns[i].borrows.Load())
	}
	return s
}

// Failed is closed when a shard stops on an error; Stop then returns it.
func (e *Engine) Failed() <-chan struct{} { return e.failed }

// Stop stops every shard, waits for them, closes the backend and returns the
// first error a shard or a close met.
func (e *Engine) Stop() error {
	e.stop.Store(true)
	for i := range e.conns {
		e.Wake(i)
	}
	e.wg.Wait()
	for i := range e.turns {
		e.turns[i].mu.Lock() // no TryTurn is running, and none will (stop is set)
		defer e.turns[i].mu.Unlock()
	}
	var errs []error
	e.errMu.Lock()
	if e.err != nil {
		errs = append(errs, e.err)
	}
	e.errMu.Unlock()
	for _, c := range e.conns {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) fail(shard int, err error) {
	e.errMu.Lock()
	defer e.errMu.Unlock()
	if e.err == nil {
		e.err = fmt.Errorf("dataplane: shard %d: %w", shard, err)
		close(e.failed)
	}
	e.stop.Store(true)
	for i := range e.conns {
		e.Wake(i)
	}
}

func (e *Engine) runShard(i int) {
	defer e.wg.Done()
	// A shard stays on one OS thread when pinned, or when its backend
	// needs it (rings owned by their submitting thread, ppoll waits).
	if ta, ok := e.conns[i].(interface{ ThreadAffine() bool }); e.cfg.Pin || !ok || ta.ThreadAffine() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	if e.cfg.Pin {
		if err := pinThread(i); err != nil {
			e.fail(i, err)
			return
		}
	}
	c, t := e.conns[i], &e.turns[i]
	for !e.stop.Load() {
		if t.role.Load() != roleShard {
			e.lent(t)
			continue
		}
		t.mu.Lock()
		busy, dl, now, err := e.turn(i)
		t.mu.Unlock()
		if err != nil {
			e.fail(i, err)
			return
		}
		if busy {
			continue
		}
		if t.lendable && t.wantLend.Load() && mayLend(e.handlers[i]) && t.wantLend.Swap(false) {
			// An Await found us waiting: lend it the wait. Until one takes
			// it, the timer brings us back.
			d := LendFor
			if !dl.IsZero() {
				d = min(d, dl.Sub(now))
			}
			t.lendTimer.Reset(d)
			select { // a poke left from before (a Wake as the wait came back) would end this loan at once
			case <-t.poke:
			default:
			}
			t.role.Store(roleFree)
			if t.poked.Load() { // a Wake since the turn: serve it
				t.pokeShard()
			}
			continue
		}
		if dl.IsZero() || dl.After(now) {
			if err := c.Wait(dl, now); err != nil {
				e.fail(i, err)
				return
			}
		}
	}
}

// mayLend asks a Handler that implements Lender.
func mayLend(h Handler) bool {
	l, ok := h.(Lender)
	return !ok || l.MayLend()
}

// turn runs one turn of shard i — a receive batch handed to the handler,
// then its sends — with t.mu held. busy reports that more may be waiting
// (a full receive batch, or sends left): turn again before waiting. dl is
// the handler's deadline.
func (e *Engine) turn(i int) (busy bool, dl, now time.Time, err error) {
	c, h, t := e.conns[i], e.handlers[i], &e.turns[i]
	// Flags are stored only when they change: a store is a locked
	// instruction (~10-20 ns here), and most turns would rewrite the same.
	if t.lendable && t.poked.Load() {
		t.poked.Store(false) // this turn serves the Wakes until now
	}
	now = time.Now()
	n, err := c.Recv(t.rx)
	if err != nil {
		return false, dl, now, err
	}
	if n > 0 {
		h.Receive(t.rx[:n], now)
		c.Release(t.rx[:n])
	}
	more, err := flush(c, h, t.tx, now)
	if err != nil {
		return false, dl, now, err
	}
	// A full batch may have left more behind: read again at once. A
	// partial one drained the backend, so go to Wait, which returns at
	// once if more has come (one system call saved per wake-up).
	if n == len(t.rx) || more {
		return true, dl, now, nil
	}
	dl = h.Deadline()
	w := int64(0)
	if !dl.IsZero() {
		w = dl.UnixNano()
	}
	if t.waitAt.Load() != w {
		t.waitAt.Store(w)
	}
	return false, dl, now, nil
}

// maxFlushBatches bounds the batches sent per loop turn, so a handler that
// always has more to send does not starve receiving (and sees a fresh now).
const maxFlushBatches = 4

// flush lets the handler fill send buffers until it has nothing more or
// maxFlushBatches went out; more reports that the handler filled every
// buffer of the last batch, so it may have more.
func flush(c ShardConn, h Handler, tx []Packet, now time.Time) (more bool, err error) {
	for range maxFlushBatches {
		k := c.TxBuffers(tx)
		if k == 0 {
			return false, nil
		}
		m := h.Transmit(tx[:k], now)
		if _, err := c.Send(tx[:m]); err != nil {
			return false, err
		}
		if m < k {
			return false, nil
		}
	}
	return true, nil
}
