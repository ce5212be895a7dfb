// Package transport is MXP's sans-I/O transport core: connections with the
// Noise handshake of package crypto, reliable streams, unreliable datagrams,
// ACK ranges, loss recovery, flow and congestion control, and priority
// scheduling. It takes packets and time in and gives packets, events and a
// timer deadline out; it never touches a socket, starts a goroutine or reads
// the clock, so it runs on every dataplane backend and in a simulator.
//
// An Endpoint owns the connections of one dataplane shard and is used from
// that shard's goroutine only.
package transport

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/transport/cc"
	"github.com/mxp-dataplane/mxp/wire"
)

// Config configures an Endpoint and its connections; zero fields take defaults.
type Config struct {
	// Crypto holds the identity, suites, allow-list and tickets. Required.
	Crypto *crypto.Config
	// MaxDatagramSize is the largest UDP payload sent (the path MTU minus
	// IP and UDP headers). Default 1400.
	MaxDatagramSize int
	// MaxDatagramSizeFor, if set, gives a connection's largest UDP payload
	// by its peer's address (0 or less: MaxDatagramSize): larger where the
	// path allows it, such as loopback, whose MTU is 64 KiB. The peer must
	// be able to receive what it returns.
	MaxDatagramSizeFor func(peer netip.AddrPort) int
	// IdleTimeout closes a connection that heard nothing for this long. Default 30 s.
	IdleTimeout time.Duration
	// MaxAckDelay bounds how long an ACK may wait. Default 25 ms.
	MaxAckDelay time.Duration
	// InitialRTT is the RTT assumed before the first sample. Default 100 ms.
	InitialRTT time.Duration
	// StreamWindow is the receive window of each stream. Default 1 MiB,
	// at least InitialStreamWindow.
	StreamWindow uint64
	// ConnWindow is the receive window of each connection. Default 16 MiB,
	// at least InitialConnWindow and StreamWindow.
	ConnWindow uint64
	// StreamSendBuffer bounds the bytes a stream buffers unacknowledged
	// (Write's backpressure). Default 1 MiB; one larger message may pass
	// an empty buffer.
	StreamSendBuffer int
	// MaxStreams bounds the streams a peer may have open. Default 1024.
	MaxStreams int
	// DatagramQueue bounds the datagrams waiting to be sent. Default 256.
	DatagramQueue int
	// Congestion makes a connection's congestion controller. Default CUBIC.
	Congestion func(maxDatagram int) cc.Controller
	// HandshakeLoad is the number of handshakes in progress above which a
	// hello must carry a cookie (stateless retry). Default 1000.
	HandshakeLoad int
	// Shard names this endpoint's dataplane shard in the connection IDs it
	// chooses (wire.MakeConnID), and Shards is how many shards there are.
	// With a single shard the top byte is random instead, so that the
	// connections of single-shard initiators (agents) spread over the
	// responder's shards.
	Shard, Shards int
	// OnMessage receives every MXP message that arrives on a message stream.
	// m.Payload aliases a receive buffer valid only during the call.
	OnMessage func(c *Conn, m *wire.Message)
	// Rand supplies connection IDs (crypto/rand when nil).
	Rand io.Reader
}

func (cfg *Config) setDefaults() {
	if cfg.MaxDatagramSize == 0 {
		cfg.MaxDatagramSize = 1400
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.MaxAckDelay == 0 {
		cfg.MaxAckDelay = 25 * time.Millisecond
	}
	if cfg.InitialRTT == 0 {
		cfg.InitialRTT = 100 * time.Millisecond
	}
	if cfg.StreamWindow == 0 {
		cfg.StreamWindow = 1 << 20
	}
	cfg.StreamWindow = max(cfg.StreamWindow, InitialStreamWindow)
	if cfg.ConnWindow == 0 {
		cfg.ConnWindow = 16 << 20
	}
	cfg.ConnWindow = max(cfg.ConnWindow, InitialConnWindow, cfg.StreamWindow)
	if cfg.StreamSendBuffer == 0 {
		cfg.StreamSendBuffer = 1 << 20
	}
	if cfg.MaxStreams == 0 {
		cfg.MaxStreams = 1024
	}
	if cfg.DatagramQueue == 0 {
		cfg.DatagramQueue = 256
	}
	if cfg.Congestion == nil {
		cfg.Congestion = cc.NewCubic
	}
	if cfg.HandshakeLoad == 0 {
		cfg.HandshakeLoad = 1000
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
}

// Packet is one UDP datagram in or out: the same shape as dataplane.Packet,
// which the runtime converts field by field.
type Packet struct {
	Buf  []byte
	Addr netip.AddrPort
}

// EventKind says what happened.
type EventKind uint8

// Events.
const (
	EventConnected      EventKind = iota + 1 // the handshake completed
	EventStreamOpened                        // the peer opened a (bidirectional) stream
	EventStreamReadable                      // a stream has bytes or FIN to read
	EventStreamWritable                      // a stream that refused a write (ErrWouldBlock) has room again: its send buffer drained below half
	EventDatagram                            // a datagram arrived (Data)
	EventEarlyData                           // 0-RTT data arrived with a hello (Data)
	EventTicket                              // the peer issued a resumption ticket
	EventClosed                              // the connection is gone (Err says why)
)

// Event is one thing for the application to act on.
type Event struct {
	Kind   EventKind
	Conn   *Conn
	Stream *Stream
	Data   []byte
	Ticket *crypto.Ticket
	Err    error
}

// EndpointStats counts what the endpoint did with packets no connection took.
type EndpointStats struct {
	UnknownConn, BadHandshake, CookieReplies, Refused, Resets uint64
	// EarlyRefused counts resuming hellos whose 0-RTT data was not taken
	// (crypto.HelloResult.EarlyRefused).
	EarlyRefused uint64
}

// maxPendingReplies bounds the stateless replies (cookies, resets) queued
// between two Transmit calls: beyond it, a flood is simply not answered.
const maxPendingReplies = 1024

// Endpoint holds the connections of one shard.
type Endpoint struct {
	cfg        Config
	responder  *crypto.Responder
	conns      map[uint64]*Conn
	active     []*Conn // connections that may have something to send
	activeBuf  []*Conn // active's array from its start, reused
	events     []Event
	evHead     int
	ackScratch []wire.AckRange
	msgScratch wire.Message
	replies    []Packet // stateless cookie replies
	timers     timerHeap
	fired      []*Conn
	handshakes int
	stats      EndpointStats
}

// NewEndpoint returns an endpoint that accepts connections (as a
// responder) and dials them (as an initiator).
func NewEndpoint(cfg Config) (*Endpoint, error) {
	if cfg.Crypto == nil {
		return nil, errors.New("transport: Config.Crypto is required")
	}
	cfg.setDefaults()
	r, err := crypto.NewResponder(cfg.Crypto)
	if err != nil {
		return nil, err
	}
	return &Endpoint{cfg: cfg, responder: r, conns: map[uint64]*Conn{}}, nil
}

// Stats returns the endpoint's counters.
func (e *Endpoint) Stats() EndpointStats { return e.stats }

// Len returns the number of connections.
func (e *Endpoint) Len() int { return len(e.conns) }

// Conns lists the endpoint's connections (in no particular order).
func (e *Endpoint) Conns() []*Conn {
	out := make([]*Conn, 0, len(e.conns))
	for _, c := range e.conns {
		out = append(out, c)
	}
	return out
}

// UseHandshakeCaches makes the endpoint's handshakes, as initiator and as
// responder, use static (the static-static DH per peer) and pool (ephemeral
// key pairs generated ahead of time, refilled by the caller); either may be
// nil. The endpoint keeps its own copy of Config.Crypto with them set: the
// caller's Config is not modified. Call it before the endpoint's first
// handshakes (it starts a new responder, so cookies handed out before are no
// longer accepted), from the endpoint's goroutine.
func (e *Endpoint) UseHandshakeCaches(static *crypto.StaticSecretCache, pool *crypto.EphemeralPool) error {
	cc := *e.cfg.Crypto
	cc.StaticCache, cc.Ephemerals = static, pool
	r, err := crypto.NewResponder(&cc)
	if err != nil {
		return err
	}
	e.cfg.Crypto, e.responder = &cc, r
	return nil
}

// Dial starts a handshake with the responder at addr whose static key is peer.
func (e *Endpoint) Dial(addr netip.AddrPort, peer crypto.PublicKey, now time.Time) (*Conn, error) {
	return e.DialResume(addr, peer, nil, nil, now)
}

// DialResume is Dial with a session ticket from an earlier connection
// (EventTicket): early is sent as 0-RTT data inside the hello, and arrives as
// EventEarlyData at the responder if it accepts it. Only send what is safe
// to replay and safe without forward secrecy (docs/crypto.md); the ticket
// must not be used again.
func (e *Endpoint) DialResume(addr netip.AddrPort, peer crypto.PublicKey, t *crypto.Ticket, early []byte, now time.Time) (*Conn, error) {
	var b [8]byte
	for {
		if _, err := io.ReadFull(e.cfg.Rand, b[:]); err != nil {
			return nil, err
		}
		r := binary.LittleEndian.Uint64(b[:])
		cid := wire.MakeConnID(e.cfg.Shard, r)
		if e.cfg.Shards <= 1 {
			cid = r // any top byte steers to our only shard
		}
		if e.conns[cid] != nil {
			continue
		}
		hs, err := crypto.NewInitiator(e.cfg.Crypto, peer, cid)
		if err != nil {
			return nil, err
		}
		if t != nil {
			if err := hs.UseTicket(t, early, now); err != nil {
				return nil, err
			}
		}
		c := newConn(e, cid, addr, true, now)
		c.hs, c.hsPkt = hs, []byte{}
		e.conns[cid] = c
		e.wantSend(c)
		return c, nil
	}
}

// Receive processes one datagram from addr. The endpoint does not keep pkt
// (it decrypts it in place).
func (e *Endpoint) Receive(pkt []byte, from netip.AddrPort, now time.Time) {
	if len(pkt) < wire.PacketHeaderLen {
		e.stats.UnknownConn++
		return
	}
	cid := binary.LittleEndian.Uint64(pkt[wire.PacketOffsetConnID:])
	c := e.conns[cid]
	if pkt[wire.PacketOffsetFlags]&wire.PacketFlagHandshake == 0 {
		if c == nil {
			e.stats.UnknownConn++
			// A connection we lost (a restart): tell the initiator, so it
			// does not wait for its idle timeout. Only connections we
			// accepted can be ours: their IDs were drawn by the initiator,
			// so answer any, but never with more bytes than came in.
			if len(pkt) > resetPacketLen && len(e.replies) < maxPendingReplies {
				e.stats.Resets++
				e.replies = append(e.replies, Packet{Buf: e.appendReset(nil, cid), Addr: from})
			}
			return
		}
		c.receive(pkt, from, now)
		e.schedule(c)
		return
	}
	typ, err := crypto.HandshakeType(pkt)
	if err != nil {
		e.stats.BadHandshake++
		return
	}
	switch typ {
	case MsgStatelessReset:
		if c != nil && c.initiator {
			c.onReset(pkt, now)
		}
	case crypto.MsgInitiatorHello:
		if c != nil {
			if !c.initiator && c.state == stateHandshake && from == c.peer {
				c.session.Amplification().OnReceive(len(pkt))
				c.replyDue = true // a retransmitted hello: repeat our reply
				e.wantSend(c)
			}
			return
		}
		e.acceptHello(pkt, cid, from, now)
	case crypto.MsgResponderHello:
		if c == nil || !c.initiator || c.state != stateHandshake {
			return
		}
		s, fin, err := c.hs.HandleResponderHello(pkt, now)
		if err != nil {
			e.stats.BadHandshake++
			return
		}
		c.session, c.finPkt = s, fin
		c.lastHeard = now
		c.established(now)
	case crypto.MsgCookieReply:
		if c == nil || !c.initiator || c.state != stateHandshake {
			return
		}
		if c.hs.HandleCookieReply(pkt, now) == nil {
			c.hsTries++ // send the hello again, now with the cookie
			e.wantSend(c)
		}
	case crypto.MsgInitiatorFinish:
		if c == nil || c.initiator || c.session == nil {
			return
		}
		if c.session.HandleInitiatorFinish(pkt) == nil && c.state == stateHandshake {
			c.lastHeard = now
			c.established(now)
		}
	default:
		e.stats.BadHandshake++
	}
}

func (e *Endpoint) acceptHello(pkt []byte, cid uint64, from netip.AddrPort, now time.Time) {
	res, err := e.responder.HandleInitiatorHello(pkt, from, now, e.handshakes >= e.cfg.HandshakeLoad)
	if err != nil {
		if errors.Is(err, crypto.ErrPeerRefused) {
			e.stats.Refused++
		} else {
			e.stats.BadHandshake++
		}
		return
	}
	if res.CookieReply {
		e.stats.CookieReplies++
		if len(e.replies) < maxPendingReplies {
			e.replies = append(e.replies, Packet{Buf: res.Reply, Addr: from})
		}
		return
	}
	c := newConn(e, cid, from, false, now)
	c.session, c.hsPkt, c.replyDue = res.Session, res.Reply, true
	e.conns[cid] = c
	e.handshakes++
	e.wantSend(c)
	if res.EarlyRefused {
		e.stats.EarlyRefused++
	}
	if len(res.EarlyData) > 0 {
		// A resumption: the next ticket goes with the answers to the 0-RTT
		// data (0.5-RTT), so the initiator holds it when its first
		// response comes, rather than a round trip after.
		c.issueTicket(now)
		e.emit(Event{Kind: EventEarlyData, Conn: c, Data: res.EarlyData})
	}
}

// Transmit fills out with packets to send: each out[i].Buf is a buffer
// (length ignored, capacity at least MaxDatagramSize) that Transmit
// reslices. It runs the timers due by now first, and returns how many
// packets it filled; consecutive packets of one connection share a
// destination and, but for the last, a size, so backends can use GSO.
func (e *Endpoint) Transmit(out []Packet, now time.Time) int {
	n := 0
	for n < len(out) && len(e.replies) > 0 {
		out[n].Buf = append(out[n].Buf[:0], e.replies[0].Buf...)
		out[n].Addr = e.replies[0].Addr
		e.replies = e.replies[1:]
		n++
	}
	e.runTimers(now)
	// Round robin over the connections with work, up to burstPackets each
	// per turn (long enough runs for GSO, short enough to be fair).
	for turns := len(e.active); turns > 0 && len(e.active) > 0 && n < len(out); turns-- {
		c := e.active[0]
		e.active[0] = nil
		e.active = e.active[1:]
		c.activeFlag = false
		sent := 0
		for n < len(out) && sent < burstPackets {
			pkt := c.transmit(out[n].Buf[:0], now)
			if pkt == nil {
				break
			}
			out[n].Buf, out[n].Addr = pkt, c.peer
			n++
			sent++
		}
		if sent > 0 && c.hasWork(now) {
			e.wantSend(c) // to the back of the line
		}
		e.schedule(c)
	}
	if len(e.active) == 0 {
		e.active = e.activeBuf[:0] // the queue starts over at the front of its array
	}
	return n
}

// burstPackets is how many packets one connection sends before the next
// connection with work gets its turn.
const burstPackets = 16

// HasWork reports whether Transmit would produce a packet now.
func (e *Endpoint) HasWork() bool { return len(e.replies) > 0 || len(e.active) > 0 }

// HasEvents reports whether PollEvent has an event to return: a check that
// costs no copy of an Event (PollEvent's result is ~80 bytes).
func (e *Endpoint) HasEvents() bool { return e.evHead < len(e.events) }

// PollEvent returns the next event, if any.
func (e *Endpoint) PollEvent() (Event, bool) {
	if e.evHead == len(e.events) {
		e.events, e.evHead = e.events[:0], 0
		return Event{}, false
	}
	ev := e.events[e.evHead]
	e.events[e.evHead] = Event{}
	e.evHead++
	return ev, true
}

func (e *Endpoint) emit(ev Event) { e.events = append(e.events, ev) }

func (e *Endpoint) wantSend(c *Conn) {
	if !c.activeFlag && c.state != stateClosed {
		c.activeFlag = true
		e.active = append(e.active, c)
		if cap(e.active) > cap(e.activeBuf) {
			e.activeBuf = e.active[:0] // grown: keep the larger array
		}
	}
}

func (e *Endpoint) paceUntil(c *Conn, t time.Time) { c.paceAt = t }

func (e *Endpoint) remove(c *Conn) {
	if e.conns[c.cid] == c {
		delete(e.conns, c.cid)
		if !c.initiator && c.hsPkt != nil {
			e.handshakes--
		}
	}
}
