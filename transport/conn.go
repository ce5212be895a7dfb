package transport

import (
	"errors"
	"net/netip"
	"slices"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/transport/cc"
	"github.com/mxp-dataplane/mxp/wire"
)

// connState is where a connection is in its life.
type connState uint8

const (
	stateHandshake connState = iota // initiator: hello sent; responder: hello answered
	stateEstablished
	stateClosing  // we sent CLOSE; answering with CLOSE, then gone after 3 PTO
	stateDraining // the peer closed; silent, then gone after 3 PTO
	stateClosed
)

// Connection errors carried in CLOSE frames.
const (
	CodeNoError           uint64 = 0
	CodeProtocolViolation uint64 = 1
	CodeFlowControl       uint64 = 2
	CodeFinalSize         uint64 = 3
	CodeStreamLimit       uint64 = 4
	CodeIdleTimeout       uint64 = 5 // never sent: idle connections close silently
	CodeInternal          uint64 = 6
)

var (
	errFlowControl = &CloseError{Code: CodeFlowControl, Reason: "flow control limit exceeded"}
	errFinalSize   = &CloseError{Code: CodeFinalSize, Reason: "final size changed or exceeded"}
	errStreamLimit = &CloseError{Code: CodeStreamLimit, Reason: "too many streams"}
)

// CloseError is why a connection closed: a code and a reason, sent by us
// (Remote false) or by the peer.
type CloseError struct {
	Code   uint64
	Reason string
	Remote bool
}

func (e *CloseError) Error() string {
	who := "local"
	if e.Remote {
		who = "peer"
	}
	return "transport: connection closed by " + who + ": " + e.Reason
}

// ErrIdleTimeout closes a connection that heard nothing for the idle timeout.
var ErrIdleTimeout = errors.New("transport: idle timeout")

// sentFrame is what one sent packet carried that must be acted on when it
// is acknowledged or lost: stream data (retransmitted if lost), a fin, a
// reset, or a flow-control update (re-sent if lost).
type sentFrame struct {
	kind   FrameType
	stream uint64
	offset uint64
	length uint32
}

type sentPacket struct {
	pn           uint64
	time         time.Time
	size         int
	ackEliciting bool
	done         bool // acknowledged or declared lost
	frames       []sentFrame
}

// Conn is one MXP connection: sans-I/O. The Endpoint that owns it feeds it
// packets and time and asks it for packets to send.
type Conn struct {
	ep        *Endpoint
	cfg       *Config
	cid       uint64
	peer      netip.AddrPort
	initiator bool
	maxDgram  int // largest UDP payload sent to peer (Config.MaxDatagramSize[For])
	state     connState
	closeErr  error
	closeAt   time.Time

	session   *crypto.Session
	hs        *crypto.Initiator // initiator during the handshake
	hsPkt     []byte            // initiator: the hello to retransmit; responder: the reply to repeat
	finPkt    []byte            // initiator: the InitiatorFinish, sent once
	hsNext    time.Time         // initiator: when to retransmit the hello
	hsTries   int               // initiator: hellos due so far
	hsSent    int               // initiator: hellos sent so far
	replyDue  bool              // responder: the reply is due (again)
	replySent bool              // responder: the reply went out once (repeats count against the amplification limit)
	// hsSentAt is when the hello (initiator) or the reply (responder) went
	// out, for the handshake's RTT sample; zero once it went out again
	// (which answer belongs to which is then unknown: Karn's rule).
	hsSentAt time.Time

	resetToken     [resetTokenLen]byte // initiator: the responder's stateless reset token
	haveResetToken bool
	sendResetToken bool // responder: the token is due

	activeFlag      bool      // in the endpoint's active list
	heapAt          time.Time // the earliest entry this connection has in the endpoint's timer heap
	paceAt          time.Time // pacing holds data until then
	lastFillElicits bool      // the packet being built carries an ack-eliciting frame without a sentFrame

	// reception
	recvPNs       rangeSet
	largestRecv   uint64
	largestRecvAt time.Time
	ackPending    int       // ack-eliciting packets not yet acknowledged
	ackAt         time.Time // when an ACK must go out at the latest
	ackNow        bool
	lastHeard     time.Time

	// loss recovery (RFC 9002)
	sent          []sentPacket
	sentHead      int
	frameFree     [][]sentFrame
	inFlight      int
	largestAcked  uint64
	haveAcked     bool
	rtt           cc.RTT
	haveRTT       bool
	ptoCount      int
	lastAckElicit time.Time
	lossTime      time.Time
	probes        int
	cong          cc.Controller
	pacer         cc.Pacer

	// flow control
	peerConnMax  uint64 // peer's limit on the sum of our stream offsets
	connSent     uint64
	localConnMax uint64
	connRecv     uint64 // sum of highest received offsets
	connRead     uint64
	sendConnMax  bool

	// streams
	streams     map[uint64]*Stream
	nextBidi    uint64
	nextUni     uint64
	peerStreams int
	peerDone    rangeSet // peer stream IDs finished and forgotten
	sched       *scheduler.Scheduler
	control     bool // control frames are due
	resets      []*Stream
	datagrams   [][]byte
	pingDue     bool
	cryptoOut   [][]byte
	// ticketIssued: the responder queued this connection's ticket (at
	// 0.5-RTT when it resumed with 0-RTT data, else once confirmed).
	ticketIssued bool
	// lazyAt: control frames are owed that may wait for a packet that goes
	// out anyway (an answer, an ACK), until then at the latest: the windows
	// announced for a new connection and for streams the peer opens, a
	// responder's reset token and ticket. Zero: none wait.
	lazyAt     time.Time
	msgOut     [scheduler.NumClasses]*Stream
	msgIn      map[uint64]*msgReader
	delivering []byte // the encoded message OnMessage has (MessageBytes)

	stats ConnStats
}

// ConnStats counts what a connection did.
type ConnStats struct {
	PacketsSent, PacketsReceived, PacketsLost, PacketsDropped uint64
	BytesSent, BytesReceived                                  uint64
	DatagramsDropped                                          uint64
	StreamBytesRetransmitted                                  uint64
}

// Stats returns the connection's counters.
func (c *Conn) Stats() ConnStats { return c.stats }

// RTT returns the current round-trip estimate.
func (c *Conn) RTT() cc.RTT { return c.rtt }

// CongestionWindow returns the congestion window in bytes.
func (c *Conn) CongestionWindow() int { return c.cong.Window() }

// ConnID returns the connection ID.
func (c *Conn) ConnID() uint64 { return c.cid }

// Peer returns the peer's address.
func (c *Conn) Peer() netip.AddrPort { return c.peer }

// PeerKey returns the peer's authenticated static key (zero before the handshake).
func (c *Conn) PeerKey() crypto.PublicKey {
	if c.session == nil {
		return crypto.PublicKey{}
	}
	return c.session.Peer()
}

// Established reports whether the handshake completed.
func (c *Conn) Established() bool { return c.state == stateEstablished }

// Err returns why the connection closed, or nil while it is open.
func (c *Conn) Err() error { return c.closeErr }

func newConn(ep *Endpoint, cid uint64, peer netip.AddrPort, initiator bool, now time.Time) *Conn {
	cfg := &ep.cfg
	maxDgram := cfg.MaxDatagramSize
	if cfg.MaxDatagramSizeFor != nil {
		if n := cfg.MaxDatagramSizeFor(peer); n > 0 {
			maxDgram = n
		}
	}
	c := &Conn{
		ep: ep, cfg: cfg, cid: cid, peer: peer, initiator: initiator, maxDgram: maxDgram,
		streams:      map[uint64]*Stream{},
		sched:        scheduler.New(scheduler.DefaultWeights, maxDgram),
		cong:         cfg.Congestion(maxDgram),
		localConnMax: cfg.ConnWindow,
		peerConnMax:  InitialConnWindow, // until the peer announces its window
		lastHeard:    now,
	}
	c.rtt.Smoothed, c.rtt.Variance = cfg.InitialRTT, cfg.InitialRTT/2
	c.pacer.MaxDatagram, c.pacer.Controller = maxDgram, c.cong // 2x rate in slow start
	c.sched.Register(datagramQueue, scheduler.Interactive)
	return c
}

// datagramQueue is the scheduler ID of the datagram queue (stream IDs are < 2^62).
const datagramQueue = ^uint64(0)

// --- streams -----------------------------------------------------------

func (c *Conn) role() wire.StreamIDRole {
	if c.initiator {
		return wire.StreamIDClient
	}
	return wire.StreamIDServer
}

func (c *Conn) locallyOpened(id uint64) bool { return wire.StreamID(id).Role() == c.role() }

// OpenStream opens a stream of the given class; bidirectional unless uni.
func (c *Conn) OpenStream(class scheduler.Class, uni bool) (*Stream, error) {
	if c.state != stateEstablished && c.state != stateHandshake {
		return nil, c.closeErrOr()
	}
	kind, next := wire.StreamIDBidirectional, &c.nextBidi
	if uni {
		kind, next = wire.StreamIDUnidirectional, &c.nextUni
	}
	id, ok := wire.MakeStreamID(*next, c.role(), kind)
	if !ok {
		return nil, errStreamLimit
	}
	*next++
	s := c.newStream(uint64(id), class)
	if s.sendMax {
		c.queueControl() // with the StreamOpen frame
	}
	c.streamReady(s) // the StreamOpen frame
	return s, nil
}

func (c *Conn) closeErrOr() error {
	if c.closeErr != nil {
		return c.closeErr
	}
	return &CloseError{Code: CodeNoError, Reason: "connection closing"}
}

// Every endpoint may send up to these limits before the peer announces its
// own (in StreamMaxData and ConnectionMaxData frames, right after the
// handshake and when a stream opens); Config windows are at least these.
const (
	InitialStreamWindow = 16 << 10
	InitialConnWindow   = 64 << 10
)

func (c *Conn) newStream(id uint64, class scheduler.Class) *Stream {
	s := &Stream{id: id, conn: c, class: class, peerMax: InitialStreamWindow, localMax: c.cfg.StreamWindow}
	c.streams[id] = s
	c.sched.Register(id, class)
	receives := !s.Unidirectional() || !c.locallyOpened(id)
	s.sendMax = receives && s.localMax > InitialStreamWindow // announce our window
	return s
}

// peerStream returns the stream id the peer refers to, creating it (and
// reporting it) when the peer opens it.
func (c *Conn) peerStream(id uint64, class scheduler.Class, now time.Time) (*Stream, error) {
	if s := c.streams[id]; s != nil {
		return s, nil
	}
	if c.locallyOpened(id) || c.peerDone.contains(id) {
		return nil, nil // finished and forgotten: a late or repeated frame
	}
	if id >= maxStreamOffset {
		return nil, errStreamLimit
	}
	if c.peerStreams >= c.cfg.MaxStreams {
		return nil, errStreamLimit
	}
	c.peerStreams++
	s := c.newStream(id, class)
	s.openSent = true
	if s.sendMax {
		// The peer may send InitialStreamWindow before it hears of ours;
		// the window goes with the answer or the ACK that follows.
		c.queueLazy(now)
	}
	if !s.Unidirectional() { // unidirectional streams carry messages: no event
		c.ep.emit(Event{Kind: EventStreamOpened, Conn: c, Stream: s})
	}
	return s, nil
}

func (c *Conn) streamReady(s *Stream) {
	if c.streams[s.id] == s {
		c.sched.Ready(s.id)
	}
	c.ep.wantSend(c)
}

// writable tells the application that a stream which refused a write has
// room again (its send buffer drained below half). A stream never refused
// raises no event: one per acknowledgement would cost every round trip.
func (c *Conn) writable(s *Stream) {
	if s.blocked && len(s.buf) < c.cfg.StreamSendBuffer/2 {
		s.blocked = false
		c.ep.emit(Event{Kind: EventStreamWritable, Conn: c, Stream: s})
	}
}

func (c *Conn) readable(s *Stream) error {
	if s.Unidirectional() && !c.locallyOpened(s.id) {
		r := c.msgIn[s.id]
		if r == nil {
			if c.msgIn == nil {
				c.msgIn = map[uint64]*msgReader{}
			}
			r = &msgReader{}
			c.msgIn[s.id] = r
		}
		if err := r.pump(c, s); err != nil {
			return err
		}
		if s.haveFinal && s.readOff == s.finalSize {
			s.readDone = true
			delete(c.msgIn, s.id)
			s.maybeDone()
		}
		return nil
	}
	c.ep.emit(Event{Kind: EventStreamReadable, Conn: c, Stream: s})
	return nil
}

func (c *Conn) forget(s *Stream) {
	if c.streams[s.id] != s {
		return
	}
	delete(c.streams, s.id)
	c.sched.Unregister(s.id)
	if !c.locallyOpened(s.id) {
		c.peerStreams--
		c.peerDone.add(s.id, s.id+1)
	}
}

func (c *Conn) queueReset(s *Stream) {
	c.resets = append(c.resets, s)
	c.queueControl()
}

func (c *Conn) queueControl() {
	c.control = true
	c.ep.wantSend(c)
}

// --- flow control --------------------------------------------------------

func (c *Conn) sendCredit() uint64 {
	if c.connSent >= c.peerConnMax {
		return 0
	}
	return c.peerConnMax - c.connSent
}

func (c *Conn) spendCredit(n uint64) { c.connSent += n }

func (c *Conn) chargeRecv(n uint64) error {
	if c.connRecv+n > c.localConnMax {
		return errFlowControl
	}
	c.connRecv += n
	return nil
}

func (c *Conn) consumed(n uint64) {
	c.connRead += n
	if c.localConnMax-c.connRead < c.cfg.ConnWindow/2 {
		c.localConnMax = c.connRead + c.cfg.ConnWindow
		c.sendConnMax = true
		c.queueControl()
	}
}

// --- datagrams -----------------------------------------------------------

// ErrDatagramTooLarge refuses a datagram that cannot fit one packet.
var ErrDatagramTooLarge = errors.New("transport: datagram larger than one packet")

// MaxDatagramPayload is the largest datagram SendDatagram takes.
func (c *Conn) MaxDatagramPayload() int {
	return c.maxDgram - crypto.PacketOverhead - datagramHeaderLen
}

// SendDatagram queues an unreliable datagram (copied). When the queue is
// full the oldest is dropped and counted: datagrams are never retransmitted.
func (c *Conn) SendDatagram(p []byte) error {
	if len(p) > c.MaxDatagramPayload() {
		return ErrDatagramTooLarge
	}
	if c.state != stateEstablished {
		return c.closeErrOr()
	}
	if len(c.datagrams) >= c.cfg.DatagramQueue {
		c.datagrams = c.datagrams[1:]
		c.stats.DatagramsDropped++
	}
	c.datagrams = append(c.datagrams, append([]byte(nil), p...))
	c.sched.Ready(datagramQueue)
	c.ep.wantSend(c)
	return nil
}

// --- closing -------------------------------------------------------------

// Close closes the connection with an application code and reason: a CLOSE
// frame goes out, and the connection is gone after three probe timeouts.
func (c *Conn) Close(code uint64, reason string, now time.Time) {
	if c.state >= stateClosing {
		return
	}
	c.enterClosing(&CloseError{Code: code, Reason: reason}, now)
}

func (c *Conn) enterClosing(err *CloseError, now time.Time) {
	c.closeErr = err
	if c.session == nil || c.state == stateHandshake && c.initiator {
		c.finish(now)
		return
	}
	c.state = stateClosing
	c.closeAt = now.Add(3 * c.pto())
	c.control = true
	c.ep.wantSend(c)
}

func (c *Conn) finish(time.Time) {
	if c.state == stateClosed {
		return
	}
	c.state = stateClosed
	if c.closeErr == nil {
		c.closeErr = &CloseError{Code: CodeNoError, Reason: "closed"}
	}
	c.ep.remove(c)
	c.ep.emit(Event{Kind: EventClosed, Conn: c, Err: c.closeErr})
}

// --- timers --------------------------------------------------------------

func (c *Conn) pto() time.Duration {
	return c.rtt.Smoothed + max(4*c.rtt.Variance, time.Millisecond) + c.cfg.MaxAckDelay
}

// Deadline returns when the connection next needs OnTimer/Transmit.
func (c *Conn) Deadline() time.Time {
	var d time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	switch c.state {
	case stateClosed:
		return time.Time{}
	case stateClosing, stateDraining:
		return c.closeAt
	case stateHandshake:
		earliest(c.hsNext)
	}
	earliest(c.lastHeard.Add(c.cfg.IdleTimeout))
	if c.ackPending > 0 {
		earliest(c.ackAt)
	}
	earliest(c.lazyAt)
	earliest(c.lossTime)
	if c.lossTime.IsZero() && c.inFlight > 0 {
		earliest(c.lastAckElicit.Add(c.pto() << min(c.ptoCount, 10)))
	}
	return d
}

// onTimer runs the timers that expired by now.
func (c *Conn) onTimer(now time.Time) {
	switch c.state {
	case stateClosed:
		return
	case stateClosing, stateDraining:
		if !now.Before(c.closeAt) {
			c.finish(now)
		}
		return
	}
	if !now.Before(c.lastHeard.Add(c.cfg.IdleTimeout)) {
		if c.closeErr == nil {
			c.closeErr = ErrIdleTimeout
		}
		c.finish(now)
		return
	}
	if c.state == stateHandshake && c.initiator && !c.hsNext.IsZero() && !now.Before(c.hsNext) {
		c.hsTries++
		c.hsNext = now.Add(c.cfg.InitialRTT * 3 << min(c.hsTries, 6))
		c.ep.wantSend(c)
	}
	if c.ackPending > 0 && !now.Before(c.ackAt) {
		c.ackNow = true
		c.ep.wantSend(c)
	}
	if !c.lazyAt.IsZero() && !now.Before(c.lazyAt) {
		c.sendLazy()
		c.ep.wantSend(c)
	}
	if !c.lossTime.IsZero() && !now.Before(c.lossTime) {
		c.detectLoss(now)
		c.ep.wantSend(c)
	} else if c.lossTime.IsZero() && c.inFlight > 0 && !now.Before(c.lastAckElicit.Add(c.pto()<<min(c.ptoCount, 10))) {
		c.ptoCount++
		c.probes = 2
		c.probeRetransmit()
		c.ep.wantSend(c)
	}
}

// probeRetransmit queues the oldest in-flight data again (a probe must carry
// something useful, or a PING).
func (c *Conn) probeRetransmit() {
	for i := c.sentHead; i < len(c.sent); i++ {
		p := &c.sent[i]
		if p.done || !p.ackEliciting {
			continue
		}
		for _, f := range p.frames {
			c.requeue(f)
		}
		return
	}
	c.pingDue = true
}

// --- receiving -----------------------------------------------------------

// receive processes one protected (1-RTT) packet.
func (c *Conn) receive(pkt []byte, from netip.AddrPort, now time.Time) {
	if c.session == nil || c.state == stateClosed {
		return
	}
	op, err := c.session.Open(pkt, now)
	if err != nil {
		c.stats.PacketsDropped++
		return
	}
	c.stats.PacketsReceived++
	c.stats.BytesReceived += uint64(len(pkt))
	c.lastHeard = now
	if c.state == stateHandshake {
		c.established(now)
	}
	if c.state == stateDraining {
		return
	}
	if from != c.peer {
		c.peer = from // the peer moved (NAT rebinding): follow authenticated packets
	}
	ackEliciting, err := c.handleFrames(op.Payload, now)
	if err != nil {
		var ce *CloseError
		if !errors.As(err, &ce) {
			ce = &CloseError{Code: CodeProtocolViolation, Reason: err.Error()}
		}
		if ce.Remote {
			c.closeErr = ce
			c.state = stateDraining
			c.closeAt = now.Add(3 * c.pto())
			return
		}
		c.enterClosing(ce, now)
		return
	}
	if c.state == stateClosing {
		c.control = true // answer with CLOSE again
		c.ep.wantSend(c)
		return
	}
	pn := op.PacketNumber
	outOfOrder := !c.recvPNs.contains(pn-1) && pn > 0 && c.largestRecvAt != (time.Time{})
	c.recvPNs.add(pn, pn+1)
	c.recvPNs.trimLow(maxAckRanges)
	if pn >= c.largestRecv || c.largestRecvAt.IsZero() {
		c.largestRecv, c.largestRecvAt = pn, now
	}
	if ackEliciting {
		if c.ackPending == 0 {
			c.ackAt = now.Add(c.cfg.MaxAckDelay)
		}
		c.ackPending++
		if c.ackPending >= 2 || outOfOrder {
			c.ackNow = true
		}
		c.ep.wantSend(c)
	}
}

const maxAckRanges = 32

func (c *Conn) established(now time.Time) {
	if !c.initiator && c.hsPkt != nil {
		c.ep.handshakes--
	}
	c.state = stateEstablished
	c.hs, c.hsPkt, c.hsNext = nil, nil, time.Time{}
	// The handshake's round trip is the first RTT sample (the peer's
	// handshake work included, as QUIC's Initial samples include the
	// server's): without it PTO, and so the first requests' loss recovery
	// and a closing connection's three-PTO linger, rest on InitialRTT (a
	// closed connection lingered ~1 s on loopback).
	if !c.hsSentAt.IsZero() && !c.haveRTT {
		c.updateRTT(now.Sub(c.hsSentAt), 0)
	}
	c.hsSentAt = time.Time{}
	// Nothing here needs a packet of its own: the initiator's first
	// request usually follows its Finish at once, and takes its window
	// along; the answer takes the responder's (one datagram and one ACK
	// each way instead of two).
	if c.localConnMax > InitialConnWindow {
		c.sendConnMax = true // announce our window
		c.queueLazy(now)
	}
	if !c.initiator {
		c.sendResetToken = true
		if !c.ticketIssued {
			c.issueTicket(now)
		}
		c.queueLazy(now)
	}
	c.ep.emit(Event{Kind: EventConnected, Conn: c})
	c.ep.wantSend(c)
}

// queueLazy owes control frames that can wait for a packet that goes out
// anyway, at most MaxAckDelay (as an ACK may).
func (c *Conn) queueLazy(now time.Time) {
	if c.lazyAt.IsZero() {
		c.lazyAt = now.Add(c.cfg.MaxAckDelay)
	}
}

// sendLazy ends the wait of lazy control frames: they go in the next packet.
func (c *Conn) sendLazy() {
	c.lazyAt = time.Time{}
	c.control = true
}

func (c *Conn) handleFrames(p []byte, now time.Time) (ackEliciting bool, err error) {
	var f Frame
	f.Ack.Ranges = c.ep.ackScratch[:0]
	for off := 0; off < len(p); {
		off, err = ParseFrame(p, off, &f)
		if err != nil {
			return ackEliciting, err
		}
		if f.Type != FrameAck && f.Type != FramePadding {
			ackEliciting = true
		}
		switch f.Type {
		case FrameAck:
			c.onAck(&f.Ack, now)
		case FrameStreamOpen:
			if f.Class >= uint8(scheduler.NumClasses) {
				return ackEliciting, &CloseError{Code: CodeProtocolViolation, Reason: "bad stream class"}
			}
			if _, err := c.streamFor(f.Stream, scheduler.Class(f.Class), now); err != nil {
				return ackEliciting, err
			}
		case FrameStreamData:
			s, err := c.streamFor(f.Stream, scheduler.Bulk, now)
			if err != nil {
				return ackEliciting, err
			}
			if s != nil {
				if err := s.onData(f.Offset, f.Data); err != nil {
					return ackEliciting, err
				}
			}
		case FrameStreamFin, FrameStreamReset:
			s, err := c.streamFor(f.Stream, scheduler.Bulk, now)
			if err != nil {
				return ackEliciting, err
			}
			if s != nil {
				if f.Type == FrameStreamFin {
					err = s.onFin(f.Offset)
				} else {
					err = s.onReset(f.Offset)
				}
				if err != nil {
					return ackEliciting, err
				}
			}
		case FrameDatagram:
			c.ep.emit(Event{Kind: EventDatagram, Conn: c, Data: append([]byte(nil), f.Data...)})
		case FrameCrypto:
			c.onCrypto(f.Data, now)
		case FrameControl:
			switch f.Control {
			case ControlClose:
				return ackEliciting, &CloseError{Code: f.Code, Reason: string(f.Data), Remote: true}
			case ControlPathChallenge:
				// answered by the packet's ACK; path validation is future work
			case ControlResetToken:
				if c.initiator {
					copy(c.resetToken[:], f.Data)
					c.haveResetToken = true
				}
			}
		case FrameStreamMaxData:
			if s := c.streams[f.Stream]; s != nil && f.Limit > s.peerMax {
				s.peerMax = f.Limit
				if s.wantsToSend() {
					c.streamReady(s)
				}
			}
		case FrameConnectionMaxData:
			if f.Limit > c.peerConnMax {
				c.peerConnMax = f.Limit
				c.readyAll()
			}
		}
	}
	c.ep.ackScratch = f.Ack.Ranges[:0]
	return ackEliciting, nil
}

// streamFor finds the stream a frame names; peer-initiated streams are
// created. Data for a stream the peer may not send on is a protocol error.
func (c *Conn) streamFor(id uint64, class scheduler.Class, now time.Time) (*Stream, error) {
	sid := wire.StreamID(id)
	if sid.Kind() == wire.StreamIDUnidirectional && c.locallyOpened(id) {
		return nil, &CloseError{Code: CodeProtocolViolation, Reason: "data on our unidirectional stream"}
	}
	return c.peerStream(id, class, now)
}

func (c *Conn) readyAll() {
	for id, s := range c.streams {
		if s.wantsToSend() {
			c.sched.Ready(id)
		}
	}
	c.ep.wantSend(c)
}

func (c *Conn) onCrypto(data []byte, now time.Time) {
	if c.initiator && c.session != nil {
		if t, err := c.session.HandleNewTicket(data, now); err == nil {
			c.ep.emit(Event{Kind: EventTicket, Conn: c, Ticket: &t})
		}
	}
}

// --- acknowledgements and loss ------------------------------------------

func (c *Conn) onAck(a *wire.AckFrame, now time.Time) {
	if len(a.Ranges) == 0 || a.Largest >= c.session.NextPacketNumber() {
		return
	}
	newlyAcked := 0
	var largestNew *sentPacket
	var ackedElicit bool
	ri := 0 // ranges are sorted by End descending; walk packets from the newest
	for i := len(c.sent) - 1; i >= c.sentHead && ri < len(a.Ranges); i-- {
		p := &c.sent[i]
		for ri < len(a.Ranges) && p.pn < a.Ranges[ri].Start {
			ri++
		}
		if ri == len(a.Ranges) || p.pn > a.Ranges[ri].End || p.done {
			continue
		}
		p.done = true
		if largestNew == nil {
			largestNew = p
		}
		if p.ackEliciting {
			ackedElicit = true
			c.inFlight -= p.size
			newlyAcked += p.size
		}
		c.session.OnPacketAcked(p.pn)
		for _, f := range p.frames {
			c.acked(f)
		}
		c.releaseFrames(p)
	}
	if largestNew == nil {
		return
	}
	if !c.haveAcked || a.Largest > c.largestAcked {
		c.largestAcked, c.haveAcked = a.Largest, true
	}
	// largestNew points into c.sent, which detectLoss compacts: copy first.
	largestPN, largestSent := largestNew.pn, largestNew.time
	if largestPN == a.Largest && ackedElicit {
		c.updateRTT(now.Sub(largestSent), time.Duration(a.AckDelayMicros)*time.Microsecond)
	}
	c.ptoCount = 0
	c.detectLoss(now)
	if newlyAcked > 0 {
		c.cong.OnAcked(now, newlyAcked, largestSent, c.rtt, c.inFlight)
	}
	c.compactSent()
	c.ep.wantSend(c)
}

func (c *Conn) updateRTT(sample, ackDelay time.Duration) {
	if sample <= 0 {
		sample = time.Microsecond
	}
	c.rtt.Latest = sample
	if !c.haveRTT {
		c.haveRTT = true
		c.rtt.Min, c.rtt.Smoothed, c.rtt.Variance = sample, sample, sample/2
		return
	}
	c.rtt.Min = min(c.rtt.Min, sample)
	adj := sample
	if ackDelay = min(ackDelay, c.cfg.MaxAckDelay); adj-ackDelay >= c.rtt.Min {
		adj -= ackDelay
	}
	d := c.rtt.Smoothed - adj
	if d < 0 {
		d = -d
	}
	c.rtt.Variance = (3*c.rtt.Variance + d) / 4
	c.rtt.Smoothed = (7*c.rtt.Smoothed + adj) / 8
}

// detectLoss declares lost the in-flight packets older than the largest
// acknowledged by 3 packets or by 9/8 of the RTT, and arms the loss timer
// for the next candidate.
func (c *Conn) detectLoss(now time.Time) {
	c.lossTime = time.Time{}
	if !c.haveAcked {
		return
	}
	delay := max(9*max(c.rtt.Smoothed, c.rtt.Latest)/8, time.Millisecond)
	lostBytes := 0
	var lostNewest, lostOldest time.Time
	for i := c.sentHead; i < len(c.sent); i++ {
		p := &c.sent[i]
		if p.pn > c.largestAcked {
			break
		}
		if p.done {
			continue
		}
		if c.largestAcked-p.pn >= 3 || !p.time.After(now.Add(-delay)) {
			p.done = true
			c.stats.PacketsLost++
			if p.ackEliciting {
				c.inFlight -= p.size
				lostBytes += p.size
				if lostOldest.IsZero() {
					lostOldest = p.time
				}
				lostNewest = p.time
			}
			for _, f := range p.frames {
				c.requeue(f)
			}
			c.releaseFrames(p)
			continue
		}
		if t := p.time.Add(delay); c.lossTime.IsZero() || t.Before(c.lossTime) {
			c.lossTime = t
		}
	}
	if lostBytes > 0 {
		c.cong.OnLost(now, lostBytes, lostNewest)
		// Persistent congestion: everything sent over a long period was lost.
		if c.haveRTT && lostNewest.Sub(lostOldest) > 3*c.pto() {
			c.cong.OnPersistentCongestion(now)
		}
	}
	c.compactSent()
}

// acked applies the acknowledgement of one sent frame.
func (c *Conn) acked(f sentFrame) {
	s := c.streams[f.stream]
	switch f.kind {
	case FrameStreamData, FrameStreamFin:
		if s != nil {
			s.onAcked(f.offset, uint64(f.length), f.kind == FrameStreamFin)
		}
	case FrameStreamReset:
		if s != nil {
			s.finAcked = true
			s.maybeDone()
		}
	}
}

// requeue schedules what a lost frame carried to be sent again.
func (c *Conn) requeue(f sentFrame) {
	s := c.streams[f.stream]
	switch f.kind {
	case FrameStreamData, FrameStreamFin:
		if s != nil {
			c.stats.StreamBytesRetransmitted += uint64(f.length)
			s.onLost(f.offset, uint64(f.length), f.kind == FrameStreamFin)
		}
	case FrameStreamOpen:
		if s != nil {
			s.openSent = false
			c.streamReady(s)
		}
	case FrameStreamReset:
		if s != nil {
			c.queueReset(s)
		}
	case FrameStreamMaxData:
		if s != nil {
			s.sendMax = true
			c.queueControl()
		}
	case FrameConnectionMaxData:
		c.sendConnMax = true
		c.queueControl()
	case FrameCrypto:
		// tickets are best effort
	case FrameControl:
		if f.stream == uint64(ControlResetToken) {
			c.sendResetToken = true
			c.queueControl()
		}
	}
}

func (c *Conn) releaseFrames(p *sentPacket) {
	if p.frames != nil {
		c.frameFree = append(c.frameFree, p.frames[:0])
		p.frames = nil
	}
}

// compactSent drops finished packets from the front of the sent list.
func (c *Conn) compactSent() {
	for c.sentHead < len(c.sent) && c.sent[c.sentHead].done {
		c.sent[c.sentHead] = sentPacket{}
		c.sentHead++
	}
	if c.sentHead == len(c.sent) {
		c.sent, c.sentHead = c.sent[:0], 0
	} else if c.sentHead > 64 && c.sentHead > len(c.sent)/2 {
		n := copy(c.sent, c.sent[c.sentHead:])
		clear(c.sent[n:])
		c.sent, c.sentHead = c.sent[:n], 0
	}
}

// --- sending -------------------------------------------------------------

// transmit writes the next packet into buf (capacity ≥ MaxDatagramSize) and
// returns it, or nil when there is nothing to send now.
func (c *Conn) transmit(buf []byte, now time.Time) []byte {
	switch c.state {
	case stateClosed, stateDraining:
		return nil
	case stateHandshake:
		if pkt := c.transmitHandshake(buf, now); pkt != nil || !c.halfRTT() {
			return pkt
		}
	}
	if c.finPkt != nil { // the initiator's key confirmation goes first
		p := append(buf[:0], c.finPkt...)
		c.finPkt = nil
		return p
	}
	maxPayload := min(c.maxDgram, cap(buf)) - crypto.PacketOverhead
	if c.state == stateHandshake {
		// 0.5-RTT: within what the unvalidated address may be sent.
		maxPayload = min(maxPayload, c.halfRTTBudget()-crypto.PacketOverhead)
		if maxPayload < minHalfRTTPayload {
			return nil
		}
	}
	p := buf[wire.PacketHeaderLen:wire.PacketHeaderLen]
	if c.state == stateClosing {
		if !c.control {
			return nil
		}
		c.control = false
		code, reason := CodeNoError, ""
		var ce *CloseError
		if errors.As(c.closeErr, &ce) {
			code, reason = ce.Code, ce.Reason
		}
		p = appendClose(p, code, reason)
		return c.seal(buf, p, nil, false, now)
	}

	ackDue := c.ackPending > 0 && (c.ackNow || !now.Before(c.ackAt))
	canSend := c.probes > 0 || c.inFlight+c.maxDgram <= c.cong.Window()
	if canSend && c.probes == 0 {
		if t := c.pacer.NextSend(now, c.cong.Window(), c.rtt, c.maxDgram); t.After(now) {
			canSend = false
			c.ep.paceUntil(c, t)
		}
	}
	if !canSend && !ackDue {
		return nil
	}
	if !c.lazyAt.IsZero() && canSend && (ackDue || c.control || c.pingDue || c.sched.Len() > 0) {
		c.sendLazy() // a packet goes out: they ride on it
	}
	frames := c.takeFrames()
	// An ACK rides on every packet that goes out anyway; alone, it waits
	// until it is due (two ack-eliciting packets, a gap, or the ack delay),
	// so a request answered on the same connection carries its ACK.
	pending, now2 := c.ackPending, c.ackNow
	if c.ackPending > 0 {
		p = c.appendAck(p, now)
	}
	ackOnly := len(p)
	if canSend {
		p, frames = c.fill(p, maxPayload, frames)
	}
	if len(p) == ackOnly && !ackDue {
		c.ackPending, c.ackNow = pending, now2 // not sent: still owed
		c.putFrames(frames)
		return nil
	}
	elicit := len(frames) > 0 || c.lastFillElicits
	c.lastFillElicits = false
	if c.probes > 0 && elicit {
		c.probes--
	}
	return c.seal(buf, p, frames, elicit, now)
}

func (c *Conn) takeFrames() []sentFrame {
	if n := len(c.frameFree); n > 0 {
		f := c.frameFree[n-1]
		c.frameFree = c.frameFree[:n-1]
		return f
	}
	return make([]sentFrame, 0, 8)
}

func (c *Conn) putFrames(f []sentFrame) { c.frameFree = append(c.frameFree, f[:0]) }

func (c *Conn) appendAck(p []byte, now time.Time) []byte {
	rs := c.ep.ackScratch[:0]
	for i := len(c.recvPNs.r) - 1; i >= 0; i-- {
		iv := c.recvPNs.r[i]
		rs = append(rs, wire.AckRange{Start: iv.start, End: iv.end - 1})
	}
	c.ep.ackScratch = rs[:0]
	if len(rs) == 0 {
		return p
	}
	delay := uint64(now.Sub(c.largestRecvAt) / time.Microsecond)
	out, err := wire.AppendAckFrame(append(p, byte(FrameAck)), &wire.AckFrame{Largest: rs[0].End, AckDelayMicros: delay, Ranges: rs})
	if err != nil {
		return p
	}
	c.ackPending, c.ackNow = 0, false
	return out
}

// fill appends control, datagram and stream frames to p, up to max bytes,
// and records what must be acted on when the packet is acked or lost.
func (c *Conn) fill(p []byte, limit int, frames []sentFrame) ([]byte, []sentFrame) {
	if c.control {
		c.control = false
		if c.sendResetToken && len(p)+18 <= limit {
			c.sendResetToken = false
			tok := c.ep.resetToken(c.cid)
			p = append(p, byte(FrameControl), ControlResetToken)
			p = append(p, tok[:]...)
			frames = append(frames, sentFrame{kind: FrameControl, stream: uint64(ControlResetToken)})
		}
		if c.sendConnMax && len(p)+connMaxDataLen <= limit {
			c.sendConnMax = false
			p = appendConnMaxData(p, c.localConnMax)
			frames = append(frames, sentFrame{kind: FrameConnectionMaxData})
		}
		for id, s := range c.streams {
			if s.sendMax && len(p)+streamMaxDataLen <= limit {
				s.sendMax = false
				p = appendStreamMaxData(p, id, s.localMax)
				frames = append(frames, sentFrame{kind: FrameStreamMaxData, stream: id})
			} else if s.sendMax {
				c.control = true
			}
		}
		for len(c.resets) > 0 && len(p)+25 <= limit {
			s := c.resets[0]
			c.resets = c.resets[1:]
			p = appendStreamReset(p, s.id, s.resetCode, s.sendNext)
			frames = append(frames, sentFrame{kind: FrameStreamReset, stream: s.id})
		}
		if len(c.resets) > 0 {
			c.control = true
		}
	}
	for len(c.cryptoOut) > 0 && c.lazyAt.IsZero() && len(p)+3+len(c.cryptoOut[0]) <= limit {
		p = appendLenData(p, FrameCrypto, c.cryptoOut[0])
		c.cryptoOut = c.cryptoOut[1:]
		c.lastFillElicits = true
	}
	if c.pingDue {
		c.pingDue = false
		p = appendPing(p)
		c.lastFillElicits = true
	}
	for len(p)+streamDataHeaderLen < limit {
		id, ok := c.sched.Next()
		if !ok {
			break
		}
		before := len(p)
		if id == datagramQueue {
			d := c.datagrams[0]
			if len(p)+datagramHeaderLen+len(d) > limit {
				if datagramHeaderLen+len(d) > limit && c.state == stateEstablished {
					// It fits no packet in the buffers this connection is
					// given (smaller than the datagram size it was
					// promised): drop it, as the network may, rather than
					// hold up the datagrams behind it for good.
					c.datagrams = c.datagrams[1:]
					c.stats.DatagramsDropped++
					c.sched.Sent(id, 0, len(c.datagrams) > 0)
					continue
				}
				break // next packet
			}
			p = appendLenData(p, FrameDatagram, d)
			c.datagrams = c.datagrams[1:]
			c.lastFillElicits = true
			c.sched.Sent(id, len(p)-before, len(c.datagrams) > 0)
			continue
		}
		s := c.streams[id]
		if s == nil {
			c.sched.Sent(id, 0, false)
			continue
		}
		if !s.openSent && c.locallyOpened(s.id) {
			if len(p)+10 > limit {
				break
			}
			p = appendStreamOpen(p, s.id, uint8(s.class))
			frames = append(frames, sentFrame{kind: FrameStreamOpen, stream: s.id})
			s.openSent = true
		}
		if room := limit - len(p) - streamDataHeaderLen; room > 0 && (!s.retrans.empty() || s.hasNewData()) {
			off, data := s.nextChunk(room)
			if len(data) > 0 {
				p = appendStreamDataHeader(p, s.id, off, len(data))
				p = append(p, data...)
				frames = append(frames, sentFrame{kind: FrameStreamData, stream: s.id, offset: off, length: uint32(len(data))})
			}
		}
		if s.finWritten && !s.finSent && s.allDataSent() && len(p)+streamFinLen <= limit {
			p = appendStreamFin(p, s.id, s.writeEnd())
			frames = append(frames, sentFrame{kind: FrameStreamFin, stream: s.id, offset: s.writeEnd()})
			s.finSent = true
		}
		c.sched.Sent(id, len(p)-before, s.wantsToSend())
		if len(p) == before {
			break // the stream could not use the room left
		}
	}
	return p, frames
}

// seal protects the payload p (already at buf[32:]) and records the packet.
func (c *Conn) seal(buf, p []byte, frames []sentFrame, elicit bool, now time.Time) []byte {
	flags := uint8(0)
	if elicit {
		flags |= wire.PacketFlagAckEliciting
	}
	pkt, pn, err := c.session.Seal(buf, flags, p)
	if err != nil {
		if frames != nil {
			for _, f := range frames {
				c.requeue(f)
			}
			c.putFrames(frames)
		}
		return nil
	}
	c.stats.PacketsSent++
	c.stats.BytesSent += uint64(len(pkt))
	if elicit {
		c.sent = append(c.sent, sentPacket{pn: pn, time: now, size: len(pkt), ackEliciting: true, frames: frames})
		c.inFlight += len(pkt)
		c.lastAckElicit = now
		c.cong.OnSent(now, len(pkt), c.inFlight)
		c.pacer.OnSent(now, len(pkt), c.cong.Window(), c.rtt)
	} else if frames != nil {
		c.putFrames(frames)
	}
	return pkt
}

// hasWork reports whether transmit may produce a packet now.
func (c *Conn) hasWork(now time.Time) bool {
	switch c.state {
	case stateClosed, stateDraining:
		return false
	case stateClosing:
		return c.control
	case stateHandshake:
		if c.initiator {
			return c.hsTries == 0 || c.hsSent != c.hsTries
		}
		if c.replyDue {
			return true
		}
		if !c.halfRTT() || c.halfRTTBudget() < crypto.PacketOverhead+minHalfRTTPayload {
			return false
		}
	}
	if c.finPkt != nil || c.ackNow || (c.ackPending > 0 && !now.Before(c.ackAt)) {
		return true
	}
	return c.control || c.pingDue || len(c.cryptoOut) > 0 && c.lazyAt.IsZero() || c.sched.Len() > 0
}

// issueTicket queues a session ticket for the initiator (a responder with
// ticket keys): resumption with 0-RTT data next time.
func (c *Conn) issueTicket(now time.Time) {
	c.ticketIssued = true
	if c.cfg.Crypto.TicketKeys == nil {
		return
	}
	if t, err := c.session.NewTicket(now); err == nil {
		c.cryptoOut = append(c.cryptoOut, t)
	}
}

// halfRTT reports whether the connection may send 1-RTT packets while its
// handshake runs: a responder that answered a hello whose 0-RTT data it
// accepted (a resumption) may send its replies to that data right behind
// its ResponderHello, before the initiator's Finish, within the
// anti-amplification limit (three times what the unvalidated address
// sent). Other responders wait for the Finish as before; initiators send
// nothing but the hello until they have the keys.
func (c *Conn) halfRTT() bool {
	return c.state == stateHandshake && !c.initiator && c.session != nil && c.session.EarlyDataAccepted()
}

// halfRTTBudget is how many bytes 0.5-RTT packets may still take.
func (c *Conn) halfRTTBudget() int {
	return int(min(c.session.Amplification().Budget(), uint64(c.maxDgram)))
}

// minHalfRTTPayload is the least payload worth a 0.5-RTT packet.
const minHalfRTTPayload = 64

// EarlyDataAccepted reports, on an initiator that resumed with 0-RTT data
// (Endpoint.DialResume), whether the responder accepted that data: once
// the handshake completed (EventConnected), false means the data was not
// delivered and must be sent again.
func (c *Conn) EarlyDataAccepted() bool {
	return c.session != nil && c.session.EarlyDataAccepted()
}

// transmitHandshake sends the initiator's hello (and its retransmissions)
// or the responder's reply.
func (c *Conn) transmitHandshake(buf []byte, now time.Time) []byte {
	if c.hsPkt == nil {
		return nil
	}
	if c.initiator {
		if c.hsTries == 0 {
			c.hsTries = 1
			c.hsNext = now.Add(c.cfg.InitialRTT * 3)
		}
		if c.hsSent == c.hsTries {
			return nil
		}
		c.hsSent = c.hsTries
		c.hsSentAt = time.Time{}
		if c.hsTries == 1 {
			c.hsSentAt = now
		}
		pkt, err := c.hs.Hello(now)
		if err != nil {
			c.closeErr = err
			c.finish(now)
			return nil
		}
		c.hsPkt = pkt
		return append(buf[:0], pkt...)
	}
	// Responder: the reply, once per hello received, within the amplification
	// limit (the first is counted by the handshake that made it).
	if !c.replyDue {
		return nil
	}
	c.replyDue = false
	if c.replySent {
		c.hsSentAt = time.Time{} // asked for again: no sample (Karn's rule), sent or not
		if err := c.session.Amplification().TrySend(len(c.hsPkt)); err != nil {
			return nil
		}
	} else {
		c.hsSentAt = now
	}
	c.replySent = true
	return append(buf[:0], c.hsPkt...)
}

// sortedStreamIDs lists stream IDs in order (tests and debugging).
func (c *Conn) sortedStreamIDs() []uint64 {
	ids := make([]uint64, 0, len(c.streams))
	for id := range c.streams {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
