package transport

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/wire"
)

// pair is two endpoints wired back to back in memory: no sockets, no
// simulator, a clock that advances 1 µs per exchange.
type pair struct {
	a, b         *Endpoint
	aAddr, bAddr netip.AddrPort
	ca, cb       *Conn
	now          time.Time
	out          []Packet
}

func newPair(tb testing.TB, onMsg func(*Conn, *wire.Message)) *pair {
	tb.Helper()
	rng := newSeeded(11)
	mk := func() (*Endpoint, crypto.Identity) {
		id, err := crypto.GenerateIdentity(rng)
		if err != nil {
			tb.Fatal(err)
		}
		ep, err := NewEndpoint(Config{Crypto: &crypto.Config{Identity: id, Rand: rng}, Rand: rng, OnMessage: onMsg,
			MaxDatagramSize: 1452})
		if err != nil {
			tb.Fatal(err)
		}
		return ep, id
	}
	p := &pair{aAddr: netip.MustParseAddrPort("198.18.0.1:9000"), bAddr: netip.MustParseAddrPort("198.18.0.2:9000"), now: time.Unix(1e9, 0)}
	var bid crypto.Identity
	p.a, _ = mk()
	p.b, bid = mk()
	p.out = make([]Packet, 64)
	for i := range p.out {
		p.out[i].Buf = make([]byte, 0, 1500)
	}
	c, err := p.a.Dial(p.bAddr, bid.Public, p.now)
	if err != nil {
		tb.Fatal(err)
	}
	p.ca = c
	for i := 0; i < 10 && !(c.Established() && p.b.Len() == 1 && p.b.conns[c.cid].Established()); i++ {
		p.pump()
	}
	p.cb = p.b.conns[c.cid]
	if p.cb == nil || !p.cb.Established() {
		tb.Fatal("no handshake")
	}
	return p
}

// pump moves every packet each way once.
func (p *pair) pump() {
	p.now = p.now.Add(time.Microsecond)
	for _, d := range []struct {
		from, to *Endpoint
		src      netip.AddrPort
	}{{p.a, p.b, p.aAddr}, {p.b, p.a, p.bAddr}} {
		for {
			n := d.from.Transmit(p.out, p.now)
			for _, pk := range p.out[:n] {
				d.to.Receive(pk.Buf, d.src, p.now)
			}
			if n < len(p.out) {
				break
			}
		}
	}
}

// BenchmarkMessages: MXP messages through the whole core, encrypted, one
// connection, both ends in this goroutine. Reports messages/s and allocs
// per message.
func BenchmarkMessages(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			got := 0
			p := newPair(b, func(*Conn, *wire.Message) { got++ })
			m := &wire.Message{Type: wire.TypeEvent, Payload: make([]byte, size)}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				m.MessageID = uint64(i)
				for p.ca.SendMessage(scheduler.Interactive, m) == ErrWouldBlock {
					p.pump()
				}
				if i%64 == 63 {
					p.pump()
				}
			}
			for k := 0; got < b.N && k < 1000; k++ {
				p.pump()
			}
			b.StopTimer()
			if got != b.N {
				b.Fatalf("%d of %d messages arrived", got, b.N)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
		})
	}
}

// An idle established connection costs at most 16 KiB on each side.
func TestIdleConnectionMemory(t *testing.T) {
	const n = 200
	p := newPair(t, nil)
	rng := newSeeded(12)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range n {
		id, err := crypto.GenerateIdentity(rng)
		if err != nil {
			t.Fatal(err)
		}
		_ = id
		c, err := p.a.Dial(p.bAddr, p.b.cfg.Crypto.Identity.Public, p.now)
		if err != nil {
			t.Fatal(err)
		}
		_ = c
	}
	for range 5 {
		p.pump()
	}
	p.now = p.now.Add(time.Second) // let delayed ACKs go
	for range 5 {
		p.pump()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if p.a.Len() != n+1 || p.b.Len() != n+1 {
		t.Fatalf("%d and %d connections", p.a.Len(), p.b.Len())
	}
	per := float64(after.HeapAlloc-before.HeapAlloc) / n / 2
	t.Logf("idle connection: %.0f bytes per side", per)
	if per > 16<<10 {
		t.Errorf("idle connection costs %.0f bytes per side, want ≤ 16 KiB", per)
	}
}
