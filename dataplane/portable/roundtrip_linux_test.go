package portable_test

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/dptest"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
)

// oneShot sends one datagram each time it is asked to and counts what
// comes back: a caller's request through the engine, as the mesh's are.
type oneShot struct {
	dst  netip.AddrPort
	size int
	want atomic.Bool
	got  atomic.Int64
}

func (o *oneShot) Receive(pkts []dataplane.Packet, _ time.Time) { o.got.Add(int64(len(pkts))) }

func (o *oneShot) Transmit(out []dataplane.Packet, _ time.Time) int {
	if len(out) == 0 || !o.want.Swap(false) {
		return 0
	}
	out[0] = dataplane.Packet{Buf: out[0].Buf[:o.size], Addr: o.dst}
	return 1
}

func (o *oneShot) Deadline() time.Time { return time.Time{} }

// engineRoundTrip is a client engine whose caller sends one datagram and
// waits for its echo from a server engine, as a mesh call does.
type engineRoundTrip struct {
	cli  *dataplane.Engine
	o    *oneShot
	next int64 // the echo count once the datagram in flight is back
	done func() bool
	lent int
}

func newEngineRoundTrip(tb testing.TB, size int) *engineRoundTrip {
	tb.Helper()
	cfg := dataplane.Config{Addr: netip.MustParseAddrPort("127.0.0.1:0")}
	srv, err := dataplane.Start(&portable.Backend{}, cfg, func(int) dataplane.Handler { return &dptest.Echo{} })
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Stop() })
	o := &oneShot{dst: srv.Conn(0).LocalAddr(), size: size}
	cli, err := dataplane.Start(&portable.Backend{}, cfg, func(int) dataplane.Handler { return o })
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Stop() })
	rt := &engineRoundTrip{cli: cli, o: o}
	rt.done = func() bool { return o.got.Load() >= rt.next } // made once, as the mesh's are
	return rt
}

// once sends a datagram from the calling goroutine (TryTurn) and waits for
// its echo by running the shard's turns (Await), or, when the shard did
// not lend its wait, by polling.
func (rt *engineRoundTrip) once(tb testing.TB) {
	rt.next = rt.o.got.Load() + 1
	rt.o.want.Store(true)
	if !rt.cli.TryTurn(0) {
		rt.cli.Wake(0)
	}
	if rt.cli.Await(0, rt.done, time.Now().Add(time.Second), time.Time{}) {
		rt.lent++
		return
	}
	for end := time.Now().Add(time.Second); !rt.done(); {
		if time.Now().After(end) {
			tb.Fatal("no echo within a second")
		}
		time.Sleep(time.Microsecond)
	}
}

// A round trip through two engines allocates nothing: not the caller's
// send turn, not its wait, not the server shard's turn.
func TestRoundTripAllocatesNothing(t *testing.T) {
	rt := newEngineRoundTrip(t, 1024)
	for range 100 {
		rt.once(t) // warm up: buffers, the network poller
	}
	if a := testing.AllocsPerRun(2000, func() { rt.once(t) }); a > 0.01 {
		t.Fatalf("%.3f allocations per round trip", a)
	}
}

// BenchmarkRoundTrip is one 1 KiB datagram's round trip between two
// goroutines of one process on loopback: through two portable engines (an
// echoing server shard; a client whose caller sends from its own goroutine,
// TryTurn, and waits for the echo by running the shard's turns, Await, as
// a mesh call does), and, in the same run, through two net.UDPConns (the
// floor the compare harness measures MXP against). Their difference is the
// engine's and backend's share of an MXP call's latency; the rest is the
// transport's, the crypto's and the runtime's.
func BenchmarkRoundTrip(b *testing.B) {
	const size = 1024
	b.Run("engine", func(b *testing.B) {
		rt := newEngineRoundTrip(b, size)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			rt.once(b)
		}
		b.ReportMetric(float64(rt.lent)/float64(b.N), "awaited/op")
	})
	b.Run("net.UDPConn", func(b *testing.B) {
		srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		defer srv.Close()
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, a, err := srv.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				_, _ = srv.WriteToUDPAddrPort(buf[:n], a)
			}
		}()
		cli, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		msg, buf := make([]byte, size), make([]byte, 64<<10)
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			if _, err := cli.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := cli.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
