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
		if sw, ok := c.(SendsWhileWaiting); ok && sw.SendsWhileWaiting() {
			e.turns[i].tx = make([]Packet, cfg.Batch)
		}
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
// the shard's handler new work from another goroutine.
func (e *Engine) Wake(i int) { e.conns[i].Wake() }

// turnState is what TryTurn shares with shard i's goroutine.
type turnState struct {
	mu     sync.Mutex   // held while a turn runs, by the shard or by TryTurn
	tx     []Packet     // TryTurn's send batch; nil: the backend cannot (SendsWhileWaiting)
	waitAt atomic.Int64 // the deadline the shard waits for, UnixNano (0: none)
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
	if t.tx == nil || !t.mu.TryLock() {
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
		c.Wake()
	}
	return true
}

// Stats returns the sum of every shard's counters.
func (e *Engine) Stats() Stats {
	var s Stats
	for _, c := range e.conns {
		s = s.Add(c.Stats())
	}
	return s
}

// Failed is closed when a shard stops on an error; Stop then returns it.
func (e *Engine) Failed() <-chan struct{} { return e.failed }

// Stop stops every shard, waits for them, closes the backend and returns the
// first error a shard or a close met.
func (e *Engine) Stop() error {
	e.stop.Store(true)
	for _, c := range e.conns {
		c.Wake()
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
	for _, c := range e.conns {
		c.Wake()
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
	c, h, t := e.conns[i], e.handlers[i], &e.turns[i]
	rx := make([]Packet, e.cfg.Batch)
	tx := make([]Packet, e.cfg.Batch)
	for !e.stop.Load() {
		t.mu.Lock()
		now := time.Now()
		n, err := c.Recv(rx)
		if err != nil {
			t.mu.Unlock()
			e.fail(i, err)
			return
		}
		if n > 0 {
			h.Receive(rx[:n], now)
			c.Release(rx[:n])
		}
		more, err := flush(c, h, tx, now)
		if err != nil {
			t.mu.Unlock()
			e.fail(i, err)
			return
		}
		// A full batch may have left more behind: read again at once. A
		// partial one drained the backend, so go to Wait, which returns at
		// once if more has come (one system call saved per wake-up).
		if n == len(rx) || more {
			t.mu.Unlock()
			continue
		}
		dl := h.Deadline()
		if dl.IsZero() {
			t.waitAt.Store(0)
		} else {
			t.waitAt.Store(dl.UnixNano())
		}
		t.mu.Unlock()
		if dl.IsZero() || dl.After(now) {
			if err := c.Wait(dl); err != nil {
				e.fail(i, err)
				return
			}
		}
	}
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
