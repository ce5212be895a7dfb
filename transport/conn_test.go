package transport

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/transport/netsim"
	"github.com/mxp-dataplane/mxp/wire"
)

var clean = netsim.LinkConfig{Delay: 10 * time.Millisecond}

func TestHandshakeAndMessages(t *testing.T) {
	tn := newTestNet(t, 1, clean, clean, nil)
	ca, cb := tn.dial()
	if ca.PeerKey() != tn.b.id.Public || cb.PeerKey() != tn.a.id.Public {
		t.Fatal("peers not authenticated to each other's static keys")
	}
	var want [][]byte
	for i := range 100 {
		p := bytes.Repeat([]byte{byte(i)}, i*13)
		want = append(want, p)
		if err := ca.SendMessage(scheduler.Interactive, &wire.Message{Type: wire.TypeCall, MessageID: uint64(i), TraceID: 7, Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	tn.sim.Wake(tn.a.addr)
	if !tn.sim.RunUntil(func() bool { return len(tn.b.msgs) == 100 }, 10*time.Second) {
		t.Fatalf("%d of 100 messages arrived", len(tn.b.msgs))
	}
	for i, m := range tn.b.msgs {
		if m.MessageID != uint64(i) || !bytes.Equal(m.Payload, want[i]) || m.TraceID != 7 {
			t.Fatalf("message %d: id %d, %d bytes", i, m.MessageID, len(m.Payload))
		}
	}
	total := 0
	for _, p := range want {
		total += wire.EncodedLen(len(p))
	}
	// Messages share packets: the count is close to bytes / packet payload.
	if st, most := ca.Stats(), uint64(total/(1400-48)+6); st.PacketsSent > most {
		t.Errorf("%d packets for %d bytes of messages, want at most %d", st.PacketsSent, total, most)
	}
	// Reply the other way.
	if err := cb.SendMessage(scheduler.Interactive, &wire.Message{Type: wire.TypeResponse, MessageID: 1000, Payload: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	tn.sim.Wake(tn.b.addr)
	if !tn.sim.RunUntil(func() bool { return len(tn.a.msgs) == 1 }, 5*time.Second) {
		t.Fatal("no response")
	}
}

// A 16 MiB message (the largest MXP allows) arrives intact, across a lossy link.
func TestLargestMessage(t *testing.T) {
	lossy := netsim.LinkConfig{Delay: 5 * time.Millisecond, Loss: 0.02, Bandwidth: 1_000_000_000}
	tn := newTestNet(t, 3, lossy, lossy, nil)
	ca, _ := tn.dial()
	big := pattern(42, wire.MaxPayloadSize)
	small := []byte("after the big one")
	if err := ca.SendMessage(scheduler.Bulk, &wire.Message{Type: wire.TypeStreamChunk, MessageID: 1, Payload: big}); err != nil {
		t.Fatal(err)
	}
	for ca.SendMessage(scheduler.Bulk, &wire.Message{Type: wire.TypeStreamChunk, MessageID: 2, Payload: small}) == ErrWouldBlock {
		tn.sim.RunFor(50 * time.Millisecond)
	}
	tn.sim.Wake(tn.a.addr)
	if !tn.sim.RunUntil(func() bool { return len(tn.b.msgs) == 2 }, 120*time.Second) {
		t.Fatalf("%d of 2 messages; client %+v", len(tn.b.msgs), ca.Stats())
	}
	if !bytes.Equal(tn.b.msgs[0].Payload, big) || !bytes.Equal(tn.b.msgs[1].Payload, small) {
		t.Fatal("messages corrupted or out of order")
	}
	t.Logf("16 MiB over a 2%%-loss link: %+v", ca.Stats())
}

// A datagram that fits no packet in the buffers Transmit is given (a
// backend's buffers smaller than the datagram size the connection was
// promised) is dropped and counted, and the datagrams behind it still go.
func TestDatagramLargerThanTheBuffersIsDropped(t *testing.T) {
	tn := newTestNet(t, 4, clean, clean, nil)
	ca, _ := tn.dial()
	small := ca.maxDgram - 200
	for i := range tn.a.pkts {
		tn.a.pkts[i].Buf = make([]byte, 0, small)
	}
	for _, size := range []int{ca.MaxDatagramPayload(), 10} {
		if err := ca.SendDatagram(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
	}
	tn.sim.Wake(tn.a.addr)
	if !tn.sim.RunUntil(func() bool { return len(tn.b.dgrams) == 1 }, time.Second) || len(tn.b.dgrams[0]) != 10 {
		t.Fatalf("got %d datagrams, want the small one behind the big one", len(tn.b.dgrams))
	}
	if d := ca.Stats().DatagramsDropped; d != 1 {
		t.Fatalf("dropped %d, want 1", d)
	}
}

func TestDatagrams(t *testing.T) {
	tn := newTestNet(t, 4, clean, clean, func(c *Config) { c.DatagramQueue = 8 })
	ca, _ := tn.dial()
	if err := ca.SendDatagram(make([]byte, ca.MaxDatagramPayload()+1)); err != ErrDatagramTooLarge {
		t.Fatalf("oversized datagram: %v", err)
	}
	for i := range 20 { // more than the queue holds: the oldest are dropped
		if err := ca.SendDatagram([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if ca.Stats().DatagramsDropped != 12 {
		t.Fatalf("dropped %d, want 12", ca.Stats().DatagramsDropped)
	}
	tn.sim.Wake(tn.a.addr)
	tn.sim.RunUntil(func() bool { return len(tn.b.dgrams) == 8 }, 5*time.Second)
	var got []byte
	for _, d := range tn.b.dgrams {
		got = append(got, d...)
	}
	if !bytes.Equal(got, []byte{12, 13, 14, 15, 16, 17, 18, 19}) {
		t.Fatalf("datagrams %v", got)
	}
}

// A peer that ignores our stream window gets a flow-control connection error.
func TestFlowControlViolationClosesConnection(t *testing.T) {
	tn := newTestNet(t, 5, clean, clean, func(c *Config) { c.StreamWindow = InitialStreamWindow })
	ca, cb := tn.dial()
	// Forge, with the client's keys, a StreamData frame past the server's window.
	var payload []byte
	payload = appendStreamDataHeader(payload, 0, InitialStreamWindow, 10)
	payload = append(payload, make([]byte, 10)...)
	pkt, _, err := ca.session.Seal(make([]byte, 0, 1500), wire.PacketFlagAckEliciting, payload)
	if err != nil {
		t.Fatal(err)
	}
	tn.b.ep.Receive(pkt, tn.a.addr, tn.sim.Now())
	var ce *CloseError
	if !errorsAs(cb.Err(), &ce) || ce.Code != CodeFlowControl {
		t.Fatalf("server connection error %v, want a flow-control close", cb.Err())
	}
	tn.sim.Wake(tn.b.addr)
	tn.sim.RunUntil(func() bool { return ca.Err() != nil }, 5*time.Second)
	if !errorsAs(ca.Err(), &ce) || ce.Code != CodeFlowControl || !ce.Remote {
		t.Fatalf("client learned %v, want the peer's flow-control close", ca.Err())
	}
}

// A responder that lost its state (restarted with the same key) resets the
// initiator's connection at once instead of leaving it to the idle timeout.
func TestStatelessResetAfterRestart(t *testing.T) {
	tn := newTestNet(t, 12, clean, clean, nil)
	ca, _ := tn.dial()
	tn.sim.RunFor(100 * time.Millisecond) // the token arrives
	if !ca.haveResetToken {
		t.Fatal("no reset token from the responder")
	}
	// Restart b: a new endpoint with the same identity and no connections.
	ep, err := NewEndpoint(tn.b.ep.cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn.b.ep = ep
	if err := ca.SendMessage(scheduler.Control, &wire.Message{Type: wire.TypeAgentHeartbeat, Payload: make([]byte, 40)}); err != nil {
		t.Fatal(err)
	}
	tn.sim.Wake(tn.a.addr)
	if !tn.sim.RunUntil(func() bool { return ca.Err() != nil }, 2*time.Second) {
		t.Fatal("the initiator never learned that the responder lost the connection")
	}
	if ca.Err() != ErrStatelessReset {
		t.Fatalf("closed with %v, want ErrStatelessReset", ca.Err())
	}
	// A forged reset (wrong token) is ignored.
	tn2 := newTestNet(t, 13, clean, clean, nil)
	c2, _ := tn2.dial()
	tn2.sim.RunFor(100 * time.Millisecond)
	forged := tn2.a.ep.appendReset(nil, c2.cid) // a's key, not b's
	tn2.a.ep.Receive(forged, tn2.b.addr, tn2.sim.Now())
	if c2.Err() != nil {
		t.Fatalf("a forged reset closed the connection: %v", c2.Err())
	}
}

// A responder with ticket keys issues a ticket; the initiator resumes with
// 0-RTT data, which the responder delivers once: a replay of the same
// hello is refused (single-use tickets).
func TestResumptionWithZeroRTT(t *testing.T) {
	tn, ticket := ticketNet(t, 14)
	var early [][]byte
	tn.b.onEvent = func(ev Event) {
		if ev.Kind == EventEarlyData {
			early = append(early, ev.Data)
		}
	}
	var hello []byte
	tn.a.tap = func(d []byte) {
		if hello == nil && len(d) > 32 && d[16]&wire.PacketFlagHandshake != 0 {
			hello = append([]byte(nil), d...)
		}
	}
	c, err := tn.a.ep.DialResume(tn.b.addr, tn.b.id.Public, ticket, []byte("hello, early"), tn.sim.Now())
	if err != nil {
		t.Fatal(err)
	}
	tn.sim.Wake(tn.a.addr)
	tn.sim.RunUntil(func() bool { return c.Established() && len(early) > 0 }, 5*time.Second)
	if len(early) != 1 || string(early[0]) != "hello, early" {
		t.Fatalf("0-RTT data %q", early)
	}
	if hello == nil {
		t.Fatal("did not see the resuming hello")
	}
	// Replay the resuming hello at a responder that shares the ticket keys
	// and the strike register but has no connection state (another shard,
	// or after a restart): the 0-RTT data must not be delivered again.
	earlyAt := func(ep *Endpoint) int {
		ep.Receive(append([]byte(nil), hello...), tn.a.addr, tn.sim.Now())
		n := 0
		for {
			ev, ok := ep.PollEvent()
			if !ok {
				return n
			}
			if ev.Kind == EventEarlyData {
				n++
			}
		}
	}
	fresh, err := NewEndpoint(tn.b.ep.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n := earlyAt(fresh); n != 0 {
		t.Fatalf("replayed 0-RTT data delivered again (%d)", n)
	}
	// Without the shared strike register the same replay would be taken:
	// the check above is what stops it.
	cfg := tn.b.ep.cfg
	cc := *cfg.Crypto
	cc.Strike = crypto.NewStrikeRegister(1000)
	cfg.Crypto = &cc
	forgetful, err := NewEndpoint(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n := earlyAt(forgetful); n != 1 {
		t.Fatalf("control: a responder without the strike record delivered %d, want 1", n)
	}
}

// withTickets gives an endpoint ticket keys and a strike register: as a
// responder it issues tickets and accepts 0-RTT data.
func withTickets(t *testing.T) func(*Config) {
	return func(c *Config) {
		keys, err := crypto.NewTicketKeys(c.Rand, netsim.Epoch, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c.Crypto.TicketKeys, c.Crypto.Strike = keys, crypto.NewStrikeRegister(100)
	}
}

// ticketNet is a testNet whose responder issues tickets and accepts 0-RTT
// data, after one full handshake that gave the initiator a ticket.
func ticketNet(t *testing.T, seed uint64) (*testNet, *crypto.Ticket) {
	t.Helper()
	tn := newTestNet(t, seed, clean, clean, withTickets(t))
	var ticket *crypto.Ticket
	tn.a.onEvent = func(ev Event) {
		if ev.Kind == EventTicket {
			ticket = ev.Ticket
		}
	}
	tn.dial()
	if !tn.sim.RunUntil(func() bool { return ticket != nil }, 2*time.Second) {
		t.Fatal("no ticket issued")
	}
	tn.a.onEvent = nil
	return tn, ticket
}

// A responder that accepted 0-RTT data answers it right behind its
// ResponderHello (0.5-RTT), before the initiator's Finish: with everything
// the initiator sends after its hello lost, the answer still arrives. The
// unvalidated address gets at most three times what it sent: a larger
// answer stops at that limit and the rest follows once the initiator is
// heard again.
func TestHalfRTTAnswerBeforeFinish(t *testing.T) {
	for _, size := range []int{100, 8000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			tn, ticket := ticketNet(t, 21)
			var cb *Conn
			var sendErr error
			answer := bytes.Repeat([]byte{'a'}, size)
			tn.b.onEvent = func(ev Event) {
				if ev.Kind == EventEarlyData {
					cb = ev.Conn
					sendErr = cb.SendMessage(scheduler.Interactive, &wire.Message{Type: wire.TypeResponse, MessageID: 1, Payload: answer})
				}
			}
			helloSent := false
			tn.a.drop = func(d []byte) bool {
				if !helloSent {
					helloSent = true
					return false
				}
				return true // the Finish and every acknowledgement: lost
			}
			sentB := 0 // bytes the responder put on the wire for the resumed connection
			var next *crypto.Ticket
			tn.a.onEvent = func(ev Event) {
				if ev.Kind == EventTicket {
					next = ev.Ticket
				}
			}
			ca, err := tn.a.ep.DialResume(tn.b.addr, tn.b.id.Public, ticket, []byte("early request"), tn.sim.Now())
			if err != nil {
				t.Fatal(err)
			}
			tn.b.tap = func(d []byte) {
				if binary.LittleEndian.Uint64(d[wire.PacketOffsetConnID:]) == ca.cid {
					sentB += len(d)
				}
			}
			tn.sim.Wake(tn.a.addr)
			got := func() bool {
				for _, m := range tn.a.msgs {
					if m.MessageID == 1 && bytes.Equal(m.Payload, answer) {
						return true
					}
				}
				return false
			}
			tn.sim.RunUntil(got, 300*time.Millisecond)
			if cb == nil || sendErr != nil {
				t.Fatalf("no 0-RTT data at the responder, or its answer refused: %v", sendErr)
			}
			if !ca.Established() || !ca.EarlyDataAccepted() {
				t.Fatalf("initiator: established %v, 0-RTT accepted %v", ca.Established(), ca.EarlyDataAccepted())
			}
			if cb.Established() {
				t.Fatal("the responder confirmed the handshake, though nothing after the hello reached it")
			}
			recv, sent := cb.session.Amplification().Counters()
			if sent > 3*recv || int(sent) != sentB {
				t.Fatalf("sent %d bytes (counted %d) to an unvalidated address that sent %d", sentB, sent, recv)
			}
			if size < 1000 && !got() {
				t.Fatal("the 0.5-RTT answer did not arrive before the Finish")
			}
			if size < 1000 && next == nil {
				t.Fatal("the resumed connection's own ticket did not come with its 0.5-RTT answer")
			}
			if size > 3*int(recv) && got() {
				t.Fatalf("an answer of %d bytes arrived whole past the limit (%d received)", size, recv)
			}
			tn.a.drop = nil // the initiator is heard again: the rest follows
			if !tn.sim.RunUntil(func() bool { return got() && cb.Established() }, 10*time.Second) {
				t.Fatalf("after the initiator is heard again: answer whole %v, responder confirmed %v", got(), cb.Established())
			}
		})
	}
}

// Without accepted 0-RTT data the responder sends nothing but its
// ResponderHello before the Finish: after a plain hello, and after a
// resuming one whose 0-RTT data it refused (the ticket was used before,
// so the strike register has it).
func TestNoHalfRTTWithoutEarlyData(t *testing.T) {
	for _, mode := range []string{"plain", "refused"} {
		t.Run(mode, func(t *testing.T) {
			tn, ticket := ticketNet(t, 22)
			if mode == "refused" { // use the ticket once, as it should be
				c, err := tn.a.ep.DialResume(tn.b.addr, tn.b.id.Public, ticket, []byte("first use"), tn.sim.Now())
				if err != nil {
					t.Fatal(err)
				}
				tn.sim.Wake(tn.a.addr)
				if !tn.sim.RunUntil(func() bool { return c.Established() && c.EarlyDataAccepted() }, time.Second) {
					t.Fatal("the first use of the ticket was not taken")
				}
			}
			helloSent := false
			tn.a.drop = func(d []byte) bool {
				if !helloSent && d[wire.PacketOffsetFlags]&wire.PacketFlagHandshake != 0 {
					helloSent = true
					return false
				}
				return true
			}
			var ca *Conn
			var err error
			if mode == "plain" {
				ca, err = tn.a.ep.Dial(tn.b.addr, tn.b.id.Public, tn.sim.Now())
			} else {
				ca, err = tn.a.ep.DialResume(tn.b.addr, tn.b.id.Public, ticket, []byte("replayed"), tn.sim.Now())
			}
			if err != nil {
				t.Fatal(err)
			}
			sentB := 0
			tn.b.tap = func(d []byte) {
				if binary.LittleEndian.Uint64(d[wire.PacketOffsetConnID:]) == ca.cid {
					sentB++
				}
			}
			tn.sim.Wake(tn.a.addr)
			tn.sim.RunUntil(func() bool { return tn.b.ep.conns[ca.cid] != nil && ca.Established() }, time.Second)
			cb := tn.b.ep.conns[ca.cid]
			if cb == nil || !ca.Established() {
				t.Fatal("no handshake")
			}
			if ca.EarlyDataAccepted() {
				t.Fatal("EarlyDataAccepted without 0-RTT data taken")
			}
			if want := map[string]uint64{"plain": 0, "refused": 1}[mode]; tn.b.ep.stats.EarlyRefused != want {
				t.Fatalf("EarlyRefused %d, want %d", tn.b.ep.stats.EarlyRefused, want)
			}
			if err := cb.SendMessage(scheduler.Interactive, &wire.Message{Type: wire.TypeResponse, MessageID: 1, Payload: []byte("too early")}); err != ErrNotEstablished {
				t.Fatalf("SendMessage before the Finish: %v, want ErrNotEstablished", err)
			}
			tn.sim.RunUntil(func() bool { return false }, 100*time.Millisecond)
			if sentB != 1 || cb.Established() {
				t.Fatalf("the responder sent %d datagrams for the connection before the Finish (want its ResponderHello only); confirmed %v", sentB, cb.Established())
			}
		})
	}
}

// HasEvents says exactly what PollEvent will: true while an event waits,
// false once they are all taken.
func TestHasEventsMatchesPollEvent(t *testing.T) {
	p := newPair(t, nil) // the handshake leaves EventConnected on each side
	for _, ep := range []*Endpoint{p.a, p.b} {
		n := 0
		for {
			has := ep.HasEvents()
			_, ok := ep.PollEvent()
			if has != ok {
				t.Fatalf("after %d events: HasEvents %v, PollEvent %v", n, has, ok)
			}
			if !ok {
				break
			}
			n++
		}
		if n == 0 {
			t.Fatal("no event after a handshake")
		}
		if ep.HasEvents() {
			t.Fatal("HasEvents after PollEvent ran dry")
		}
	}
}

// The handshake's round trip is each side's first RTT sample, so PTO and a
// closing connection's three-PTO linger do not rest on InitialRTT; a hello
// sent twice gives no sample (Karn's rule: which answer is whose is not
// known).
func TestHandshakeGivesTheFirstRTTSample(t *testing.T) {
	p := newPair(t, nil) // its clock moves 1 µs per exchange
	for _, c := range []*Conn{p.ca, p.cb} {
		if !c.haveRTT || c.rtt.Smoothed <= 0 || c.rtt.Smoothed > time.Millisecond {
			t.Fatalf("initiator %v: RTT after the handshake %+v (have %v), want a sample of µs", c.initiator, c.rtt, c.haveRTT)
		}
	}
	start := p.now
	p.ca.Close(CodeNoError, "bye", p.now)
	closed := time.Duration(-1)
	for i := 0; i < 2000 && closed < 0; i++ {
		p.now = p.now.Add(time.Millisecond)
		p.a.Transmit(p.out, p.now)
		for ev, ok := p.a.PollEvent(); ok; ev, ok = p.a.PollEvent() {
			if ev.Kind == EventClosed && ev.Conn == p.ca {
				closed = p.now.Sub(start)
			}
		}
	}
	if want := 3 * p.ca.pto(); closed < 0 || closed > want+time.Millisecond {
		t.Fatalf("closed after %v, want three PTOs (%v)", closed, want)
	}

	// The first hello is lost; the second, sent after InitialRTT*3, is
	// answered: the initiator takes no sample from it.
	q := newPair(t, nil)
	c, err := q.a.Dial(q.bAddr, q.b.cfg.Crypto.Identity.Public, q.now)
	if err != nil {
		t.Fatal(err)
	}
	if n := q.a.Transmit(q.out, q.now); n != 1 {
		t.Fatalf("%d packets for the hello", n)
	}
	q.now = q.now.Add(c.cfg.InitialRTT*3 + time.Millisecond)
	for i := 0; i < 10 && !c.Established(); i++ {
		q.pump()
	}
	if !c.Established() {
		t.Fatal("no handshake after the hello was sent again")
	}
	if c.haveRTT {
		t.Fatalf("initiator took an RTT sample (%+v) from a hello it sent twice", c.rtt)
	}

	// The responder hears the hello twice and answers twice: it takes no
	// sample from the Finish either.
	r := newPair(t, nil)
	d, err := r.a.Dial(r.bAddr, r.b.cfg.Crypto.Identity.Public, r.now)
	if err != nil {
		t.Fatal(err)
	}
	if n := r.a.Transmit(r.out, r.now); n != 1 {
		t.Fatalf("%d packets for the hello", n)
	}
	hello := append([]byte(nil), r.out[0].Buf...)
	r.b.Receive(hello, r.aAddr, r.now)
	r.b.Transmit(r.out, r.now) // the first reply, lost
	r.now = r.now.Add(time.Millisecond)
	r.b.Receive(hello, r.aAddr, r.now) // the hello again: the reply again
	for i := 0; i < 10 && !(d.Established() && r.b.conns[d.cid] != nil && r.b.conns[d.cid].Established()); i++ {
		r.pump()
	}
	resp := r.b.conns[d.cid]
	if resp == nil || !resp.Established() {
		t.Fatal("no handshake after the reply was sent again")
	}
	if resp.haveRTT {
		t.Fatalf("responder took an RTT sample (%+v) from a reply it sent twice", resp.rtt)
	}
}
