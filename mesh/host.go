// Package mesh is MXP's agent runtime: the node that registers agents and
// routes their calls, events and streams, and the Go SDK agents use. Both run
// the transport core (package transport) on the dataplane engine (package
// dataplane): one transport.Endpoint per shard, driven from the shard's
// goroutine; other goroutines hand work to a shard through its command queue.
package mesh

import (
	"context"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/backends"
	"github.com/mxp-dataplane/mxp/transport"
	"github.com/mxp-dataplane/mxp/wire"
)

// HostConfig is what a node or an agent needs to run the transport.
type HostConfig struct {
	// Listen is the local UDP address (port 0 picks one).
	Listen netip.AddrPort
	// Identity is the long-term key pair.
	Identity crypto.Identity
	// Backend is "auto" or a dataplane backend name.
	Backend string
	// Shards is the number of dataplane shards (0: 1).
	Shards int
	// Authorize, if set, is the allow-list of initiator keys.
	Authorize func(crypto.PublicKey) bool
	// BusyPoll is how long an idle shard polls before it parks
	// (dataplane.Config.BusyPoll; 0: off).
	BusyPoll time.Duration
	// connectPeer: the host hears from nobody it did not dial (a client
	// host), so its socket may connect to its one peer
	// (dataplane.Config.ConnectPeer).
	connectPeer bool
}

// loopbackDatagram is the UDP payload size used with loopback peers, and
// the largest datagram a host's dataplane takes.
const loopbackDatagram = 16 << 10

// events is what the owner of a host (node or agent) reacts to, on the
// shard's goroutine.
type events interface {
	onMessage(sh *shard, c *transport.Conn, m *wire.Message)
	onEvent(sh *shard, ev transport.Event)
	// mayLend reports whether nothing of the owner's waits for the shard
	// other than its requests (shard.MayLend); on the shard's goroutine.
	mayLend() bool
}

// host is the dataplane engine with one transport endpoint per shard.
type host struct {
	pool      *crypto.EphemeralPool // ephemeral keys made ahead for the shards' handshakes
	done      chan struct{}         // closed by stop
	stopOnce  sync.Once
	running   atomic.Pointer[dataplane.Engine] // set once the engine started: shard threads may run before Start returns
	shards    []*shard
	selection dataplane.Selection
	tickets   ticketStore // given to our connections, for resuming them (resume.go)
	// 0-RTT messages from resuming peers: handed on, or dropped as not
	// whole messages.
	earlyTaken, earlyDropped atomic.Uint64
}

// shard is one dataplane shard's protocol side: it implements
// dataplane.Handler around a transport.Endpoint.
type shard struct {
	idx   int
	h     *host
	ep    *transport.Endpoint
	owner events

	woken   atomic.Bool  // a wake-up is on its way: later commands need no other
	waiting atomic.Int32 // callers with requests out, and dials, waiting for the shard (caller.addPending, Dial)
	// Messages of the turn's receive batch handed to the owner, and those
	// of them it kept on the shard's turn (inline calls, replies to the
	// goroutine in await): Receive yields only for the others.
	handed, kept int
	// now is the time of the shard's latest turn (set by Receive and
	// Transmit): what runs on the shard in a turn reads it (clock) instead
	// of the clock.
	now     time.Time
	queued  atomic.Uint64 // commands queued so far (Receive yields while it grows)
	mu      sync.Mutex
	cmds    []func(now time.Time)
	running []func(now time.Time)
	tpkts   []transport.Packet
	backlog map[*transport.Conn][]backlogged

	in           inbox
	drainInboxFn func(time.Time) // sh.drainInbox, made once
	kicks        []*shard        // shards given work this turn (kickLater)
	scratch      []byte          // a payload being rewritten (node replies)
}

// inbox holds messages other shards forward to connections this shard
// owns: their payloads copied into one arena, handed over by one shard
// command per batch (not a closure and a copy per message).
type inbox struct {
	mu         sync.Mutex
	msgs       []fwdMsg
	arena      []byte
	spare      []fwdMsg // drained buffers, reused
	spareArena []byte
	queued     bool // a drain command is on its way
}

type fwdMsg struct {
	c      *transport.Conn
	m      wire.Message // Payload is arena[off:off+n]; with encoded, only Type counts (the class)
	off, n int
	// encoded: arena[off:off+n] holds whole encoded messages, passed on
	// as they are (a relay's stream chunks: no decode, re-encode, re-hash).
	encoded bool
}

// forwardIn queues m for c, a connection of sh, from another shard's turn,
// which then kicks sh (kickLater).
func (sh *shard) forwardIn(c *transport.Conn, m *wire.Message) {
	f := fwdMsg{c: c, m: *m}
	f.m.Payload = nil
	sh.inboxAdd(f, m.Payload)
}

// forwardEncodedIn queues raw, whole encoded messages of type t's class,
// for c, a connection of sh, as forwardIn does. Consecutive ones for the
// same connection and class join one entry, sent with one Conn.SendEncoded.
func (sh *shard) forwardEncodedIn(c *transport.Conn, t wire.MsgType, raw []byte) {
	sh.inboxAdd(fwdMsg{c: c, m: wire.Message{Type: t}, encoded: true}, raw)
}

// inboxAdd copies data into the inbox's arena as f's bytes and queues the
// drain command with the inbox's first entry.
func (sh *shard) inboxAdd(f fwdMsg, data []byte) {
	in := &sh.in
	in.mu.Lock()
	if k := len(in.msgs); f.encoded && k > 0 {
		last := &in.msgs[k-1]
		if last.encoded && last.c == f.c && classOf(last.m.Type) == classOf(f.m.Type) && last.off+last.n == len(in.arena) {
			in.arena = append(in.arena, data...)
			last.n += len(data)
			in.mu.Unlock()
			return // the drain is queued already: the entry was
		}
	}
	f.off, f.n = len(in.arena), len(data)
	in.arena = append(in.arena, data...)
	in.msgs = append(in.msgs, f)
	first := !in.queued
	in.queued = true
	in.mu.Unlock()
	if first {
		sh.enqueue(sh.drainInboxFn) // kicked by the forwarding shard (kickLater)
	}
}

// onMessage hands m, which came on c, to the owner, counting it for
// Receive's yield rule (handed and kept).
func (sh *shard) onMessage(c *transport.Conn, m *wire.Message) {
	sh.handed++
	sh.owner.onMessage(sh, c, m)
}

// drainInbox sends what other shards forwarded, in order; on the shard.
func (sh *shard) drainInbox(time.Time) {
	in := &sh.in
	in.mu.Lock()
	msgs, arena := in.msgs, in.arena
	in.msgs, in.arena = in.spare[:0], in.spareArena[:0]
	in.queued = false
	in.mu.Unlock()
	for i := range msgs {
		f := &msgs[i]
		if f.encoded {
			sh.sendEncoded(f.c, classOf(f.m.Type), arena[f.off:f.off+f.n])
		} else {
			f.m.Payload = arena[f.off : f.off+f.n]
			sh.send(f.c, &f.m) // copies the payload
		}
		msgs[i] = fwdMsg{}
	}
	if cap(arena) > 4<<20 {
		arena = nil // a burst of big messages: do not keep its arena
	}
	in.mu.Lock()
	in.spare, in.spareArena = msgs[:0], arena[:0]
	in.mu.Unlock()
}

func startHost(cfg HostConfig, owner events) (*host, error) {
	if cfg.Backend == "" {
		cfg.Backend = "auto"
	}
	dcfg := dataplane.Config{Addr: cfg.Listen, Shards: max(cfg.Shards, 1), BusyPoll: cfg.BusyPoll, ConnectPeer: cfg.connectPeer}
	sel, err := dataplane.Select(cfg.Backend, dcfg, backends.Candidates())
	if err != nil {
		return nil, err
	}
	// Loopback peers get large packets (loopback's MTU is 64 KiB, and the
	// TCP-based systems MXP is compared with use it too): a tenth of the
	// packets, seals and opens, headers and acknowledgements of 1400-byte
	// ones. A backend's send buffers bound what it can send (AF_XDP's
	// frames hold a standard MTU), and the transport fills no packet past
	// its buffer.
	dcfg.MaxDatagram = loopbackDatagram
	maxDgramFor := func(peer netip.AddrPort) int {
		if peer.Addr().Unmap().IsLoopback() {
			return loopbackDatagram
		}
		return 0
	}
	h := &host{selection: sel, shards: make([]*shard, dcfg.Shards), done: make(chan struct{}),
		pool: crypto.NewEphemeralPool(16, nil)}
	// The shards' handshakes share a static-secret cache (repeat peers skip
	// the static-static DH) and the pool (the ephemeral key is made before
	// a peer waits for it): 3 X25519 multiplications per handshake on the
	// critical path instead of 5.
	cache := crypto.NewStaticSecretCache(0)
	// One ticket key ring and strike register for all shards: a resuming
	// peer may reach any of them, and a ticket's 0-RTT data must be taken
	// once per process, not once per shard.
	ticketKeys, err := crypto.NewTicketKeys(nil, time.Now(), 0)
	if err != nil {
		return nil, err
	}
	strike := crypto.NewStrikeRegister(0)
	shards := h.shards
	var setupErr error
	newHandler := func(i int) dataplane.Handler {
		sh := &shard{idx: i, h: h, owner: owner}
		sh.drainInboxFn = sh.drainInbox
		ccfg := &crypto.Config{Identity: cfg.Identity, Authorize: cfg.Authorize, TicketKeys: ticketKeys, Strike: strike}
		ep, err := transport.NewEndpoint(transport.Config{
			Crypto: ccfg, Shard: i, Shards: dcfg.Shards, MaxDatagramSizeFor: maxDgramFor,
			OnMessage: sh.onMessage,
		})
		if err == nil {
			err = ep.UseHandshakeCaches(cache, h.pool)
		}
		if err != nil && setupErr == nil {
			setupErr = err
		}
		sh.ep = ep
		shards[i] = sh
		return sh
	}
	e, err := dataplane.Start(sel.Backend, dcfg, newHandler)
	if err != nil {
		return nil, err
	}
	if setupErr != nil {
		e.Stop()
		return nil, setupErr
	}
	h.running.Store(e)
	go h.refill()
	return h, nil
}

// refill keeps the ephemeral pool full, off the handshakes' critical path.
func (h *host) refill() {
	for {
		if _, err := h.pool.Fill(); err != nil {
			return // no randomness: handshakes make their own keys (and fail the same way)
		}
		select {
		case <-h.pool.Low():
		case <-h.done:
			return
		}
	}
}

// Addr is the bound UDP address.
// engine is the host's dataplane engine (once startHost returned).
func (h *host) engine() *dataplane.Engine { return h.running.Load() }

func (h *host) Addr() netip.AddrPort { return h.engine().Conn(0).LocalAddr() }

func (h *host) stop() error {
	h.stopOnce.Do(func() { close(h.done) })
	return h.engine().Stop()
}

// do runs fn on the shard's behalf soon: on the calling goroutine when the
// shard is waiting (a send turn of its own: the work leaves at once, no
// goroutine switch), else on the shard's goroutine, which is woken. For one
// piece of work that should leave at once: a call, a reply.
func (sh *shard) do(fn func(now time.Time)) {
	sh.enqueue(fn)
	sh.kick()
}

// doWait runs fn on the shard (do) and waits for it to finish, for a
// second at most (a shard that stopped never runs it); it reports whether
// fn ran.
func (sh *shard) doWait(fn func(now time.Time)) bool {
	done := make(chan struct{})
	sh.do(func(now time.Time) {
		fn(now)
		close(done)
	})
	select {
	case <-done:
		return true
	case <-time.After(time.Second):
		return false
	}
}

// post runs fn on the shard's goroutine soon, waking it: for work that
// comes in runs (a stream's chunks), which the shard then sends in batches
// while the poster goes on.
func (sh *shard) post(fn func(now time.Time)) {
	sh.enqueue(fn)
	sh.wake()
}

func (sh *shard) enqueue(fn func(now time.Time)) {
	sh.mu.Lock()
	sh.cmds = append(sh.cmds, fn)
	sh.mu.Unlock()
	sh.queued.Add(1)
}

// kick runs a send turn for the queued commands here if the shard waits,
// else wakes it.
func (sh *shard) kick() {
	e := sh.h.running.Load()
	if e == nil {
		return // not started yet: the shard's first turn runs the commands
	}
	if !e.TryTurn(sh.idx) {
		sh.wake()
	}
}

// MayLend (dataplane.Lender): the shard lends its wait to a goroutine in
// await only while nothing else waits for it: no request or dial out, and
// its owner agrees (an agent with no stream, serving nothing: calls and
// events to a server come unasked, and while the wait is free they would
// wait for the shard to take it back, up to a millisecond or two, the
// network poller's timer resolution). The one that will borrow it is the
// next request.
func (sh *shard) MayLend() bool { return sh.waiting.Load() == 0 && sh.owner.mayLend() }

// reclaim has the shard's goroutine take its wait back if lent and unused
// (a stream opened: its reader waits for the shard's goroutine).
func (sh *shard) reclaim() {
	if e := sh.h.running.Load(); e != nil {
		e.Reclaim(sh.idx)
	}
}

// awaitSlice bounds a wait in await: what takes longer is waited for the
// usual way (the shard's goroutine takes its wait back).
const awaitSlice = time.Millisecond

// await waits until done reports true (a request's reply came, a dial
// completed) on the calling goroutine, running the shard's turns itself
// (dataplane.Engine.Await) when it is the only request or dial waiting
// (its caller checked it has no other request out; waiting is 1)
// and the shard has lent its wait: the reply then wakes this goroutine
// from the network poller, not through the shard's goroutine, which on a
// machine with an idle CPU would wake another thread. led, if not nil, is
// set meanwhile. It reports whether done did; if not, wait the usual way.
// now is the caller's latest clock reading (zero: none, await reads it).
func (sh *shard) await(ctx context.Context, done func() bool, led *atomic.Bool, now time.Time) bool {
	e := sh.h.running.Load()
	if e == nil || sh.waiting.Load() != 1 || !e.Lends(sh.idx) {
		return false
	}
	if now.IsZero() {
		now = time.Now()
	}
	until := now.Add(awaitSlice)
	if dl, ok := ctx.Deadline(); ok && dl.Before(until) {
		until = dl
	}
	if led != nil {
		led.Store(true)
	}
	ok := e.Await(sh.idx, done, until, now)
	if led != nil {
		led.Store(false)
	}
	if ok && !sh.MayLend() {
		// Requests or streams came while we held the wait: they wait for
		// the shard's goroutine.
		e.Reclaim(sh.idx)
	}
	return ok
}

func (sh *shard) wake() {
	e := sh.h.running.Load()
	if e == nil {
		return
	}
	if sh.woken.CompareAndSwap(false, true) {
		e.Wake(sh.idx) // one wake-up per batch of commands, not per command
	}
}

// kickLater notes, on this shard's goroutine, that shard to got work from
// this turn: kickPending kicks it once the turn's messages are all handed
// over, so they leave in one send.
func (sh *shard) kickLater(to *shard) {
	for _, k := range sh.kicks {
		if k == to {
			return
		}
	}
	sh.kicks = append(sh.kicks, to)
}

func (sh *shard) kickPending() {
	for i, k := range sh.kicks {
		k.kick()
		sh.kicks[i] = nil
	}
	sh.kicks = sh.kicks[:0]
}

func (sh *shard) runCommands(now time.Time) {
	if sh.woken.Load() { // stored only if set: a store is a locked instruction
		sh.woken.Store(false) // before taking the queue: a later command wakes us again
	}
	sh.mu.Lock()
	sh.running, sh.cmds = sh.cmds, sh.running[:0]
	sh.mu.Unlock()
	for i, fn := range sh.running {
		fn(now)
		sh.running[i] = nil
	}
}

func (sh *shard) drainEvents() (any bool) {
	if !sh.ep.HasEvents() {
		return false // the usual case, three times a turn: no event to copy out
	}
	for {
		ev, ok := sh.ep.PollEvent()
		if !ok {
			return any
		}
		// A stream's send buffer draining readies nobody: the shard
		// sends its own backlog. Other events may (dialers, closes).
		any = any || ev.Kind != transport.EventStreamWritable
		switch ev.Kind {
		case transport.EventStreamWritable, transport.EventConnected:
			if len(sh.backlog[ev.Conn]) > 0 {
				sh.flushBacklog(ev.Conn)
			}
		case transport.EventClosed:
			delete(sh.backlog, ev.Conn)
		case transport.EventTicket:
			sh.h.tickets.put(ev.Conn.Peer(), ev.Ticket)
		case transport.EventEarlyData:
			sh.deliverEarly(ev.Conn, ev.Data)
		}
		sh.owner.onEvent(sh, ev)
	}
}

// Receive implements dataplane.Handler.
// clock is the time of the shard's turn, for code that runs in one (an
// inbound message, a command); before the first turn, the clock's.
func (sh *shard) clock() time.Time {
	if sh.now.IsZero() {
		return time.Now()
	}
	return sh.now
}

func (sh *shard) Receive(pkts []dataplane.Packet, now time.Time) {
	sh.now = now
	for _, p := range pkts {
		sh.ep.Receive(p.Buf, p.Addr, now)
	}
	events := sh.drainEvents()
	allKept := sh.handed > 0 && sh.handed == sh.kept && !events
	sh.handed, sh.kept = 0, 0
	if allKept {
		// Every message was served on this goroutine (inline calls,
		// replies to the goroutine in await): nobody to yield to, and a
		// yield would wake another thread for nothing. (A batch of
		// acknowledgements still yields: a stream's writer may have room
		// to fill.)
		sh.kickPending()
		return
	}
	// Let the goroutines this batch made runnable (callers given their
	// responses, handlers given their calls) run before the shard's
	// Transmit: what they queue then leaves in one send, instead of the
	// shard parking and being woken once per call. Yield again while the
	// last yield brought new commands (a few times at most): the woken
	// goroutines may still be running on the other P. With nothing
	// runnable this returns at once.
	for range 4 {
		n := sh.queued.Load()
		runtime.Gosched()
		if sh.queued.Load() == n {
			break
		}
	}
	sh.kickPending()
}

// Transmit implements dataplane.Handler.
func (sh *shard) Transmit(out []dataplane.Packet, now time.Time) int {
	sh.now = now
	sh.runCommands(now)
	sh.drainEvents()
	if cap(sh.tpkts) < len(out) {
		sh.tpkts = make([]transport.Packet, len(out))
	}
	tp := sh.tpkts[:len(out)]
	for i := range out {
		tp[i].Buf = out[i].Buf
	}
	n := sh.ep.Transmit(tp, now)
	for i := range n {
		out[i].Buf, out[i].Addr = tp[i].Buf, tp[i].Addr
	}
	sh.drainEvents()
	sh.kickPending()
	return n
}

// Deadline implements dataplane.Handler.
func (sh *shard) Deadline() time.Time {
	sh.mu.Lock()
	pending := len(sh.cmds) > 0
	sh.mu.Unlock()
	if pending || sh.ep.HasWork() {
		return time.Now() // more to do right away
	}
	return sh.ep.Deadline()
}
