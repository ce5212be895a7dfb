package mesh

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/transport"
	"github.com/mxp-dataplane/mxp/wire"
)

// Client calls one agent without registering anywhere: Dial connects it to
// the agent itself (the agent's own URL, Agent.URL: one hop) or to a node
// that routes its calls to the agent (the node's URL with the agent's ID).
//
// The clients of a process share one host per address family: one UDP
// socket and one dataplane shard, started by the first Dial and kept for
// the life of the process (as net/http's default transport keeps its
// connections), with one identity, a StaticSecretCache and an
// EphemeralPool. A Dial therefore costs one handshake — no socket, no
// goroutine — and repeat peers skip the static-static DH. The host
// accepts no connections from others.
type Client struct {
	ch     *clientHost
	target Target
	agent  wire.UUID

	conn   *transport.Conn // shard goroutine only
	ready  chan struct{}   // closed when the handshake completes or fails
	err    error           // why it failed; set before ready closes
	nextID atomic.Uint64
	closed atomic.Bool

	mu      sync.Mutex
	pending map[uint64]chan wire.Message
}

// DialOption adjusts Dial.
type DialOption func(*dialConfig)

type dialConfig struct {
	agent   wire.UUID
	timeout time.Duration
}

// WithAgent names the agent to call, for a URL that names none (a node's
// URL) or to override the one it names.
func WithAgent(id wire.UUID) DialOption { return func(c *dialConfig) { c.agent = id } }

// WithHandshakeTimeout bounds the handshake when ctx has no earlier
// deadline (default 10 s). A peer that does not answer — nothing listens
// there, or the key in the URL is not the peer's, so it drops our hello
// unanswered — fails the Dial after this long.
func WithHandshakeTimeout(d time.Duration) DialOption {
	return func(c *dialConfig) { c.timeout = d }
}

// Errors of Dial.
var (
	ErrNoAgent           = errors.New("mesh: the URL names no agent (mxp://key@host:port/agent-id, or WithAgent)")
	ErrHandshakeNoAnswer = errors.New("mesh: handshake not answered: nothing listens there, or the URL's key is not the peer's")
)

// Dial connects a Client to url: mxp://<key>@host:port/<agent-id>, where key
// is the static key of whatever listens at host:port — the agent itself
// (Agent.URL) or the node the agent is registered with (Node.URL plus the
// agent's ID). It returns once the handshake completed, which authenticates
// the peer's key.
func Dial(ctx context.Context, url string, opts ...DialOption) (*Client, error) {
	t, err := ParseURL(url)
	if err != nil {
		return nil, err
	}
	cfg := dialConfig{agent: t.Agent, timeout: 10 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.agent == (wire.UUID{}) {
		return nil, ErrNoAgent
	}
	ch, err := sharedClientHost(t.Addr.Addr().Is4())
	if err != nil {
		return nil, err
	}
	c := &Client{ch: ch, target: t, agent: cfg.agent, ready: make(chan struct{}), pending: map[uint64]chan wire.Message{}}
	ch.sh.do(func(now time.Time) {
		if err := c.redial(now); err != nil {
			c.err = fmt.Errorf("mesh: dial %v: %w", t.Addr, err)
			close(c.ready)
		}
	})
	timer := time.NewTimer(cfg.timeout)
	defer timer.Stop()
	select {
	case <-c.ready:
		if c.err != nil {
			return nil, c.err
		}
		return c, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-timer.C:
		err = context.DeadlineExceeded
	}
	c.Close()
	return nil, fmt.Errorf("mesh: dial %v (key %v): %w: %w", t.Addr, t.Key, ErrHandshakeNoAnswer, err)
}

// Target is where the client's calls go: the URL's key and address, and the
// agent they are for.
func (c *Client) Target() Target {
	t := c.target
	t.Agent = c.agent
	return t
}

// Call calls method on the client's agent and returns its response, with
// the wire format, deadline, trace ID and errors of Agent.Call: the
// context's deadline travels in the call (whole seconds, rounded up), its
// trace ID (or a new one) in every message of the call; an Error reply is
// an *Error (CodeNotFound for an agent the node does not know, or a method
// the agent does not serve).
func (c *Client) Call(ctx context.Context, method string, body []byte) ([]byte, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	timeout := uint32(0)
	if dl, ok := ctx.Deadline(); ok {
		timeout = uint32(min(math.Ceil(time.Until(dl).Seconds()), math.MaxUint32))
		timeout = max(timeout, 1)
	}
	call := &wire.Call{Target: c.agent, TimeoutSeconds: timeout, Data: joinMethod(method, body)}
	m := wire.Message{Type: wire.TypeCall, MessageID: c.nextID.Add(1), TraceID: traceFor(ctx), Payload: encodePayload(call)}
	ch := make(chan wire.Message, 1)
	c.mu.Lock()
	c.pending[m.MessageID] = ch
	c.mu.Unlock()
	sh := c.ch.sh
	sh.do(func(now time.Time) {
		if c.conn == nil || c.conn.Err() != nil {
			// The connection is gone (the peer closed it or restarted,
			// or it idled out): dial again; the call waits for the
			// handshake.
			if c.closed.Load() || c.redial(now) != nil {
				c.drop(m.MessageID)
				return
			}
		}
		sh.send(c.conn, &m)
	})
	select {
	case r, ok := <-ch:
		if !ok {
			if c.closed.Load() {
				return nil, ErrClosed
			}
			return nil, ErrNotConnected
		}
		if r.Type == wire.TypeError {
			var e wire.ErrorPayload
			if err := e.DecodePayload(r.Payload); err != nil {
				return nil, err
			}
			return nil, &Error{Code: e.Code, Message: e.Message}
		}
		var resp wire.Response
		if err := resp.DecodePayload(r.Payload); err != nil {
			return nil, err
		}
		return resp.Data, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, m.MessageID)
		c.mu.Unlock()
		return nil, ctx.Err()
	}
}

// redial starts a handshake with the client's peer. Shard goroutine only.
func (c *Client) redial(now time.Time) error {
	conn, err := c.ch.sh.ep.Dial(c.target.Addr, c.target.Key, now)
	if err != nil {
		return err
	}
	c.conn = conn
	c.ch.conns[conn] = c
	return nil
}

// drop fails the pending call id (its caller sees ErrNotConnected or ErrClosed).
func (c *Client) drop(id uint64) {
	c.mu.Lock()
	if ch, ok := c.pending[id]; ok {
		delete(c.pending, id)
		close(ch)
	}
	c.mu.Unlock()
}

// Close closes the client's connection (the shared host stays); calls in
// flight fail with ErrClosed.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	done := make(chan struct{})
	c.ch.sh.do(func(now time.Time) {
		if c.conn != nil {
			c.conn.Close(transport.CodeNoError, "client closing", now)
		}
		close(done)
	})
	select {
	case <-done:
	case <-time.After(time.Second):
	}
	c.failPending()
	return nil
}

func (c *Client) failPending() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, ch := range c.pending {
		delete(c.pending, id)
		close(ch)
	}
}

// onMessage runs on the shard goroutine.
func (c *Client) onMessage(sh *shard, conn *transport.Conn, m *wire.Message) {
	switch m.Type {
	case wire.TypeResponse, wire.TypeError:
		c.mu.Lock()
		ch := c.pending[m.MessageID]
		delete(c.pending, m.MessageID)
		c.mu.Unlock()
		if ch != nil {
			cp := *m
			cp.Payload = append([]byte(nil), m.Payload...)
			ch <- cp
		}
	case wire.TypeCall:
		// A client serves nothing.
		sendError(sh, conn, m.MessageID, m.TraceID, wire.CodeNotFound, "a client serves no calls")
	}
}

// clientHost is the host the Clients of one address family share.
type clientHost struct {
	h     *host
	sh    *shard
	conns map[*transport.Conn]*Client // shard goroutine only
}

var clientHosts struct {
	sync.Mutex
	v4, v6 *clientHost
}

// sharedClientHost returns the clients' host for IPv4 (or IPv6), starting it
// on first use.
func sharedClientHost(v4 bool) (*clientHost, error) {
	clientHosts.Lock()
	defer clientHosts.Unlock()
	slot := &clientHosts.v6
	listen := netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	if v4 {
		slot = &clientHosts.v4
		listen = netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	}
	if *slot != nil {
		return *slot, nil
	}
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return nil, err
	}
	ch := &clientHost{conns: map[*transport.Conn]*Client{}}
	h, err := startHost(HostConfig{
		Listen: listen, Identity: id, Backend: "portable", Shards: 1,
		Authorize: func(crypto.PublicKey) bool { return false }, // clients accept no connections
	}, ch)
	if err != nil {
		return nil, fmt.Errorf("mesh: client host: %w", err)
	}
	ch.h, ch.sh = h, h.shards[0]
	*slot = ch
	return ch, nil
}

// onEvent implements events, on the shard goroutine.
func (ch *clientHost) onEvent(sh *shard, ev transport.Event) {
	c := ch.conns[ev.Conn]
	if c == nil {
		return
	}
	switch ev.Kind {
	case transport.EventConnected:
		select {
		case <-c.ready:
		default:
			close(c.ready)
		}
	case transport.EventClosed:
		delete(ch.conns, ev.Conn)
		if ev.Conn != c.conn {
			return // an earlier connection of a client that dialled again
		}
		select {
		case <-c.ready:
		default:
			c.err = fmt.Errorf("mesh: dial %v: %w", c.target.Addr, ev.Err)
			if errors.Is(ev.Err, transport.ErrIdleTimeout) {
				c.err = fmt.Errorf("mesh: dial %v (key %v): %w", c.target.Addr, c.target.Key, ErrHandshakeNoAnswer)
			}
			close(c.ready)
		}
		c.failPending()
	}
}

// onMessage implements events, on the shard goroutine.
func (ch *clientHost) onMessage(sh *shard, conn *transport.Conn, m *wire.Message) {
	if c := ch.conns[conn]; c != nil {
		c.onMessage(sh, conn, m)
	}
}
