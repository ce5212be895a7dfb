package mesh

import (
	"context"
	"crypto/rand"
	"io"
	"sync"
	"time"

	"github.com/mxp-dataplane/mxp/transport"
	"github.com/mxp-dataplane/mxp/wire"
)

// Streams between agents (LLM token streams and the like) travel as
// StreamOpen, StreamChunk and StreamClose messages, through the node or, for
// an agent with AgentConfig.Direct that discovered its peer, straight to the
// peer's endpoint. The first chunk from the opener carries the request (u16
// method length | method | body). Flow control end to end: a receiver that
// consumed chunks sends a credit — a StreamChunk with REQUIRES_ACK set, no
// data, and the count of chunks consumed as its sequence — and a sender
// keeps at most streamWindow chunks unconsumed.
//
// The hot path costs no allocation and no shard command per chunk: Send
// encodes the whole message into the stream's outbox (one lock), and one
// shard command hands everything queued since the last one to the transport
// in one call; the shard copies received chunks into a shared arena and
// queues them (one lock), and Recv takes them a batch at a time.

const (
	streamWindow = 4096
	// recvBlock is the size of the arena blocks received chunks are copied
	// into; a chunk larger than a quarter block gets its own allocation.
	recvBlock = 16 << 10
	// outboxKeep is the largest outbox buffer kept for reuse once sent.
	outboxKeep = 1 << 20
)

// Stream is one bidirectional stream of chunks with another agent. Send
// and CloseSend may be called from any goroutines, as may Recv.
type Stream struct {
	a       *Agent
	id      wire.UUID
	trace   uint64
	opener  bool // OpenStream made it (else the peer opened it)
	flushFn func(time.Time)
	// conn is the connection the stream travels on: the node's or a direct
	// one. Shard goroutine only; set by the first command that sends.
	conn *transport.Conn

	// Each group below is written by a different goroutine on every chunk:
	// the pads keep them on cache lines of their own.
	_ cacheLinePad

	// Receiving: the shard appends chunks to in, under mu.
	mu      sync.Mutex
	rcond   sync.Cond
	in      [][]byte // received chunks not yet taken by Recv
	inErr   error    // why no more chunks come (io.EOF: the peer closed)
	rwait   bool     // a Recv waits on rcond
	started bool     // the request (the first chunk to a served stream) arrived
	// Shard goroutine only: the free part of the arena block, and chunks
	// received in this turn, which one command (publishFn) moves to in at
	// the end of the turn (one lock per batch, not per chunk).
	block     []byte
	pend      [][]byte
	pubQueued bool
	publishFn func(time.Time)

	_ cacheLinePad

	// Reading: what Recv took from in, under rmu.
	rmu        sync.Mutex
	rq         [][]byte
	rqHead     int
	consumed   uint64
	creditSent uint64

	_ cacheLinePad

	// Sending, under outMu. out holds encoded messages for the shard; one
	// shard command (flushFn) carries every message queued since the last.
	outMu        sync.Mutex
	ocond        sync.Cond
	sendSeq      uint64
	peerConsumed uint64
	sendClosed   bool
	sendErr      error // the stream failed (not a clean close): Send returns it
	swait        int   // Sends waiting on ocond
	out          []byte
	spare        []byte
	scratch      []byte // a payload being encoded
	flushQueued  bool
}

// cacheLinePad separates fields that different goroutines write (two
// lines: adjacent-line prefetch pairs them).
type cacheLinePad [128]byte

func newStream(a *Agent, id wire.UUID, trace uint64, opener bool) *Stream {
	s := &Stream{a: a, id: id, trace: trace, opener: opener}
	s.rcond.L = &s.mu
	s.ocond.L = &s.outMu
	s.flushFn, s.publishFn = s.flush, s.publish
	return s
}

// ID returns the stream's ID.
func (s *Stream) ID() wire.UUID { return s.id }

// OpenStream opens a stream to method on agent target, sending req as its
// request. With AgentConfig.Direct and target found by Discover, the
// stream goes straight to target (one hop); otherwise through the node.
func (a *Agent) OpenStream(ctx context.Context, target wire.UUID, method string, req []byte) (*Stream, error) {
	if !a.registered.Load() {
		return nil, ErrNotConnected
	}
	var id wire.UUID
	rand.Read(id[:])
	s := newStream(a, id, traceFor(ctx), true)
	a.mu.Lock()
	a.streams[id] = s
	a.sh.reclaim() // its reader waits for the shard's goroutine (Agent.mayLend)
	_, known := a.known[target]
	direct := known && a.cfg.Direct
	a.mu.Unlock()
	open := wire.Message{Type: wire.TypeStreamOpen, MessageID: a.nextID.Add(1), TraceID: s.trace,
		Payload: encodePayload(&wire.StreamOpen{StreamID: id, Target: target, Kind: wire.StreamBidirectional})}
	// Queued before the request's flush: the shard runs commands in order.
	a.sh.do(func(now time.Time) {
		c := a.conn
		if direct {
			if dc := a.directTo(target, now); dc != nil {
				c = dc
			}
		}
		s.conn = c
		if c == nil {
			s.fail(ErrNotConnected)
			return
		}
		a.sh.send(c, &open)
	})
	if err := s.Send(appendMethod(make([]byte, 0, 2+len(method)+len(req)), method, req)); err != nil {
		return nil, err
	}
	return s, nil
}

// Send sends one chunk, waiting while the peer has not consumed
// streamWindow earlier chunks (backpressure). data is copied.
func (s *Stream) Send(data []byte) error {
	s.outMu.Lock()
	for s.sendSeq-s.peerConsumed >= streamWindow && s.sendErr == nil && !s.sendClosed {
		s.swait++
		s.ocond.Wait()
		s.swait--
	}
	if s.sendClosed {
		s.outMu.Unlock()
		return io.ErrClosedPipe
	}
	if err := s.sendErr; err != nil {
		s.outMu.Unlock()
		return err
	}
	if err := s.queueChunkLocked(s.sendSeq, data, 0); err != nil {
		s.outMu.Unlock()
		return err
	}
	s.sendSeq++
	s.kickLocked()
	return nil
}

// queueChunkLocked encodes a StreamChunk message into the outbox (outMu
// held). Only a chunk over the message size limit fails.
func (s *Stream) queueChunkLocked(seq uint64, data []byte, flags wire.MsgFlags) error {
	ch := wire.StreamChunk{StreamID: s.id, Sequence: seq, Data: data}
	var err error
	if s.scratch, err = ch.AppendPayload(s.scratch[:0]); err != nil { // not through wire.Payload: ch would escape
		return err
	}
	return s.queueScratchLocked(wire.TypeStreamChunk, flags)
}

// queueLocked encodes a message carrying p into the outbox (outMu held).
func (s *Stream) queueLocked(p wire.Payload, flags wire.MsgFlags) error {
	var err error
	if s.scratch, err = p.AppendPayload(s.scratch[:0]); err != nil {
		return err
	}
	return s.queueScratchLocked(p.MessageType(), flags)
}

// queueScratchLocked appends the message of type t whose payload is in
// scratch to the outbox (outMu held).
func (s *Stream) queueScratchLocked(t wire.MsgType, flags wire.MsgFlags) error {
	m := wire.Message{Type: t, Flags: flags, MessageID: s.a.nextID.Add(1), TraceID: s.trace, Payload: s.scratch}
	var err error
	if s.out, err = wire.AppendMessage(s.out, &m); err != nil {
		return err
	}
	if cap(s.scratch) > outboxKeep {
		s.scratch = nil
	}
	return nil
}

// kickLocked unlocks outMu and makes sure a shard command will send the
// outbox.
func (s *Stream) kickLocked() {
	queued := s.flushQueued
	s.flushQueued = true
	s.outMu.Unlock()
	if !queued {
		s.a.sh.post(s.flushFn) // the shard sends the chunks posted meanwhile with these
	}
}

// flush hands what the outbox holds to the transport, in order (on the
// shard goroutine).
func (s *Stream) flush(time.Time) {
	s.outMu.Lock()
	b := s.out
	s.out, s.spare = s.spare[:0], nil
	s.flushQueued = false
	s.outMu.Unlock()
	s.transmit(b)
	if cap(b) <= outboxKeep {
		s.outMu.Lock()
		s.spare = b[:0]
		s.outMu.Unlock()
	}
}

// transmit sends encoded messages on the stream's connection: all in one
// call when the transport takes them, the rest through the shard's backlog
// (which keeps the connection's order) when its send buffer is full or the
// handshake still runs.
func (s *Stream) transmit(b []byte) {
	c := s.conn
	if c == nil || c.Err() != nil {
		s.fail(ErrNotConnected)
		return
	}
	s.a.sh.sendEncoded(c, classOf(wire.TypeStreamChunk), b) // a close later fails the stream through its event
}

// Recv returns the next chunk; io.EOF once the peer closed its side, an
// *Error if it closed with an error code. The chunk is the caller's (it
// may share an arena block with other chunks: it does not grow into them).
func (s *Stream) Recv() ([]byte, error) {
	s.rmu.Lock()
	if s.rqHead == len(s.rq) {
		if err := s.refillLocked(); err != nil {
			s.rmu.Unlock()
			return nil, err
		}
	}
	d := s.rq[s.rqHead]
	s.rq[s.rqHead] = nil
	s.rqHead++
	s.consumed++
	credit := s.consumed-s.creditSent >= streamWindow/4
	if credit {
		s.creditSent = s.consumed
	}
	seq := s.consumed
	s.rmu.Unlock()
	if credit {
		s.outMu.Lock()
		if err := s.queueChunkLocked(seq, nil, wire.FlagRequiresAck); err != nil {
			s.outMu.Unlock()
			panic("mesh: encoding a stream credit: " + err.Error())
		}
		s.kickLocked()
	}
	return d, nil
}

// refillLocked takes every chunk the shard queued, waiting for one (rmu held).
func (s *Stream) refillLocked() error {
	s.mu.Lock()
	for len(s.in) == 0 && s.inErr == nil {
		s.rwait = true
		s.rcond.Wait()
	}
	if len(s.in) == 0 {
		err := s.inErr
		s.mu.Unlock()
		return err
	}
	s.rq, s.in = s.in, s.rq[:0]
	s.rqHead = 0
	s.mu.Unlock()
	return nil
}

// CloseSend ends the sending side; the peer's Recv returns io.EOF.
func (s *Stream) CloseSend() error { return s.closeWith(wire.CodeOK, "") }

func (s *Stream) closeWith(code wire.ErrorCode, reason string) error {
	s.outMu.Lock()
	if s.sendClosed {
		s.outMu.Unlock()
		return nil
	}
	s.sendClosed = true
	if s.swait > 0 {
		s.ocond.Broadcast()
	}
	if err := s.queueLocked(&wire.StreamClose{StreamID: s.id, Code: code, Reason: reason}, 0); err != nil {
		s.outMu.Unlock()
		panic("mesh: encoding our own StreamClose: " + err.Error())
	}
	s.kickLocked()
	s.mu.Lock()
	peerDone := s.inErr != nil
	s.mu.Unlock()
	if peerDone {
		s.a.forgetStream(s)
	}
	return nil
}

// forgetStream drops s from the agent's table (both sides closed).
func (a *Agent) forgetStream(s *Stream) {
	a.mu.Lock()
	if a.streams[s.id] == s {
		delete(a.streams, s.id)
	}
	a.mu.Unlock()
}

// fail ends the stream: Recv returns err once the chunks queued are read;
// Send returns it too unless it is io.EOF (the peer closed its side only).
// Callers may hold a.mu.
func (s *Stream) fail(err error) {
	s.mu.Lock()
	if s.inErr == nil {
		s.inErr = err
	}
	if s.rwait {
		s.rwait = false
		s.rcond.Broadcast()
	}
	s.mu.Unlock()
	if err == io.EOF {
		return
	}
	s.outMu.Lock()
	if s.sendErr == nil {
		s.sendErr = err
	}
	if s.swait > 0 {
		s.ocond.Broadcast()
	}
	s.outMu.Unlock()
}

// failStreamsOn fails the streams that travel on c (it closed). The agent
// calls it for a direct connection; the node's fails them all.
func (a *Agent) failStreamsOn(c *transport.Conn, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, s := range a.streams {
		if s.conn == c {
			delete(a.streams, id)
			s.fail(err)
		}
	}
}

// publish hands the chunks received in this turn to Recv (shard goroutine).
func (s *Stream) publish(time.Time) {
	s.pubQueued = false
	if len(s.pend) == 0 {
		return
	}
	s.mu.Lock()
	if len(s.in) == 0 {
		s.in, s.pend = s.pend, s.in
	} else {
		s.in = append(s.in, s.pend...)
		clear(s.pend)
	}
	s.pend = s.pend[:0]
	wake := s.rwait
	s.rwait = false
	s.mu.Unlock()
	if wake {
		s.rcond.Signal()
	}
}

// carve copies a received chunk into the arena (shard goroutine only).
func (s *Stream) carve(d []byte) []byte {
	n := len(d)
	switch {
	case n == 0:
		return nil
	case n > recvBlock/4:
		return append([]byte(nil), d...)
	}
	if len(s.block) < n {
		s.block = make([]byte, recvBlock)
	}
	b := s.block[:n:n]
	s.block = s.block[n:]
	copy(b, d)
	return b
}

// onStreamMessage runs on the shard goroutine.
func (a *Agent) onStreamMessage(sh *shard, c *transport.Conn, m *wire.Message) {
	if len(m.Payload) < 16 {
		return
	}
	id := wire.UUID(m.Payload[:16])
	a.mu.Lock()
	s := a.streams[id]
	if s == nil && m.Type == wire.TypeStreamOpen {
		s = newStream(a, id, m.TraceID, false)
		s.conn = c
		a.streams[id] = s
		a.sh.reclaim() // its reader waits for the shard's goroutine (Agent.mayLend)
	}
	a.mu.Unlock()
	if s == nil {
		return
	}
	switch m.Type {
	case wire.TypeStreamChunk:
		var ch wire.StreamChunk
		if ch.DecodePayload(m.Payload) != nil {
			return
		}
		if m.Flags&wire.FlagRequiresAck != 0 && len(ch.Data) == 0 {
			s.outMu.Lock()
			if ch.Sequence > s.peerConsumed {
				s.peerConsumed = ch.Sequence
				if s.swait > 0 {
					s.ocond.Broadcast()
				}
			}
			s.outMu.Unlock()
			return
		}
		if !s.opener && ch.Sequence == 0 {
			s.mu.Lock()
			first := !s.started
			s.started = true
			s.mu.Unlock()
			if first {
				a.serveStream(s, ch.Data)
				return
			}
		}
		s.pend = append(s.pend, s.carve(ch.Data))
		if !s.pubQueued {
			s.pubQueued = true
			sh.enqueue(s.publishFn) // runs in the Transmit after this receive batch
		}
	case wire.TypeStreamClose:
		var cl wire.StreamClose
		if cl.DecodePayload(m.Payload) != nil {
			return
		}
		s.publish(time.Time{}) // the chunks before the close first
		err := error(io.EOF)
		if cl.Code != wire.CodeOK {
			err = &Error{Code: cl.Code, Message: cl.Reason}
		}
		s.fail(err)
		s.outMu.Lock()
		done := s.sendClosed
		s.outMu.Unlock()
		if done {
			a.forgetStream(s)
		}
	}
}

// relayStream passes a stream message on at the node, from the connection
// it came in on to the one it goes out on (owned by shard to), as the bytes
// arrived (no decode, encode and checksum again): sent at once on the same
// shard, through the other shard's inbox else.
func relayStream(from, to *shard, in, out *transport.Conn, m *wire.Message) {
	raw := in.MessageBytes()
	switch {
	case raw == nil:
		forward(from, to, out, m)
	case from == to:
		from.sendEncoded(out, classOf(m.Type), raw)
	default:
		to.forwardEncodedIn(out, m.Type, raw)
		from.kickLater(to)
	}
}

// serveStream starts the handler of an incoming stream.
func (a *Agent) serveStream(s *Stream, first []byte) {
	mb, body, ok := splitMethod(first)
	method := string(mb)
	a.mu.Lock()
	fn := a.streamHandlers[method]
	a.mu.Unlock()
	if !ok || fn == nil {
		s.closeWith(wire.CodeNotFound, "no stream method "+method)
		return
	}
	req := &Request{Method: method, Body: append([]byte(nil), body...), TraceID: s.trace}
	go func() {
		ctx := WithTrace(context.Background(), s.trace)
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = &Error{Code: wire.CodeInternal, Message: "stream handler panicked"}
				}
			}()
			return fn(ctx, req, s)
		}()
		if err != nil {
			code, msg := wire.CodeInternal, err.Error()
			if me, ok := err.(*Error); ok {
				code, msg = me.Code, me.Message
			}
			s.closeWith(code, msg)
			return
		}
		s.CloseSend()
	}()
}
