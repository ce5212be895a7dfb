package mesh

import (
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/transport"
	"github.com/mxp-dataplane/mxp/wire"
)

// NodeConfig configures a node.
type NodeConfig struct {
	HostConfig
	// HeartbeatInterval is how often agents are expected to heartbeat; an
	// agent missing three is evicted. Default 1 s.
	HeartbeatInterval time.Duration
}

// Node is an MXP node: it holds the registry of the agents connected to it
// and routes their calls, responses, errors, events and streams.
type Node struct {
	cfg NodeConfig
	h   *host

	mu      sync.RWMutex
	agents  map[wire.UUID]*agentEntry
	byConn  map[*transport.Conn][]wire.UUID
	pmu     sync.Mutex
	pending map[uint64]*pendingCall // by the message ID the node forwarded under
	streams map[wire.UUID]*streamRoute
	nextID  atomic.Uint64

	stats       NodeStats
	msgCount    [256]atomic.Uint64
	observeCall func(time.Duration) // set by NewMetrics
	draining    atomic.Bool
	capture     atomic.Pointer[func(Captured)]
	stop        chan struct{}
	done        chan struct{}
}

// NodeStats counts what the node did; every field only grows.
type NodeStats struct {
	Registered, Evicted, Unregistered   atomic.Uint64
	Routed, NotFound, TimedOut, Dropped atomic.Uint64
}

type agentEntry struct {
	rec      wire.AgentRecord
	conn     *transport.Conn
	sh       *shard
	lastSeen atomic.Int64 // UnixNano
}

var pendingCallPool = sync.Pool{New: func() any { return new(pendingCall) }}

type pendingCall struct {
	conn     *transport.Conn
	sh       *shard
	origID   uint64
	trace    uint64
	deadline time.Time
	start    time.Time
}

type streamRoute struct {
	aConn, bConn *transport.Conn
	aSh, bSh     *shard
	aDone, bDone bool
}

// StartNode starts a node listening on cfg.Listen.
func StartNode(cfg NodeConfig) (*Node, error) {
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	n := &Node{
		cfg:     cfg,
		agents:  map[wire.UUID]*agentEntry{},
		byConn:  map[*transport.Conn][]wire.UUID{},
		pending: map[uint64]*pendingCall{},
		streams: map[wire.UUID]*streamRoute{},
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	h, err := startHost(cfg.HostConfig, n)
	if err != nil {
		return nil, err
	}
	n.h = h
	go n.housekeeping()
	return n, nil
}

// Addr is the node's UDP address.
func (n *Node) Addr() netip.AddrPort { return n.h.Addr() }

// PublicKey is the node's static key, which agents need to dial it.
func (n *Node) PublicKey() crypto.PublicKey { return n.cfg.Identity.Public }

// URL is the mxp:// URL agents use to reach the node.
func (n *Node) URL() string { return FormatURL(n.PublicKey(), n.Addr(), wire.UUID{}) }

// Backend describes the dataplane backend chosen and why.
func (n *Node) Backend() string { return n.h.selection.String() }

// Stats returns the node's counters.
func (n *Node) Stats() *NodeStats { return &n.stats }

// Agents lists the registered agents.
func (n *Node) Agents() []wire.AgentRecord {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make([]wire.AgentRecord, 0, len(n.agents))
	for _, e := range n.agents {
		out = append(out, e.rec)
	}
	slices.SortFunc(out, func(a, b wire.AgentRecord) int { return compareUUID(a.ID, b.ID) })
	return out
}

func compareUUID(a, b wire.UUID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// Drain stops taking new calls (they get Unavailable) and waits until the
// calls in flight are answered or ctx ends: graceful shutdown.
func (n *Node) Drain(ctx context.Context) {
	n.draining.Store(true)
	for {
		n.pmu.Lock()
		k := len(n.pending)
		n.pmu.Unlock()
		if k == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close stops the node: in-flight calls get no more answers through it.
func (n *Node) Close() error {
	close(n.stop)
	<-n.done
	return n.h.stop()
}

// housekeeping evicts silent agents and expires calls past their deadline.
func (n *Node) housekeeping() {
	defer close(n.done)
	t := time.NewTicker(n.cfg.HeartbeatInterval / 4)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case now := <-t.C:
			n.evictSilent(now)
			n.expireCalls(now)
		}
	}
}

func (n *Node) evictSilent(now time.Time) {
	limit := now.Add(-3 * n.cfg.HeartbeatInterval).UnixNano()
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, e := range n.agents {
		if e.lastSeen.Load() < limit {
			n.removeLocked(id, e)
			n.stats.Evicted.Add(1)
		}
	}
}

func (n *Node) removeLocked(id wire.UUID, e *agentEntry) {
	delete(n.agents, id)
	ids := n.byConn[e.conn]
	if i := slices.Index(ids, id); i >= 0 {
		ids = slices.Delete(ids, i, i+1)
	}
	if len(ids) == 0 {
		delete(n.byConn, e.conn)
	} else {
		n.byConn[e.conn] = ids
	}
}

func (n *Node) expireCalls(now time.Time) {
	n.pmu.Lock()
	var late []*pendingCall
	for id, p := range n.pending {
		if !p.deadline.IsZero() && now.After(p.deadline) {
			late = append(late, p)
			delete(n.pending, id)
		}
	}
	n.pmu.Unlock()
	for _, p := range late {
		n.stats.TimedOut.Add(1)
		p := p
		p.sh.do(func(time.Time) {
			sendError(p.sh, p.conn, p.origID, p.trace, wire.CodeDeadlineExceeded, "the call's deadline passed")
		})
	}
}

func sendError(sh *shard, c *transport.Conn, inReplyTo, trace uint64, code wire.ErrorCode, msg string) {
	p := encodePayload(&wire.ErrorPayload{InReplyTo: inReplyTo, Code: code, Message: msg})
	sh.send(c, &wire.Message{Type: wire.TypeError, MessageID: inReplyTo, TraceID: trace, Payload: p})
}

// forward sends m to c, owned by shard to: directly when it is this shard,
// else through that shard's inbox (which copies the payload).
func forward(from, to *shard, c *transport.Conn, m *wire.Message) {
	if from == to {
		from.send(c, m)
		return
	}
	to.forwardIn(c, m)
	from.kickLater(to)
}

// mayLend (events): a node makes no requests, so no Await ever asks its
// shards to lend; if one did, the calls it routes would wait.
func (n *Node) mayLend() bool { return false }

func (n *Node) onEvent(sh *shard, ev transport.Event) {
	if ev.Kind != transport.EventClosed {
		return
	}
	n.mu.Lock()
	for _, id := range n.byConn[ev.Conn] {
		if e := n.agents[id]; e != nil && e.conn == ev.Conn {
			delete(n.agents, id)
			n.stats.Unregistered.Add(1)
		}
	}
	delete(n.byConn, ev.Conn)
	n.mu.Unlock()
}

// Captured is one decrypted MXP message the node received, for debugging
// (mxpd debug capture).
type Captured struct {
	Time     time.Time
	From, To netip.AddrPort
	Message  []byte // the encoded message
}

// SetCapture makes the node hand every message it receives, decrypted and
// re-encoded, to fn (on the shard goroutines: fn must not block); nil stops.
func (n *Node) SetCapture(fn func(Captured)) {
	if fn == nil {
		n.capture.Store(nil)
		return
	}
	n.capture.Store(&fn)
}

func (n *Node) onMessage(sh *shard, c *transport.Conn, m *wire.Message) {
	sh.kept++ // a node answers or forwards on its shards: no goroutine to yield to
	n.msgCount[m.Type].Add(1)
	if fn := n.capture.Load(); fn != nil {
		enc, err := wire.AppendMessage(nil, m)
		if err == nil {
			(*fn)(Captured{Time: time.Now(), From: c.Peer(), To: n.Addr(), Message: enc})
		}
	}
	switch m.Type {
	case wire.TypeAgentRegister:
		n.register(sh, c, m)
	case wire.TypeAgentHeartbeat:
		var hb wire.AgentHeartbeat
		if hb.DecodePayload(m.Payload) != nil {
			n.stats.Dropped.Add(1)
			return
		}
		n.mu.RLock()
		e := n.agents[hb.AgentID]
		n.mu.RUnlock()
		if e == nil || e.conn != c {
			// Unknown (evicted, or the node restarted): ask it to register again.
			sendError(sh, c, m.MessageID, m.TraceID, wire.CodeNotFound, "agent not registered")
			return
		}
		e.lastSeen.Store(time.Now().UnixNano())
	case wire.TypeAgentDiscover:
		n.discover(sh, c, m)
	case wire.TypeCall:
		n.routeCall(sh, c, m)
	case wire.TypeResponse, wire.TypeError:
		n.routeReply(sh, m)
	case wire.TypeEvent:
		n.routeEvent(sh, c, m)
	case wire.TypeStreamOpen, wire.TypeStreamChunk, wire.TypeStreamClose:
		n.routeStream(sh, c, m)
	case wire.TypeAck:
	default:
		n.stats.Dropped.Add(1)
		sendError(sh, c, m.MessageID, m.TraceID, wire.CodeUnimplemented, "message type "+m.Type.String()+" is not routed")
	}
}

func (n *Node) register(sh *shard, c *transport.Conn, m *wire.Message) {
	var r wire.AgentRegister
	if err := r.DecodePayload(m.Payload); err != nil {
		n.stats.Dropped.Add(1)
		sendError(sh, c, m.MessageID, m.TraceID, wire.CodeBadRequest, err.Error())
		return
	}
	e := &agentEntry{rec: r.AgentRecord, conn: c, sh: sh}
	e.lastSeen.Store(time.Now().UnixNano())
	n.mu.Lock()
	if old := n.agents[r.ID]; old != nil {
		n.removeLocked(r.ID, old) // re-registration, maybe over a new connection
	}
	n.agents[r.ID] = e
	n.byConn[c] = append(n.byConn[c], r.ID)
	n.mu.Unlock()
	n.stats.Registered.Add(1)
	ack := encodePayload(&wire.Ack{MessageIDs: []uint64{m.MessageID}})
	sh.send(c, &wire.Message{Type: wire.TypeAck, MessageID: m.MessageID, TraceID: m.TraceID, Payload: ack})
}

func (n *Node) discover(sh *shard, c *transport.Conn, m *wire.Message) {
	var q wire.AgentDiscover
	if err := q.DecodePayload(m.Payload); err != nil || q.Kind != wire.DiscoverQuery {
		sendError(sh, c, m.MessageID, m.TraceID, wire.CodeBadRequest, "not a discovery query")
		return
	}
	res := wire.AgentDiscover{Kind: wire.DiscoverResult, QueryID: m.MessageID}
	n.mu.RLock()
	for _, e := range n.agents {
		if q.Capability == "" || slices.Contains(e.rec.Capabilities, q.Capability) {
			res.Agents = append(res.Agents, wire.DiscoveredAgent{Key: e.conn.PeerKey(), AgentRecord: e.rec})
		}
	}
	n.mu.RUnlock()
	slices.SortFunc(res.Agents, func(a, b wire.DiscoveredAgent) int { return compareUUID(a.ID, b.ID) })
	if q.Limit > 0 && len(res.Agents) > int(q.Limit) {
		res.Agents = res.Agents[:q.Limit]
	}
	sh.send(c, &wire.Message{Type: wire.TypeAgentDiscover, MessageID: m.MessageID, TraceID: m.TraceID, Payload: encodePayload(&res)})
}

func (n *Node) routeCall(sh *shard, c *transport.Conn, m *wire.Message) {
	if len(m.Payload) < 20 {
		n.stats.Dropped.Add(1)
		sendError(sh, c, m.MessageID, m.TraceID, wire.CodeBadRequest, "malformed call")
		return
	}
	if n.draining.Load() {
		sendError(sh, c, m.MessageID, m.TraceID, wire.CodeUnavailable, "node shutting down")
		return
	}
	target := wire.UUID(m.Payload[:16])
	timeout := binary.LittleEndian.Uint32(m.Payload[16:])
	n.mu.RLock()
	e := n.agents[target]
	n.mu.RUnlock()
	if e == nil {
		n.stats.NotFound.Add(1)
		sendError(sh, c, m.MessageID, m.TraceID, wire.CodeNotFound, "no agent "+target.String())
		return
	}
	id := n.nextID.Add(1)
	p := pendingCallPool.Get().(*pendingCall)
	now := sh.clock() // the turn's reading: the call came in this turn
	*p = pendingCall{conn: c, sh: sh, origID: m.MessageID, trace: m.TraceID, start: now}
	if timeout > 0 {
		p.deadline = now.Add(time.Duration(timeout) * time.Second)
	}
	n.pmu.Lock()
	n.pending[id] = p
	n.pmu.Unlock()
	n.stats.Routed.Add(1)
	fwd := *m
	fwd.MessageID = id
	forward(sh, e.sh, e.conn, &fwd)
}

// routeReply sends a Response or Error back to the caller, under the
// caller's own message ID.
func (n *Node) routeReply(sh *shard, m *wire.Message) {
	if len(m.Payload) < 8 {
		n.stats.Dropped.Add(1)
		return
	}
	id := binary.LittleEndian.Uint64(m.Payload)
	n.pmu.Lock()
	p := n.pending[id]
	delete(n.pending, id)
	n.pmu.Unlock()
	if p == nil {
		n.stats.Dropped.Add(1) // late (timed out) or unknown
		return
	}
	if n.observeCall != nil {
		n.observeCall(sh.clock().Sub(p.start))
	}
	out := *m
	out.MessageID = p.origID
	// The reply names the call by ID: the caller's, not the node's. The
	// rewritten payload lives in the shard's scratch buffer until forward
	// copied it.
	sh.scratch = append(sh.scratch[:0], m.Payload...)
	binary.LittleEndian.PutUint64(sh.scratch, p.origID)
	out.Payload = sh.scratch
	n.stats.Routed.Add(1)
	forward(sh, p.sh, p.conn, &out)
	*p = pendingCall{}
	pendingCallPool.Put(p)
}

// routeEvent delivers an event to every other agent offering its topic as a capability.
func (n *Node) routeEvent(sh *shard, c *transport.Conn, m *wire.Message) {
	var ev wire.Event
	if ev.DecodePayload(m.Payload) != nil {
		n.stats.Dropped.Add(1)
		return
	}
	type dest struct {
		c  *transport.Conn
		sh *shard
	}
	var ds []dest
	n.mu.RLock()
	for _, e := range n.agents {
		if e.conn != c && slices.Contains(e.rec.Capabilities, ev.Topic) {
			ds = append(ds, dest{e.conn, e.sh})
		}
	}
	n.mu.RUnlock()
	for _, d := range ds {
		n.stats.Routed.Add(1)
		forward(sh, d.sh, d.c, m)
	}
}

func (n *Node) routeStream(sh *shard, c *transport.Conn, m *wire.Message) {
	if len(m.Payload) < 16 {
		n.stats.Dropped.Add(1)
		return
	}
	sid := wire.UUID(m.Payload[:16])
	if m.Type == wire.TypeStreamOpen {
		var so wire.StreamOpen
		if so.DecodePayload(m.Payload) != nil {
			n.stats.Dropped.Add(1)
			return
		}
		n.mu.RLock()
		e := n.agents[so.Target]
		n.mu.RUnlock()
		if e == nil {
			n.stats.NotFound.Add(1)
			p := encodePayload(&wire.StreamClose{StreamID: sid, Code: wire.CodeNotFound, Reason: "no agent " + so.Target.String()})
			sh.send(c, &wire.Message{Type: wire.TypeStreamClose, MessageID: m.MessageID, TraceID: m.TraceID, Payload: p})
			return
		}
		n.pmu.Lock()
		n.streams[sid] = &streamRoute{aConn: c, aSh: sh, bConn: e.conn, bSh: e.sh}
		n.pmu.Unlock()
		forward(sh, e.sh, e.conn, m)
		return
	}
	n.pmu.Lock()
	r := n.streams[sid]
	if r != nil && m.Type == wire.TypeStreamClose && r.closedBy(c) {
		delete(n.streams, sid) // both directions closed
	}
	n.pmu.Unlock()
	if r == nil {
		n.stats.Dropped.Add(1)
		return
	}
	if c == r.aConn {
		relayStream(sh, r.bSh, c, r.bConn, m)
	} else if c == r.bConn {
		relayStream(sh, r.aSh, c, r.aConn, m)
	}
}

// closedBy records that the side c closed the stream and reports whether
// both sides now have.
func (r *streamRoute) closedBy(c *transport.Conn) bool {
	if c == r.aConn {
		r.aDone = true
	} else if c == r.bConn {
		r.bDone = true
	}
	return r.aDone && r.bDone
}
