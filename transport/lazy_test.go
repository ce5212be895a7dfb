package transport

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/wire"
)

// lazyNet dials from a to b (which issues tickets) and records when b sent
// datagrams for the connection from the moment it was established.
type lazyNet struct {
	*testNet
	ca       *Conn
	bEstAt   time.Time   // when b's connection was established
	bSentAt  []time.Time // b's datagrams for the connection since then
	ticketAt time.Time   // when a got its ticket
}

func newLazyNet(t *testing.T, onConnected func(ca *Conn)) *lazyNet {
	t.Helper()
	ln := &lazyNet{testNet: newTestNet(t, 31, clean, clean, withTickets(t))}
	ln.b.onEvent = func(ev Event) {
		if ev.Kind == EventConnected {
			ln.bEstAt = ln.sim.Now()
		}
	}
	ln.a.onEvent = func(ev Event) {
		switch ev.Kind {
		case EventConnected:
			if onConnected != nil {
				onConnected(ev.Conn)
			}
		case EventTicket:
			ln.ticketAt = ln.sim.Now()
		}
	}
	ca, err := ln.a.ep.Dial(ln.b.addr, ln.b.id.Public, ln.sim.Now())
	if err != nil {
		t.Fatal(err)
	}
	ln.ca = ca
	ln.b.tap = func(d []byte) {
		if !ln.bEstAt.IsZero() && binary.LittleEndian.Uint64(d[wire.PacketOffsetConnID:]) == ca.cid {
			ln.bSentAt = append(ln.bSentAt, ln.sim.Now())
		}
	}
	ln.sim.Wake(ln.a.addr)
	return ln
}

// What a responder owes a connection it just confirmed (its reset token,
// its window, the initiator's ticket) and the window for a stream the
// initiator opened ride on the answer to a request sent right behind the
// Finish: the responder sends one datagram between the Finish and the
// answer, not a packet of its own first, and the initiator has all of it
// with the answer.
func TestPostHandshakeFramesRideOnTheAnswer(t *testing.T) {
	req := &wire.Message{Type: wire.TypeCall, MessageID: 1, Payload: []byte("request")}
	var sendErr error
	ln := newLazyNet(t, func(ca *Conn) { sendErr = ca.SendMessage(scheduler.Interactive, req) })
	ln.b.onMsg = func(c *Conn, m *wire.Message) {
		if m.MessageID == 1 {
			sendErr = c.SendMessage(scheduler.Interactive, &wire.Message{Type: wire.TypeResponse, MessageID: 1, Payload: []byte("answer")})
		}
	}
	answered := func() bool { return len(ln.a.msgs) > 0 }
	if !ln.sim.RunUntil(answered, time.Second) || sendErr != nil {
		t.Fatalf("no answer (%d messages), send error %v", len(ln.a.msgs), sendErr)
	}
	if len(ln.bSentAt) != 1 {
		t.Fatalf("the responder sent %d datagrams between the Finish and the answer, want 1 (the answer)", len(ln.bSentAt))
	}
	ca := ln.ca
	if ln.ticketAt.IsZero() || ca.peerConnMax != ln.b.ep.cfg.ConnWindow || ca.resetToken == ([resetTokenLen]byte{}) {
		t.Fatalf("with the answer: ticket %v, peer window %d (want %d), reset token %x",
			!ln.ticketAt.IsZero(), ca.peerConnMax, ln.b.ep.cfg.ConnWindow, ca.resetToken)
	}
	opened := 0
	for id, s := range ca.streams {
		if !ca.locallyOpened(id) {
			continue // the answer's: the initiator does not send on it
		}
		opened++
		if s.peerMax != ln.b.ep.cfg.StreamWindow {
			t.Fatalf("stream %d: peer window %d, want %d", id, s.peerMax, ln.b.ep.cfg.StreamWindow)
		}
	}
	if opened == 0 {
		t.Fatal("the request went on no stream of the initiator's")
	}
}

// With nothing to answer, the responder's frames for the new connection
// wait no longer than an ACK may: they leave MaxAckDelay after it was
// established, alone.
func TestPostHandshakeFramesGoByMaxAckDelay(t *testing.T) {
	ln := newLazyNet(t, nil)
	if !ln.sim.RunUntil(func() bool { return !ln.ticketAt.IsZero() }, time.Second) {
		t.Fatal("no ticket")
	}
	delay := ln.b.ep.cfg.MaxAckDelay
	var after []time.Duration
	for _, at := range ln.bSentAt {
		after = append(after, at.Sub(ln.bEstAt))
	}
	if len(after) != 1 || after[0] != delay {
		t.Fatalf("the responder sent datagrams %v after it was established; want one, at MaxAckDelay (%v)", after, delay)
	}
	if ln.ca.peerConnMax != ln.b.ep.cfg.ConnWindow || ln.ca.resetToken == ([resetTokenLen]byte{}) {
		t.Fatalf("peer window %d (want %d), reset token %x", ln.ca.peerConnMax, ln.b.ep.cfg.ConnWindow, ln.ca.resetToken)
	}
}
