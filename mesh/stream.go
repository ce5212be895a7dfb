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
// StreamOpen, StreamChunk and StreamClose messages routed by the node. The
// first chunk from the opener carries the request (u16 method length |
// method | body). Flow control end to end: a receiver that consumed chunks
// sends a credit — a StreamChunk with REQUIRES_ACK set, no data, and the
// count of chunks consumed as its sequence — and a sender keeps at most
// streamWindow chunks unconsumed.

const streamWindow = 4096

// Stream is one bidirectional stream of chunks with another agent.
type Stream struct {
	a     *Agent
	id    wire.UUID
	trace uint64

	mu           sync.Mutex
	cond         *sync.Cond
	in           [][]byte // received chunks; in[inHead:] not yet read
	inHead       int
	inErr        error
	sendSeq      uint64
	peerConsumed uint64
	consumed     uint64
	creditSent   uint64
	sendClosed   bool
	started      bool

	// The outbox batches what Send and Close post: one shard command
	// carries every message queued since the last one ran.
	outMu       sync.Mutex
	outbox      []outItem
	outArena    []byte // the encoded payloads of outbox
	spareBox    []outItem
	spareArena  []byte
	flushQueued bool
	flushFn     func(time.Time)
}

type outItem struct {
	typ    wire.MsgType
	flags  wire.MsgFlags
	off, n int
}

func newStream(a *Agent, id wire.UUID, trace uint64) *Stream {
	s := &Stream{a: a, id: id, trace: trace}
	s.cond = sync.NewCond(&s.mu)
	s.flushFn = s.flush
	return s
}

// ID returns the stream's ID.
func (s *Stream) ID() wire.UUID { return s.id }

// OpenStream opens a stream to method on agent target, sending req as its
// request.
func (a *Agent) OpenStream(ctx context.Context, target wire.UUID, method string, req []byte) (*Stream, error) {
	if !a.registered.Load() {
		return nil, ErrNotConnected
	}
	var id wire.UUID
	rand.Read(id[:])
	s := newStream(a, id, traceFor(ctx))
	a.mu.Lock()
	a.streams[id] = s
	a.mu.Unlock()
	open := wire.Message{Type: wire.TypeStreamOpen, MessageID: a.nextID.Add(1), TraceID: s.trace,
		Payload: encodePayload(&wire.StreamOpen{StreamID: id, Target: target, Kind: wire.StreamBidirectional})}
	a.sh.do(func(time.Time) {
		if a.conn != nil {
			a.sh.send(a.conn, &open)
		}
	})
	if err := s.Send(joinMethod(method, req)); err != nil {
		return nil, err
	}
	return s, nil
}

// Send sends one chunk, waiting while the peer has not consumed
// streamWindow earlier chunks (backpressure).
func (s *Stream) Send(data []byte) error {
	s.mu.Lock()
	for s.sendSeq-s.peerConsumed >= streamWindow && s.inErr == nil && !s.sendClosed {
		s.cond.Wait()
	}
	if s.sendClosed {
		s.mu.Unlock()
		return io.ErrClosedPipe
	}
	if s.inErr != nil && s.inErr != io.EOF {
		err := s.inErr
		s.mu.Unlock()
		return err
	}
	seq := s.sendSeq
	s.sendSeq++
	s.mu.Unlock()
	s.post(&wire.StreamChunk{StreamID: s.id, Sequence: seq, Data: data}, 0)
	return nil
}

func (s *Stream) post(p wire.Payload, flags wire.MsgFlags) {
	s.outMu.Lock()
	off := len(s.outArena)
	var err error
	if s.outArena, err = p.AppendPayload(s.outArena); err != nil {
		s.outMu.Unlock()
		panic("mesh: encoding our own " + p.MessageType().String() + ": " + err.Error())
	}
	s.outbox = append(s.outbox, outItem{p.MessageType(), flags, off, len(s.outArena) - off})
	queued := s.flushQueued
	s.flushQueued = true
	s.outMu.Unlock()
	if !queued {
		s.a.sh.do(s.flushFn)
	}
}

// flush sends what the outbox holds, in order (on the shard goroutine).
func (s *Stream) flush(time.Time) {
	a := s.a
	s.outMu.Lock()
	box, arena := s.outbox, s.outArena
	s.outbox, s.outArena = s.spareBox[:0], s.spareArena[:0]
	s.flushQueued = false
	s.outMu.Unlock()
	for _, it := range box {
		if a.conn == nil {
			break
		}
		m := wire.Message{Type: it.typ, Flags: it.flags, MessageID: a.nextID.Add(1), TraceID: s.trace, Payload: arena[it.off : it.off+it.n]}
		a.sh.send(a.conn, &m) // copies the payload
	}
	s.outMu.Lock()
	s.spareBox, s.spareArena = box[:0], arena[:0]
	s.outMu.Unlock()
}

// Recv returns the next chunk; io.EOF once the peer closed its side, an
// *Error if it closed with an error code.
func (s *Stream) Recv() ([]byte, error) {
	s.mu.Lock()
	for s.inHead == len(s.in) && s.inErr == nil {
		s.cond.Wait()
	}
	if s.inHead == len(s.in) {
		err := s.inErr
		s.mu.Unlock()
		return nil, err
	}
	d := s.in[s.inHead]
	s.in[s.inHead] = nil
	if s.inHead++; s.inHead == len(s.in) {
		s.in, s.inHead = s.in[:0], 0 // drained: reuse the array
	}
	s.consumed++
	credit := s.consumed-s.creditSent >= streamWindow/4
	if credit {
		s.creditSent = s.consumed
	}
	seq := s.consumed
	s.mu.Unlock()
	if credit {
		s.post(&wire.StreamChunk{StreamID: s.id, Sequence: seq}, wire.FlagRequiresAck)
	}
	return d, nil
}

// CloseSend ends the sending side; the peer's Recv returns io.EOF.
func (s *Stream) CloseSend() error { return s.closeWith(wire.CodeOK, "") }

func (s *Stream) closeWith(code wire.ErrorCode, reason string) error {
	s.mu.Lock()
	if s.sendClosed {
		s.mu.Unlock()
		return nil
	}
	s.sendClosed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.post(&wire.StreamClose{StreamID: s.id, Code: code, Reason: reason}, 0)
	return nil
}

func (s *Stream) fail(err error) {
	s.mu.Lock()
	if s.inErr == nil {
		s.inErr = err
	}
	s.cond.Broadcast()
	s.mu.Unlock()
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
		s = newStream(a, id, m.TraceID)
		a.streams[id] = s
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
			s.mu.Lock()
			s.peerConsumed = max(s.peerConsumed, ch.Sequence)
			s.cond.Broadcast()
			s.mu.Unlock()
			return
		}
		s.mu.Lock()
		first := !s.started && ch.Sequence == 0 && s.sendSeq == 0
		if first {
			s.started = true
		} else {
			if s.inHead == len(s.in) {
				s.cond.Broadcast() // a reader may be waiting: only then
			}
			s.in = append(s.in, append([]byte(nil), ch.Data...))
		}
		s.mu.Unlock()
		if first {
			a.serveStream(s, ch.Data)
		}
	case wire.TypeStreamClose:
		var cl wire.StreamClose
		if cl.DecodePayload(m.Payload) != nil {
			return
		}
		err := error(io.EOF)
		if cl.Code != wire.CodeOK {
			err = &Error{Code: cl.Code, Message: cl.Reason}
		}
		s.fail(err)
		s.mu.Lock()
		done := s.sendClosed
		s.mu.Unlock()
		if done {
			a.mu.Lock()
			delete(a.streams, id)
			a.mu.Unlock()
		}
	}
}

// serveStream starts the handler of an incoming stream.
func (a *Agent) serveStream(s *Stream, first []byte) {
	method, body, ok := splitMethod(first)
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
