package transport

import (
	"encoding/binary"
	"errors"

	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/wire"
)

// Message streams: every unidirectional stream carries whole MXP messages
// back to back (each self-delimiting by its header's payload length), one
// stream per priority class and direction, opened on first use. Small
// messages share packets; a 16 MiB message spans as many as it needs.
// Bidirectional streams carry raw bytes for the application.

// ErrNotEstablished refuses messages before the handshake or after close.
var ErrNotEstablished = errors.New("transport: connection not established")

// SendMessage encodes m onto the connection's message stream of class. It
// returns ErrWouldBlock, writing nothing, when the stream's send buffer is
// full (retry after EventStreamWritable); one message larger than the
// buffer limit is taken when the buffer is empty.
func (c *Conn) SendMessage(class scheduler.Class, m *wire.Message) error {
	s, err := c.msgStream(class)
	if err != nil {
		return err
	}
	n := wire.EncodedLen(len(m.Payload))
	if len(s.buf) > 0 && len(s.buf)+n > c.cfg.StreamSendBuffer {
		s.blocked = true
		return ErrWouldBlock
	}
	s.reserve(n)
	buf, err := wire.AppendMessage(s.buf, m)
	if err != nil {
		return err
	}
	s.buf = buf
	c.streamReady(s)
	return nil
}

// ErrBadEncoding refuses SendEncoded input that is not whole MXP messages.
var ErrBadEncoding = errors.New("transport: not a sequence of whole encoded MXP messages")

// SendEncoded queues messages encoded already (wire.AppendMessage's output,
// back to back) on the connection's message stream of class, copying them:
// a batch costs one call instead of one per message, and a message relayed
// as it arrived (MessageBytes) is not encoded again. It takes whole
// messages in order while they fit the stream's send buffer (the first one
// always fits an empty buffer) and returns the bytes taken, with
// ErrWouldBlock when that is less than len(b) (send the rest after
// EventStreamWritable). b must be whole messages: only the framing (magic
// and payload lengths) is checked here, as the peer checks the rest; b is
// refused with ErrBadEncoding, taking nothing, when it is not.
func (c *Conn) SendEncoded(class scheduler.Class, b []byte) (int, error) {
	if !wholeMessages(b) {
		return 0, ErrBadEncoding
	}
	s, err := c.msgStream(class)
	if err != nil {
		return 0, err
	}
	n := len(b)
	if room := c.cfg.StreamSendBuffer - len(s.buf); n > room {
		n = 0
		for n < len(b) {
			m := wire.EncodedLen(int(binary.LittleEndian.Uint64(b[n+24:])))
			if n+m > room && (n > 0 || len(s.buf) > 0) {
				break
			}
			n += m
		}
	}
	if n > 0 {
		s.reserve(n)
		s.buf = append(s.buf, b[:n]...)
		c.streamReady(s)
	}
	if n < len(b) {
		s.blocked = true
		return n, ErrWouldBlock
	}
	return n, nil
}

// wholeMessages reports whether b is a sequence of complete encoded
// messages by their framing.
func wholeMessages(b []byte) bool {
	for off := 0; off < len(b); {
		if len(b)-off < wire.MinMessageSize || binary.LittleEndian.Uint32(b[off:]) != wire.Magic {
			return false
		}
		plen := binary.LittleEndian.Uint64(b[off+24:])
		if plen > wire.MaxPayloadSize || uint64(len(b)-off) < uint64(wire.EncodedLen(int(plen))) {
			return false
		}
		off += wire.EncodedLen(int(plen))
	}
	return true
}

// msgStream returns the connection's outgoing message stream of class,
// opening it on first use.
func (c *Conn) msgStream(class scheduler.Class) (*Stream, error) {
	if c.state != stateEstablished && !c.halfRTT() {
		return nil, ErrNotEstablished
	}
	s := c.msgOut[class]
	if s == nil || c.streams[s.id] != s {
		var err error
		if s, err = c.OpenStream(class, true); err != nil {
			return nil, err
		}
		c.msgOut[class] = s
	}
	return s, nil
}

// MessageBytes returns the encoded form of the message being handed to
// OnMessage (valid during that call only), nil at any other time: what a
// relay passes on unchanged to SendEncoded.
func (c *Conn) MessageBytes() []byte { return c.delivering }

// msgReader reassembles the messages of one incoming message stream.
type msgReader struct {
	big  []byte // a message larger than the stream window, being collected
	need int    // its total encoded length
}

// pump delivers every complete message readable on s.
func (r *msgReader) pump(c *Conn, s *Stream) error {
	for {
		data := s.peek()
		if r.big != nil {
			n := min(len(data), r.need-len(r.big))
			r.big = append(r.big, data[:n]...)
			s.consume(n)
			if len(r.big) < r.need {
				return nil
			}
			err := c.deliver(r.big)
			r.big, r.need = nil, 0
			if err != nil {
				return err
			}
			continue
		}
		if len(data) < wire.HeaderSize {
			return nil
		}
		plen := binary.LittleEndian.Uint64(data[24:])
		if plen > wire.MaxPayloadSize {
			return &CloseError{Code: CodeProtocolViolation, Reason: "MXP message payload over 16 MiB"}
		}
		total := wire.EncodedLen(int(plen))
		if len(data) >= total {
			if err := c.deliver(data[:total]); err != nil {
				return err
			}
			s.consume(total)
			continue
		}
		if uint64(total) > s.localMax-s.readOff {
			// The message cannot complete inside the window: collect it as
			// it comes, consuming the stream so the window moves on.
			r.big, r.need = make([]byte, 0, total), total
			continue
		}
		return nil
	}
}

// deliver decodes one whole encoded message and hands it to OnMessage.
func (c *Conn) deliver(b []byte) error {
	var err error
	m := &c.ep.msgScratch // reused: a local would escape through OnMessage
	if *m, _, err = wire.DecodeMessage(b); err != nil {
		return &CloseError{Code: CodeProtocolViolation, Reason: "bad MXP message: " + err.Error()}
	}
	if c.cfg.OnMessage != nil {
		c.delivering = b
		c.cfg.OnMessage(c, m)
		c.delivering = nil
	}
	*m = wire.Message{}
	return nil
}
