package transport

import (
	"bytes"
	"errors"
	mrand "math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/transport/netsim"
	"github.com/mxp-dataplane/mxp/wire"
)

// seededReader is a deterministic randomness source, so simulated runs
// repeat exactly.
type seededReader struct{ r *mrand.ChaCha8 }

func newSeeded(seed uint64) *seededReader {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return &seededReader{mrand.NewChaCha8(s)}
}

func (s *seededReader) Read(p []byte) (int, error) { return s.r.Read(p) }

// node is an Endpoint in the simulator.
type node struct {
	ep    *Endpoint
	addr  netip.AddrPort
	id    crypto.Identity
	pkts  []Packet
	msgs  []wire.Message // copies of received messages
	onMsg func(c *Conn, m *wire.Message)

	// the stream application: what is left to write, what was read
	toWrite    map[*Stream][]byte
	closeAfter map[*Stream]bool
	got        map[uint64][]byte
	fin        map[uint64]bool
	closed     []Event
	dgrams     [][]byte
	onEvent    func(Event)         // sees every event first
	tap        func(d []byte)      // sees every datagram sent
	drop       func(d []byte) bool // datagrams it reports are not sent (after tap)
	source     map[*Stream]int64   // bytes still to write from an endless source
	count      map[[2]uint64]int64 // bytes read per (connection ID, stream ID)
	discard    bool                // count only, keep nothing
}

func (n *node) Receive(now time.Time, d netsim.Datagram) {
	n.ep.Receive(d.Data, d.From, now)
	n.app()
}

// app reacts to events like an application: reads readable streams and
// writes what is pending where there is room.
func (n *node) app() {
	for {
		ev, ok := n.ep.PollEvent()
		if !ok {
			break
		}
		if n.onEvent != nil {
			n.onEvent(ev)
		}
		switch ev.Kind {
		case EventStreamReadable, EventStreamOpened:
			n.read(ev.Stream)
		case EventClosed:
			n.closed = append(n.closed, ev)
		case EventDatagram:
			n.dgrams = append(n.dgrams, ev.Data)
		}
	}
	for s, left := range n.source {
		for left > 0 {
			w, _ := s.Write(zeros[:min(left, int64(len(zeros)))])
			if w == 0 {
				break
			}
			left -= int64(w)
		}
		n.source[s] = left
	}
	for s, rest := range n.toWrite {
		w, _ := s.Write(rest)
		rest = rest[w:]
		if len(rest) == 0 {
			delete(n.toWrite, s)
			if n.closeAfter[s] {
				s.Close()
			}
		} else {
			n.toWrite[s] = rest
		}
	}
}

func (n *node) read(s *Stream) {
	if n.got == nil {
		n.got, n.fin, n.count = map[uint64][]byte{}, map[uint64]bool{}, map[[2]uint64]int64{}
	}
	var buf [16384]byte
	for {
		k, fin, err := s.Read(buf[:])
		n.count[[2]uint64{s.conn.cid, s.ID()}] += int64(k)
		if !n.discard {
			n.got[s.ID()] = append(n.got[s.ID()], buf[:k]...)
		}
		if fin {
			n.fin[s.ID()] = true
		}
		if k == 0 || err != nil {
			return
		}
	}
}

func (n *node) write(s *Stream, data []byte, close bool) {
	if n.toWrite == nil {
		n.toWrite, n.closeAfter = map[*Stream][]byte{}, map[*Stream]bool{}
	}
	n.toWrite[s] = data
	n.closeAfter[s] = close
	n.app()
}

func (n *node) Transmit(now time.Time, out []netsim.Datagram) []netsim.Datagram {
	n.app()
	k := n.ep.Transmit(n.pkts, now)
	for _, p := range n.pkts[:k] {
		if n.tap != nil {
			n.tap(p.Buf)
		}
		if n.drop != nil && n.drop(p.Buf) {
			continue
		}
		out = append(out, netsim.Datagram{From: n.addr, To: p.Addr, Data: p.Buf})
	}
	return out
}

func (n *node) Deadline() time.Time { return n.ep.Deadline() }

type testNet struct {
	t    testing.TB
	sim  *netsim.Sim
	a, b *node
}

// newTestNet builds two nodes (a dials, b accepts) joined by links ab/ba.
func newTestNet(t testing.TB, seed uint64, ab, ba netsim.LinkConfig, tweak func(*Config)) *testNet {
	t.Helper()
	rng := newSeeded(seed)
	mk := func(addr string) *node {
		id, err := crypto.GenerateIdentity(rng)
		if err != nil {
			t.Fatal(err)
		}
		n := &node{addr: netip.MustParseAddrPort(addr), id: id}
		cfg := Config{Crypto: &crypto.Config{Identity: id, Rand: rng}, Rand: rng}
		cfg.OnMessage = func(c *Conn, m *wire.Message) {
			if n.onMsg != nil {
				n.onMsg(c, m)
				return
			}
			cp := *m
			cp.Payload = bytes.Clone(m.Payload)
			n.msgs = append(n.msgs, cp)
		}
		if tweak != nil {
			tweak(&cfg)
		}
		ep, err := NewEndpoint(cfg)
		if err != nil {
			t.Fatal(err)
		}
		n.ep = ep
		n.pkts = make([]Packet, 32)
		for i := range n.pkts {
			n.pkts[i].Buf = make([]byte, 0, 65535) // room for any MaxDatagramSize[For]
		}
		return n
	}
	tn := &testNet{t: t, sim: netsim.New(seed), a: mk("198.18.0.1:9000"), b: mk("198.18.0.2:9000")}
	tn.sim.Add(tn.a.addr, tn.a)
	tn.sim.Add(tn.b.addr, tn.b)
	tn.sim.Connect(tn.a.addr, tn.b.addr, ab, ba)
	return tn
}

// dial connects a to b and runs until both sides are established.
func (tn *testNet) dial() (ca, cb *Conn) {
	tn.t.Helper()
	c, err := tn.a.ep.Dial(tn.b.addr, tn.b.id.Public, tn.sim.Now())
	if err != nil {
		tn.t.Fatal(err)
	}
	tn.sim.Wake(tn.a.addr)
	ok := tn.sim.RunUntil(func() bool {
		return c.Established() && tn.b.ep.conns[c.cid] != nil && tn.b.ep.conns[c.cid].Established()
	}, 30*time.Second)
	if !ok {
		tn.t.Fatalf("handshake did not complete: client %v, server conns %d", c.state, tn.b.ep.Len())
	}
	return c, tn.b.ep.conns[c.cid]
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

var zeros = make([]byte, 64<<10)
