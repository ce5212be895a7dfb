package mesh

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/transport"
	"github.com/mxp-dataplane/mxp/wire"
)

// AgentConfig describes an agent.
type AgentConfig struct {
	// Name and Capabilities are what the agent registers; other agents
	// discover it by capability. Events are delivered to agents that list
	// the event's topic as a capability.
	Name         string
	Capabilities []string
	// ID is the agent's ID; a random one when zero.
	ID wire.UUID
	// Node is the node's mxp:// URL (mxp://mxpk_...@host:port).
	Node string
	// Identity is the agent's key pair; a fresh one when zero.
	Identity crypto.Identity
	// HeartbeatInterval: how often to heartbeat (match the node's). Default 1 s.
	HeartbeatInterval time.Duration
	// Listen is the local address; default the unspecified address of the
	// node's family, port 0.
	Listen netip.AddrPort
	// Advertise is the address other agents reach this one at (registered
	// with the node, used by Direct callers); default the bound address,
	// with loopback for an unspecified one.
	Advertise netip.AddrPort
	// Direct makes calls to agents found by Discover go straight to them
	// (their endpoint and static key come with the discovery result),
	// instead of through the node: one network hop instead of two.
	Direct bool
	// Backend is the dataplane backend; "portable" by default: an agent
	// has one connection, and AF_XDP or io_uring pay off on nodes.
	Backend string
	// BusyPoll is how long the agent's shard polls for packets before it
	// parks (dataplane.Config.BusyPoll; 0: off).
	BusyPoll time.Duration
}

// Request is an incoming call.
type Request struct {
	Method    string
	Body      []byte // the Request and its Body are valid until the handler returns
	TraceID   uint64
	MessageID uint64
}

// HandlerFunc serves calls to one method. Returning an *Error sends its
// code; any other error is sent as CodeInternal. The returned bytes are
// copied into the reply before the handler's Request is reused, so a
// handler may return req.Body or a slice of it.
type HandlerFunc func(ctx context.Context, req *Request) ([]byte, error)

// StreamHandlerFunc serves streams opened to one method: req is the opening
// request; the handler sends and receives on s.
type StreamHandlerFunc func(ctx context.Context, req *Request, s *Stream) error

// EventFunc receives events on a topic.
type EventFunc func(ctx context.Context, topic string, data []byte)

// Error is a failure that crossed the wire as an Error message.
type Error struct {
	Code    wire.ErrorCode
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("mxp error %d: %s", e.Code, e.Message) }

// Errors of the SDK.
var (
	ErrNotConnected = errors.New("mesh: not connected to the node")
	ErrClosed       = errors.New("mesh: agent or client closed")
)

// Agent is an MXP agent connected to a node.
type Agent struct {
	caller // its requests (calls, discovery, registration), through its shard
	cfg    AgentConfig
	target Target
	h      *host

	conn       *transport.Conn               // shard goroutine only
	direct     map[wire.UUID]*transport.Conn // shard goroutine only: direct connections to agents
	registered atomic.Bool
	hbSeq      atomic.Uint64
	stop       chan struct{}
	done       chan struct{}

	handlers atomic.Pointer[map[string]handler] // copied on write: read on every call

	mu             sync.Mutex
	serving        atomic.Bool // a handler of any kind is set (serves)
	streamHandlers map[string]StreamHandlerFunc
	eventHandlers  map[string]EventFunc
	known          map[wire.UUID]wire.DiscoveredAgent // from Discover
	streams        map[wire.UUID]*Stream
	regWait        []chan struct{}

	nRegistrations, nReconnects, nCalls, nServed, nPanics atomic.Uint64
}

// AgentStats counts what an agent did.
type AgentStats struct {
	Registrations, Reconnects, Calls, Served, HandlerPanics uint64
}

// NewAgent prepares an agent; Start connects it.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	t, err := ParseURL(cfg.Node)
	if err != nil {
		return nil, err
	}
	if cfg.ID == (wire.UUID{}) {
		rand.Read(cfg.ID[:])
	}
	if cfg.Identity.Public.IsZero() {
		if cfg.Identity, err = crypto.GenerateIdentity(nil); err != nil {
			return nil, err
		}
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.Backend == "" {
		cfg.Backend = "portable"
	}
	if !cfg.Listen.IsValid() {
		if t.Addr.Addr().Is4() {
			cfg.Listen = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
		} else {
			cfg.Listen = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
		}
	}
	a := &Agent{
		cfg: cfg, target: t,
		streamHandlers: map[string]StreamHandlerFunc{},
		eventHandlers:  map[string]EventFunc{},
		streams:        map[wire.UUID]*Stream{},
		known:          map[wire.UUID]wire.DiscoveredAgent{}, direct: map[wire.UUID]*transport.Conn{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	a.handlers.Store(&map[string]handler{})
	a.pending, a.route = map[uint64]*outCall{}, a.routeRequest
	return a, nil
}

// ID returns the agent's ID.
func (a *Agent) ID() wire.UUID { return a.cfg.ID }

// URL is the agent's own mxp:// URL (its static key, the address it
// advertises, its ID): what a client dials to reach it directly. Valid once
// Start returned.
func (a *Agent) URL() string { return FormatURL(a.cfg.Identity.Public, a.endpoint(), a.cfg.ID) }

type handler struct {
	method string
	fn     HandlerFunc
	inline bool
}

// Handle serves calls to method, each on a goroutine of its own.
func (a *Agent) Handle(method string, fn HandlerFunc) { a.setHandler(method, handler{fn: fn}) }

// HandleInline serves calls to method on the goroutine that received them
// (the dataplane shard's), with no goroutine started and no hand-over back
// to the shard for the reply: the lowest latency a handler can have. fn must
// be short and must never block (no I/O, no locks held for long, no calls
// to other agents: a call's reply would have to come through the very
// shard fn is holding up); while it runs, every other message on the shard
// waits. Use Handle for anything else.
func (a *Agent) HandleInline(method string, fn HandlerFunc) {
	a.setHandler(method, handler{fn: fn, inline: true})
}

func (a *Agent) setHandler(method string, h handler) {
	a.mu.Lock()
	defer a.mu.Unlock()
	old := *a.handlers.Load()
	hs := make(map[string]handler, len(old)+1)
	for k, v := range old {
		hs[k] = v
	}
	h.method = method
	hs[method] = h
	a.handlers.Store(&hs)
	a.serving.Store(true)
}

// mayLend (events): an agent that answers anything that comes unasked
// (calls, streams, events), or has a stream open, keeps its shard's wait
// (shard.MayLend): such messages would stay unread until the shard took
// it back.
func (a *Agent) mayLend() bool {
	if a.serving.Load() {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.streams) == 0
}

// HandleStream serves streams opened to method.
func (a *Agent) HandleStream(method string, fn StreamHandlerFunc) {
	a.mu.Lock()
	a.streamHandlers[method] = fn
	a.mu.Unlock()
	a.serving.Store(true)
}

// OnEvent receives events on topic (add the topic to Capabilities so the
// node delivers them).
func (a *Agent) OnEvent(topic string, fn EventFunc) {
	a.mu.Lock()
	a.eventHandlers[topic] = fn
	a.mu.Unlock()
	a.serving.Store(true)
}

// Start connects to the node and registers; it returns once registered.
// The agent then heartbeats, and reconnects and registers again whenever
// the connection is lost (a node restart), until Close.
func (a *Agent) Start(ctx context.Context) error {
	h, err := startHost(HostConfig{Listen: a.cfg.Listen, Identity: a.cfg.Identity, Backend: a.cfg.Backend, BusyPoll: a.cfg.BusyPoll}, a)
	if err != nil {
		return err
	}
	a.h, a.sh = h, h.shards[0]
	go a.heartbeats()
	wait := a.registeredChan()
	a.sh.do(a.dial)
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		// Read on the shard; a shard that does not run it within doWait's
		// second may still run it later, so its result is read only when
		// doWait says it ran.
		state, got := "the agent's shard did not answer", ""
		if a.sh.doWait(func(time.Time) { got = a.connState() }) {
			state = got
		}
		a.Close()
		return fmt.Errorf("mesh: registering with %v (%s): %w", a.target.Addr, state, ctx.Err())
	}
}

// connState says how far the connection to the node got, for a
// registration that timed out. Shard goroutine only.
func (a *Agent) connState() string {
	switch c := a.conn; {
	case c == nil:
		return "not connected, dialling again"
	case !c.Established():
		return "the node has not answered the handshake"
	default:
		s := c.Stats()
		return fmt.Sprintf("connected, the registration not acknowledged: %d packets sent, %d received", s.PacketsSent, s.PacketsReceived)
	}
}

// Close unregisters (by closing the connection) and stops the agent.
func (a *Agent) Close() error {
	if a.closed.Swap(true) {
		return nil
	}
	close(a.stop)
	<-a.done
	if a.h == nil {
		return nil
	}
	a.sh.doWait(func(now time.Time) {
		// Every connection: the node's, and the direct ones (ours to other
		// agents, other agents' and clients' to us), so their peers fail
		// what waits on them at once rather than at an idle timeout.
		for _, c := range a.sh.ep.Conns() {
			c.Close(transport.CodeNoError, "agent closing", now)
		}
	})
	time.Sleep(10 * time.Millisecond) // let the close frame leave
	a.failPending(ErrClosed)
	return a.h.stop()
}

func (a *Agent) registeredChan() chan struct{} {
	ch := make(chan struct{})
	a.mu.Lock()
	a.regWait = append(a.regWait, ch)
	a.mu.Unlock()
	return ch
}

// dial runs on the shard.
func (a *Agent) dial(now time.Time) {
	if a.closed.Load() {
		return
	}
	c, err := a.sh.ep.Dial(a.target.Addr, a.target.Key, now)
	if err != nil {
		a.retry()
		return
	}
	a.conn = c
}

func (a *Agent) retry() {
	time.AfterFunc(200*time.Millisecond, func() {
		if !a.closed.Load() {
			a.sh.do(a.dial)
		}
	})
}

func (a *Agent) register(now time.Time) {
	if a.conn == nil {
		return
	}
	rec := wire.AgentRecord{ID: a.cfg.ID, Name: a.cfg.Name, Capabilities: a.cfg.Capabilities, Endpoint: a.endpoint()}
	oc := &outCall{ch: make(chan struct{}, 1)}
	oc.m = wire.Message{Type: wire.TypeAgentRegister, MessageID: a.nextID.Add(1), TraceID: traceFor(context.Background()), Payload: encodePayload(&wire.AgentRegister{AgentRecord: rec})}
	a.pmu.Lock()
	a.addPending(oc)
	a.pmu.Unlock()
	a.sh.send(a.conn, &oc.m)
	go func() {
		if !oc.block(a.stop) {
			return
		}
		if m := oc.reply; !oc.failed && m.Type == wire.TypeAck {
			a.nRegistrations.Add(1)
			a.mu.Lock()
			waits := a.regWait
			a.regWait = nil
			a.mu.Unlock()
			a.registered.Store(true)
			for _, w := range waits {
				close(w)
			}
		}
	}()
}

func (a *Agent) endpoint() netip.AddrPort {
	if a.cfg.Advertise.IsValid() {
		return a.cfg.Advertise
	}
	ap := a.h.Addr()
	if ap.Addr().IsUnspecified() {
		if a.target.Addr.Addr().Is4() {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), ap.Port())
		}
		return netip.AddrPortFrom(netip.IPv6Loopback(), ap.Port())
	}
	return ap
}

func (a *Agent) heartbeats() {
	defer close(a.done)
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-a.stop:
			return
		case <-t.C:
			hb := encodePayload(&wire.AgentHeartbeat{AgentID: a.cfg.ID, Sequence: a.hbSeq.Add(1), Status: wire.StatusHealthy})
			id := a.nextID.Add(1)
			a.sh.do(func(time.Time) {
				if a.conn != nil && a.conn.Established() {
					a.sh.send(a.conn, &wire.Message{Type: wire.TypeAgentHeartbeat, MessageID: id, Payload: hb})
				}
			})
		}
	}
}

func (a *Agent) onEvent(sh *shard, ev transport.Event) {
	switch ev.Kind {
	case transport.EventConnected:
		if ev.Conn == a.conn {
			a.register(time.Now())
		}
	case transport.EventClosed:
		for id, c := range a.direct {
			if c == ev.Conn {
				delete(a.direct, id) // dialled again on the next call
			}
		}
		if ev.Conn != a.conn {
			// A direct connection (ours to another agent, or one that
			// called us): what waits on it fails now, not at its deadline.
			a.failRequestsOn(ev.Conn)
			a.failStreamsOn(ev.Conn, ErrNotConnected)
			return
		}
		a.conn = nil
		a.registered.Store(false)
		a.failPending(ErrNotConnected)
		if !a.closed.Load() {
			a.nReconnects.Add(1)
			a.retry()
		}
	}
}

func (a *Agent) failPending(err error) {
	a.failRequests()
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, s := range a.streams {
		delete(a.streams, id)
		s.fail(err)
	}
}

// onMessage runs on the shard goroutine.
func (a *Agent) onMessage(sh *shard, c *transport.Conn, m *wire.Message) {
	switch m.Type {
	case wire.TypeAck, wire.TypeResponse, wire.TypeAgentDiscover, wire.TypeError:
		id := m.MessageID
		if m.Type == wire.TypeAgentDiscover && len(m.Payload) >= 9 {
			id = binary.LittleEndian.Uint64(m.Payload[1:])
		}
		if a.deliver(id, m) {
			return
		}
		if m.Type == wire.TypeError {
			var e wire.ErrorPayload
			if e.DecodePayload(m.Payload) == nil && e.Code == wire.CodeNotFound && a.conn == c {
				a.register(time.Now()) // the node forgot us (evicted): register again
			}
		}
	case wire.TypeCall:
		a.serveCall(sh, c, m)
	case wire.TypeEvent:
		var ev wire.Event
		if ev.DecodePayload(m.Payload) != nil {
			return
		}
		a.mu.Lock()
		fn := a.eventHandlers[ev.Topic]
		a.mu.Unlock()
		if fn != nil {
			data := append([]byte(nil), ev.Data...)
			ctx := WithTrace(context.Background(), m.TraceID)
			go fn(ctx, ev.Topic, data)
		}
	case wire.TypeStreamOpen, wire.TypeStreamChunk, wire.TypeStreamClose:
		a.onStreamMessage(sh, c, m)
	}
}

// splitMethod parses call data: u16 method length | method | body.
func splitMethod(data []byte) (method, body []byte, ok bool) {
	if len(data) < 2 {
		return nil, nil, false
	}
	n := int(binary.LittleEndian.Uint16(data))
	if len(data)-2 < n {
		return nil, nil, false
	}
	return data[2 : 2+n], data[2+n:], true
}

// appendMethod appends call data (u16 method length | method | body) to dst.
func appendMethod(dst []byte, method string, body []byte) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(method)))
	dst = append(dst, method...)
	return append(dst, body...)
}

func (a *Agent) serveCall(sh *shard, c *transport.Conn, m *wire.Message) {
	var call wire.Call
	if call.DecodePayload(m.Payload) != nil {
		sendError(sh, c, m.MessageID, m.TraceID, wire.CodeBadRequest, "malformed call")
		return
	}
	mb, body, ok := splitMethod(call.Data)
	if !ok {
		sendError(sh, c, m.MessageID, m.TraceID, wire.CodeBadRequest, "malformed call data")
		return
	}
	hd := (*a.handlers.Load())[string(mb)] // no allocation for the lookup
	if hd.fn == nil {
		sendError(sh, c, m.MessageID, m.TraceID, wire.CodeNotFound, "no method "+string(mb))
		return
	}
	method := hd.method // the registered name: no string made per call
	ic := inCallPool.Get().(*inCall)
	ic.a, ic.sh, ic.c, ic.fn = a, sh, c, hd.fn
	ic.deadline = time.Time{}
	if call.TimeoutSeconds > 0 {
		ic.deadline = sh.clock().Add(time.Duration(call.TimeoutSeconds) * time.Second)
	}
	if hd.inline {
		sh.kept++
		ic.req = Request{Method: method, Body: body, TraceID: m.TraceID, MessageID: m.MessageID}
		ic.serve()
		ic.send(time.Time{})
		return
	}
	ic.body = append(ic.body[:0], body...)
	ic.req = Request{Method: method, Body: ic.body, TraceID: m.TraceID, MessageID: m.MessageID}
	go ic.asyncFn()
}

// inCall is one call an agent serves: pooled, so serving a call costs no
// allocation beyond the handler's context.
type inCall struct {
	a        *Agent
	sh       *shard
	c        *transport.Conn
	fn       HandlerFunc
	deadline time.Time // the call's, from its timeout (zero: none)
	req      Request
	body     []byte // req.Body's storage
	reply    wire.Message
	rbuf     []byte // reply.Payload's storage
	sendFn   func(time.Time)
	asyncFn  func() // serveAsync
}

// serveAsync is a handler goroutine: serve, then hand the reply to the shard.
func (ic *inCall) serveAsync() {
	ic.serve()
	ic.sh.do(ic.sendFn)
}

var inCallPool sync.Pool

func init() {
	inCallPool.New = func() any {
		ic := &inCall{}
		ic.sendFn, ic.asyncFn = ic.send, ic.serveAsync
		return ic
	}
}

// serve runs the handler and encodes its reply.
func (ic *inCall) serve() {
	ctx := newHandlerCtx(ic.req.TraceID, ic.deadline)
	defer ctx.end(context.Canceled)
	out, err := ic.a.runHandler(ctx, ic.fn, &ic.req)
	ic.a.nServed.Add(1)
	id := ic.req.MessageID
	ic.reply = wire.Message{Type: wire.TypeResponse, MessageID: id, TraceID: ic.req.TraceID}
	if err != nil {
		code, msg := wire.CodeInternal, err.Error()
		var me *Error
		if errors.As(err, &me) {
			code, msg = me.Code, me.Message
		}
		ic.reply.Type = wire.TypeError
		ic.rbuf, err = (&wire.ErrorPayload{InReplyTo: id, Code: code, Message: msg}).AppendPayload(ic.rbuf[:0])
	} else {
		// The response data is the payload's tail: encode the head, append it.
		ic.rbuf, err = (&wire.Response{CallID: id}).AppendPayload(ic.rbuf[:0])
		ic.rbuf = append(ic.rbuf, out...)
	}
	if err != nil {
		panic("mesh: encoding a reply: " + err.Error())
	}
	ic.reply.Payload = ic.rbuf
}

// send runs on the shard: the transport copies the reply, so the call goes
// back to the pool.
func (ic *inCall) send(time.Time) {
	ic.sh.send(ic.c, &ic.reply)
	body, rbuf, sendFn, asyncFn := ic.body, ic.rbuf, ic.sendFn, ic.asyncFn
	if cap(body) > 64<<10 {
		body = nil
	}
	if cap(rbuf) > 64<<10 {
		rbuf = nil
	}
	*ic = inCall{body: body[:0], rbuf: rbuf[:0], sendFn: sendFn, asyncFn: asyncFn}
	inCallPool.Put(ic)
}

// runHandler runs fn, turning a panic into an error.
func (a *Agent) runHandler(ctx context.Context, fn HandlerFunc, req *Request) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			a.nPanics.Add(1)
			out, err = nil, &Error{Code: wire.CodeInternal, Message: fmt.Sprint("handler panicked: ", r)}
		}
	}()
	return fn(ctx, req)
}

// directTo returns the direct connection to agent id, dialling it if
// needed, or nil to go through the node. Shard goroutine only.
func (a *Agent) directTo(id wire.UUID, now time.Time) *transport.Conn {
	if c := a.direct[id]; c != nil && c.Err() == nil {
		return c
	}
	a.mu.Lock()
	peer, ok := a.known[id]
	a.mu.Unlock()
	if !ok || peer.Key == ([32]byte{}) || !peer.Endpoint.IsValid() {
		return nil
	}
	c, err := a.sh.ep.Dial(peer.Endpoint, crypto.PublicKey(peer.Key), now)
	if err != nil {
		return nil
	}
	a.direct[id] = c
	return c
}

// routeRequest picks the connection for a request, on the shard: the
// direct one to the agent it names, else the node's.
func (a *Agent) routeRequest(oc *outCall, now time.Time) *transport.Conn {
	if oc.via != (wire.UUID{}) {
		if c := a.directTo(oc.via, now); c != nil {
			return c
		}
	}
	if a.conn == nil || !a.conn.Established() {
		return nil
	}
	return a.conn
}

// Call calls method on the agent target and returns its response. The
// context's deadline travels in the call (whole seconds, rounded up); its
// trace ID (or a new one) travels in every message of the call.
func (a *Agent) Call(ctx context.Context, target wire.UUID, method string, body []byte) ([]byte, error) {
	a.nCalls.Add(1)
	via := wire.UUID{}
	if a.cfg.Direct {
		via = target // routeRequest goes through the node when target is not known (directTo)
	}
	return a.call(ctx, target, method, body, via)
}

// Discover lists the agents registered with the node that offer capability
// ("" lists all), with their endpoints and static keys.
func (a *Agent) Discover(ctx context.Context, capability string) ([]wire.DiscoveredAgent, error) {
	r, err := a.request(ctx, &wire.AgentDiscover{Kind: wire.DiscoverQuery, Capability: capability})
	if err != nil {
		return nil, err
	}
	var res wire.AgentDiscover
	if err := res.DecodePayload(r.Payload); err != nil {
		return nil, err
	}
	a.mu.Lock()
	for _, d := range res.Agents {
		a.known[d.ID] = d
	}
	a.mu.Unlock()
	return res.Agents, nil
}

// Emit sends an event on topic (fire and forget) to the agents that listen
// to it.
func (a *Agent) Emit(ctx context.Context, topic string, data []byte) error {
	if a.closed.Load() {
		return ErrClosed
	}
	p := encodePayload(&wire.Event{Source: a.cfg.ID, Topic: topic, Data: data})
	m := wire.Message{Type: wire.TypeEvent, MessageID: a.nextID.Add(1), TraceID: traceFor(ctx), Payload: p}
	a.sh.do(func(time.Time) {
		if a.conn != nil && a.conn.Established() {
			a.sh.send(a.conn, &m)
		}
	})
	return nil
}

// Stats returns the agent's counters.
func (a *Agent) Stats() AgentStats {
	return AgentStats{
		Registrations: a.nRegistrations.Load(), Reconnects: a.nReconnects.Load(),
		Calls: a.nCalls.Load(), Served: a.nServed.Load(), HandlerPanics: a.nPanics.Load(),
	}
}

// Registered reports whether the agent is registered with the node now.
func (a *Agent) Registered() bool { return a.registered.Load() }
