package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/scheduler"
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
	caller
	ch     *clientHost
	target Target
	agent  wire.UUID

	conn *transport.Conn // shard goroutine only
	// resume: dialled WithZeroRTT with a ticket held; the first request
	// starts the handshake and rides in its first packet. early is that
	// request, kept until the handshake says whether the peer took it
	// (shard goroutine only).
	resume  bool
	early   []byte          // encoded, as it went in the hello
	class   scheduler.Class // early's
	zeroRTT atomic.Bool     // the peer took the first request as 0-RTT data
	ready   chan struct{}   // closed when the handshake completes or fails
	// dialing: Dial waits for ready, counted in the shard's waiting.
	dialing atomic.Bool
	err     error // why it failed; set before ready closes
	// timeout bounds a handshake a request waits for (WithHandshakeTimeout):
	// a resumed first call's, or a redial's. hsTimer closes the connection
	// when it passes; timedOut says so to onEvent (shard goroutine only).
	timeout  time.Duration
	hsTimer  *time.Timer
	timedOut bool
}

// DialOption adjusts Dial.
type DialOption func(*dialConfig)

type dialConfig struct {
	agent   wire.UUID
	timeout time.Duration
	zeroRTT bool
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

// WithZeroRTT resumes a session with the peer when the process holds a
// ticket from an earlier connection to it (every host issues one to each
// connection; the Clients of a process share them): Dial then returns at
// once, without a round trip, and the first Call starts the handshake with
// its request inside the first packet (0-RTT, if its encoded message fits
// in 1 KiB); the peer answers it right behind its handshake reply, so the
// first response comes one round trip after the Call, not two. Without a
// ticket Dial runs the handshake as usual, and the connection brings one.
//
// The early request is encrypted under the ticket's secret, not under the
// new handshake's keys: it has no forward secrecy against the theft of the
// peer's ticket key (kept in memory, rotated every 12 hours and used to
// open tickets for 12 more, so a key taken at any time in those 24 hours
// opens the 0-RTT requests recorded under it). The peer
// takes a ticket's 0-RTT data at most once (a strike register beside its
// ticket keys, for the life of its process), and a request it did not
// take (a restarted peer, an expired ticket) is sent again once the
// handshake completes, so it runs once either way. A failed handshake
// (the peer gone) fails that first Call, not Dial.
func WithZeroRTT() DialOption { return func(c *dialConfig) { c.zeroRTT = true } }

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
	c := &Client{ch: ch, target: t, agent: cfg.agent, ready: make(chan struct{}), timeout: cfg.timeout}
	c.sh, c.pending, c.route = ch.sh, map[uint64]*outCall{}, c.routeRequest
	if cfg.zeroRTT && ch.h.tickets.has(t.Key, t.Addr) {
		c.resume = true // the first request dials (routeRequest)
		return c, nil
	}
	c.dialing.Store(true)
	c.sh.waiting.Add(1) // until dialed
	ch.sh.do(func(now time.Time) {
		if err := c.redial(nil, now); err != nil {
			c.err = fmt.Errorf("mesh: dial %v: %w", t.Addr, err)
			c.setReady()
		}
	})
	isReady := func() bool {
		select {
		case <-c.ready:
			return true
		default:
			return false
		}
	}
	if ch.sh.await(ctx, isReady, nil, time.Time{}) {
		if c.err != nil {
			return nil, c.err
		}
		return c, nil
	}
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
	c.dialed()
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
	out, err := c.call(ctx, c.agent, method, body, wire.UUID{})
	if err == ErrNotConnected {
		select {
		case <-c.ready: // a handshake failed: say why (set before ready closed)
			if c.err != nil {
				return nil, c.err
			}
		default:
		}
	}
	return out, err
}

// ZeroRTT reports whether the client resumed a session (WithZeroRTT) and
// the peer took its first request as 0-RTT data: known once that request's
// handshake completed.
func (c *Client) ZeroRTT() bool { return c.zeroRTT.Load() }

// routeRequest is the client's connection, on the shard. A connection that
// is gone (the peer closed it or restarted, or it idled out) is dialled
// again; the request waits for the handshake.
func (c *Client) routeRequest(oc *outCall, now time.Time) *transport.Conn {
	if c.conn == nil || c.conn.Err() != nil {
		if c.closed.Load() || c.redial(oc, now) != nil {
			return nil
		}
	}
	return c.conn
}

// redial starts a handshake with the client's peer; the first one of a
// client dialled WithZeroRTT resumes with a ticket and carries oc's
// message as 0-RTT data (oc.early: it is sent). Shard goroutine only.
func (c *Client) redial(oc *outCall, now time.Time) error {
	var conn *transport.Conn
	var err error
	if c.resume && oc != nil {
		c.resume = false
		if early, ok := earlyMessage(&oc.m); ok {
			if t := c.ch.h.tickets.take(c.target.Key, c.target.Addr, now); t != nil {
				conn, err = c.ch.sh.ep.DialResume(c.target.Addr, c.target.Key, t, early, now)
				if err == nil {
					oc.early = true
					c.early, c.class = early, classOf(oc.m.Type)
				}
			}
		}
	}
	if conn == nil {
		conn, err = c.ch.sh.ep.Dial(c.target.Addr, c.target.Key, now)
	}
	if err != nil {
		return err
	}
	c.conn = conn
	c.ch.conns[conn] = c
	c.ch.steer(c.ch.sh) // before the hello goes: a second peer is to be heard
	c.timedOut = false
	if oc != nil {
		// A request waits for this handshake (Dial waits with its own
		// timer): give up on a peer that does not answer, as Dial would.
		c.stopHandshakeTimer()
		c.hsTimer = time.AfterFunc(c.timeout, func() {
			c.ch.sh.do(func(now time.Time) {
				if c.conn == conn && !conn.Established() && conn.Err() == nil {
					c.timedOut = true
					conn.Close(transport.CodeNoError, "handshake not answered", now)
				}
			})
		})
	}
	return nil
}

// stopHandshakeTimer stops the timer of a handshake that completed or
// failed. Shard goroutine only.
func (c *Client) stopHandshakeTimer() {
	if c.hsTimer != nil {
		c.hsTimer.Stop()
		c.hsTimer = nil
	}
}

// setReady closes ready (once; on the shard) and ends the dial's wait.
func (c *Client) setReady() {
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
	c.dialed()
}

// dialed ends the dial's count in the shard's waiting (once).
func (c *Client) dialed() {
	if c.dialing.CompareAndSwap(true, false) {
		c.sh.waiting.Add(-1)
	}
}

// Close closes the client's connection (the shared host stays); calls in
// flight fail with ErrClosed.
func (c *Client) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	c.ch.sh.doWait(func(now time.Time) {
		if c.conn != nil {
			c.conn.Close(transport.CodeNoError, "client closing", now)
			c.ch.steer(c.ch.sh) // the closing connection no longer counts
		}
	})
	c.failRequests()
	return nil
}

// onMessage runs on the shard goroutine.
func (c *Client) onMessage(sh *shard, conn *transport.Conn, m *wire.Message) {
	switch m.Type {
	case wire.TypeResponse, wire.TypeError:
		if c.early != nil && conn == c.conn && conn.EarlyDataAccepted() {
			// An answer at 0.5-RTT can come in the batch of the
			// ResponderHello, before EventConnected is drained: say so
			// before its caller wakes.
			c.zeroRTT.Store(true)
		}
		c.deliver(m.MessageID, m)
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
		Authorize:   func(crypto.PublicKey) bool { return false }, // clients accept no connections
		connectPeer: true,                                         // nor hear from anyone they did not dial
	}, ch)
	if err != nil {
		return nil, fmt.Errorf("mesh: client host: %w", err)
	}
	ch.h, ch.sh = h, h.shards[0]
	*slot = ch
	return ch, nil
}

// mayLend (events): a client host answers nothing unasked and has no
// streams; only its requests and dials wait for its shard.
func (ch *clientHost) mayLend() bool { return true }

// onEvent implements events, on the shard goroutine.
func (ch *clientHost) onEvent(sh *shard, ev transport.Event) {
	c := ch.conns[ev.Conn]
	if c == nil {
		return
	}
	switch ev.Kind {
	case transport.EventConnected:
		if ev.Conn == c.conn {
			c.stopHandshakeTimer()
		}
		if c.early != nil && ev.Conn == c.conn {
			if ev.Conn.EarlyDataAccepted() {
				c.zeroRTT.Store(true)
			} else {
				sh.sendEncoded(ev.Conn, c.class, c.early) // not taken: send it again, now under the new keys
			}
			c.early = nil
		}
		c.setReady()
	case transport.EventClosed:
		delete(ch.conns, ev.Conn)
		ch.steer(sh)
		if ev.Conn != c.conn {
			return // an earlier connection of a client that dialled again
		}
		c.early = nil
		c.stopHandshakeTimer()
		select {
		case <-c.ready:
		default:
			c.err = fmt.Errorf("mesh: dial %v: %w", c.target.Addr, ev.Err)
			if c.timedOut || errors.Is(ev.Err, transport.ErrIdleTimeout) {
				c.err = fmt.Errorf("mesh: dial %v (key %v): %w", c.target.Addr, c.target.Key, ErrHandshakeNoAnswer)
			}
			c.setReady()
		}
		c.failRequests()
	}
}

// steer connects the host's socket to its one peer while every live
// connection it has is with that peer, and leaves it unconnected otherwise
// (dataplane.PeerConnector, HostConfig.connectPeer): sends to the peer
// then skip the kernel's route lookup. A closing connection does not
// count (it lingers for three PTOs, up to seconds, and what its peer still
// sends it is of no use). On the shard goroutine, in a turn.
func (ch *clientHost) steer(sh *shard) {
	e := sh.h.engine()
	if e == nil {
		return
	}
	pc, ok := e.Conn(sh.idx).(dataplane.PeerConnector)
	if !ok {
		return
	}
	var peer netip.AddrPort
	for conn := range ch.conns {
		if conn.Err() != nil {
			continue // closing
		}
		switch p := conn.Peer(); {
		case !peer.IsValid():
			peer = p
		case p != peer:
			pc.ConnectPeer(netip.AddrPort{}) // fails only on a closed socket
			return
		}
	}
	pc.ConnectPeer(peer)
}

// onMessage implements events, on the shard goroutine.
func (ch *clientHost) onMessage(sh *shard, conn *transport.Conn, m *wire.Message) {
	if c := ch.conns[conn]; c != nil {
		c.onMessage(sh, conn, m)
	}
}
