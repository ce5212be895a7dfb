package mesh

import (
	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/transport"
	"github.com/mxp-dataplane/mxp/wire"
)

// classOf is the priority class each message type travels in.
func classOf(t wire.MsgType) scheduler.Class {
	switch t {
	case wire.TypeAgentRegister, wire.TypeAgentHeartbeat, wire.TypeAgentDiscover, wire.TypeAck, wire.TypeError:
		return scheduler.Control
	case wire.TypeStreamOpen, wire.TypeStreamChunk, wire.TypeStreamClose:
		return scheduler.Bulk
	}
	return scheduler.Interactive
}

// backlogged is a message the transport could not take yet (its send
// buffer was full); it goes out, in order, on EventStreamWritable.
type backlogged struct {
	c *transport.Conn
	m wire.Message // Payload owned
}

// send queues m on c (on the shard's goroutine). m.Payload is copied if it
// has to wait (a full send buffer, or a handshake still running); messages
// to one connection keep their order.
func (sh *shard) send(c *transport.Conn, m *wire.Message) {
	if len(sh.backlog[c]) == 0 {
		err := c.SendMessage(classOf(m.Type), m)
		if err != transport.ErrWouldBlock && (err != transport.ErrNotEstablished || c.Err() != nil) {
			return // sent, or the connection is gone (its close event follows)
		}
	}
	if sh.backlog == nil {
		sh.backlog = map[*transport.Conn][]backlogged{}
	}
	cp := *m
	cp.Payload = append([]byte(nil), m.Payload...)
	sh.backlog[c] = append(sh.backlog[c], backlogged{c, cp})
}

// sendEncoded queues b, whole encoded messages of one class, on c (on the
// shard goroutine), in order after anything backlogged for c; what the
// transport cannot take yet waits in the backlog.
func (sh *shard) sendEncoded(c *transport.Conn, class scheduler.Class, b []byte) {
	if len(sh.backlog[c]) == 0 {
		n, err := c.SendEncoded(class, b)
		if err != transport.ErrWouldBlock && (err != transport.ErrNotEstablished || c.Err() != nil) {
			return // sent, or the connection is gone (its close event follows)
		}
		b = b[n:]
	}
	for len(b) > 0 {
		m, k, err := wire.DecodeMessage(b)
		if err != nil {
			return // not whole messages: SendEncoded refuses them too
		}
		sh.send(c, &m) // backlogged (with a copy) behind what waits
		b = b[k:]
	}
}

// flushBacklog sends what waited for c, as far as the transport takes it.
func (sh *shard) flushBacklog(c *transport.Conn) {
	q := sh.backlog[c]
	for len(q) > 0 {
		if err := c.SendMessage(classOf(q[0].m.Type), &q[0].m); err == transport.ErrWouldBlock {
			break
		}
		q[0] = backlogged{}
		q = q[1:]
	}
	if len(q) == 0 {
		delete(sh.backlog, c)
		return
	}
	sh.backlog[c] = q
}

// encodePayload encodes p into a fresh message payload.
func encodePayload(p wire.Payload) []byte {
	b, err := p.AppendPayload(nil)
	if err != nil {
		panic("mesh: encoding our own " + p.MessageType().String() + ": " + err.Error())
	}
	return b
}
