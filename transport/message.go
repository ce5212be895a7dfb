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
	if c.state != stateEstablished {
		return ErrNotEstablished
	}
	s := c.msgOut[class]
	if s == nil || c.streams[s.id] != s {
		var err error
		if s, err = c.OpenStream(class, true); err != nil {
			return err
		}
		c.msgOut[class] = s
	}
	n := wire.EncodedLen(len(m.Payload))
	if len(s.buf) > 0 && len(s.buf)+n > c.cfg.StreamSendBuffer {
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
		c.cfg.OnMessage(c, m)
	}
	*m = wire.Message{}
	return nil
}
