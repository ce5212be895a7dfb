package uring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/bpf"
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/dptest"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
	"github.com/mxp-dataplane/mxp/wire"
)

// requireURing skips the test, naming what is missing, when the backend
// cannot run here.
func requireURing(t testing.TB) {
	t.Helper()
	if _, err := Probe(dataplane.Config{}); err != nil {
		t.Skipf("io_uring backend unavailable here: %v", err)
	}
}

// pingPong runs total datagrams through a uring client and an echoing uring
// server, both bound on bind.
func pingPong(t *testing.T, bind netip.Addr, server, client dataplane.Config, size, total int) dptest.PingResult {
	t.Helper()
	requireURing(t)
	server.Addr = netip.AddrPortFrom(bind, 0)
	client.Addr = netip.AddrPortFrom(bind, 0)
	return dptest.PingPong(t, &Backend{}, server, &Backend{}, client, size, total)
}

var loopback4 = netip.MustParseAddr("127.0.0.1")

func TestProbe(t *testing.T) {
	b, err := Probe(dataplane.Config{})
	if err != nil {
		var ue *dataplane.UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, dataplane.ErrUnavailable) {
			t.Fatalf("probe error %v is not an UnavailableError", err)
		}
		if ue.Feature == "" || ue.Reason == "" {
			t.Fatalf("probe error %+v names no feature or reason", ue)
		}
		t.Skipf("io_uring backend unavailable here: %v", err)
	}
	if b.Name() != "uring" {
		t.Fatalf("name %q", b.Name())
	}
}

func TestPingPongBatches(t *testing.T) {
	for _, size := range []int{8, 64, 1200, 1472} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			r := pingPong(t, loopback4, dataplane.Config{}, dataplane.Config{}, size, 20000)
			if r.Client.TxPackets != 20000 || r.Server.RxPackets != 20000 || r.Server.TxPackets != 20000 || r.Client.RxPackets != 20000 {
				t.Fatalf("counters: client %+v server %+v", r.Client, r.Server)
			}
			if r.Client.TxCalls >= r.Client.TxPackets/2 {
				t.Errorf("%d send submissions for %d datagrams: not batching", r.Client.TxCalls, r.Client.TxPackets)
			}
			if r.Client.RxDropped+r.Server.RxDropped+r.Client.TxDropped+r.Server.TxDropped != 0 {
				t.Errorf("drops: client %+v server %+v", r.Client, r.Server)
			}
		})
	}
}

func TestIPv6Loopback(t *testing.T) {
	pingPong(t, netip.MustParseAddr("::1"), dataplane.Config{}, dataplane.Config{}, 1200, 5000)
}

func TestDualStackServesIPv4(t *testing.T) {
	requireURing(t)
	srv, err := dataplane.Start(&Backend{}, dataplane.Config{Addr: netip.MustParseAddrPort("[::]:0")}, func(int) dataplane.Handler { return &dptest.Echo{} })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	dst := netip.AddrPortFrom(loopback4, srv.Conn(0).LocalAddr().Port())
	p := &dptest.Pinger{Dst: dst, Size: 100, Total: 2000, Window: 64}
	cli, err := dataplane.Start(&Backend{}, dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0)}, func(int) dataplane.Handler { return p })
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); p.Got.Load() < 2000 && p.Err() == nil && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	cli.Stop()
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	if p.Got.Load() != 2000 {
		t.Fatalf("%d of 2000 echoes through a dual-stack socket", p.Got.Load())
	}
}

// Each side on a different backend: the uring server echoes a portable
// client's datagrams, and the other way round.
func TestInteropWithPortable(t *testing.T) {
	requireURing(t)
	cfg := dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0)}
	dptest.PingPong(t, &Backend{}, cfg, &portable.Backend{}, cfg, 1200, 10000)
	dptest.PingPong(t, &portable.Backend{}, cfg, &Backend{}, cfg, 1200, 10000)
}

// GSO on send with GRO off on receive: the kernel splits the super-datagrams
// and each arrives in a provided buffer of its own.
func TestGSOSendSplitByKernel(t *testing.T) {
	r := pingPong(t, loopback4, dataplane.Config{DisableGRO: true}, dataplane.Config{DisableGRO: true}, 1200, 20000)
	if r.Client.TxGSOSends == 0 {
		t.Fatalf("no GSO sends: %+v", r.Client)
	}
	if r.Server.RxGROSplits != 0 {
		t.Errorf("GRO was off but %d buffers were split", r.Server.RxGROSplits)
	}
	if r.Client.TxCalls > r.Client.TxPackets/4 {
		t.Errorf("GSO on, yet %d send submissions for %d datagrams", r.Client.TxCalls, r.Client.TxPackets)
	}
}

// GSO on send and GRO on receive: a provided buffer holds a coalesced
// super-datagram, split by the UDP_GRO segment size read from the cmsg.
func TestGROReceiveSplit(t *testing.T) {
	r := pingPong(t, loopback4, dataplane.Config{}, dataplane.Config{}, 1200, 20000)
	if r.Client.TxGSOSends == 0 {
		t.Fatalf("no GSO sends: %+v", r.Client)
	}
	if r.Server.RxGROSplits == 0 {
		t.Fatalf("no coalesced buffers split: %+v", r.Server)
	}
	if r.Server.RxCalls >= r.Server.RxPackets {
		t.Errorf("%d receive batches for %d datagrams", r.Server.RxCalls, r.Server.RxPackets)
	}
}

func TestWithoutOffloads(t *testing.T) {
	off := dataplane.Config{DisableGSO: true, DisableGRO: true}
	r := pingPong(t, loopback4, off, off, 1200, 20000)
	if r.Client.TxGSOSends != 0 || r.Server.TxGSOSends != 0 || r.Server.RxGROSplits != 0 {
		t.Fatalf("offloads used while disabled: client %+v server %+v", r.Client, r.Server)
	}
}

// Datagrams longer than MaxDatagram are dropped and counted, on receive
// (GRO off: the buffer is one byte longer than MaxDatagram) and on send.
func TestOversizeDropped(t *testing.T) {
	requireURing(t)
	t.Run("gro", func(t *testing.T) { testOversizeDropped(t, false) })
	t.Run("no-gro", func(t *testing.T) { testOversizeDropped(t, true) })
}

func testOversizeDropped(t *testing.T, noGRO bool) {
	cfg := dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0), MaxDatagram: 100, DisableGRO: noGRO}
	conns, err := (&Backend{}).Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := conns[0]
	defer c.Close()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c.Recv(nil) // arm
	conn.Write(make([]byte, 101))
	conn.Write(make([]byte, 100))
	rx := make([]dataplane.Packet, 8)
	got := 0
	for deadline := time.Now().Add(2 * time.Second); got < 1 && time.Now().Before(deadline); {
		n, err := c.Recv(rx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rx[:n] {
			if len(p.Buf) != 100 {
				t.Errorf("datagram of %d bytes delivered", len(p.Buf))
			}
		}
		got += n
		c.Release(rx[:n])
		if n == 0 {
			c.Wait(time.Now().Add(10*time.Millisecond), time.Time{})
		}
	}
	if st := c.Stats(); got != 1 || st.RxDropped != 1 {
		t.Fatalf("%d delivered, stats %+v: want 1 delivered and 1 dropped", got, st)
	}
	tx := make([]dataplane.Packet, 2)
	if n := c.TxBuffers(tx); n != 2 {
		t.Fatalf("%d send buffers", n)
	}
	if cap(tx[0].Buf) != 100 {
		t.Fatalf("send buffer capacity %d, want MaxDatagram", cap(tx[0].Buf))
	}
	tx[0].Buf = append(tx[0].Buf, make([]byte, 50)...)
	tx[0].Addr = netip.MustParseAddrPort("[2001:db8::1]:9") // not reachable from an IPv4 socket
	if n, err := c.Send(tx[:1]); err != nil || n != 0 {
		t.Fatalf("send to an IPv6 address from an IPv4 socket: %d, %v", n, err)
	}
	if st := c.Stats(); st.TxDropped != 1 {
		t.Fatalf("stats %+v: want 1 send dropped", st)
	}
}

// SK_REUSEPORT steering: every datagram reaches the shard its connection ID
// names, though all come from one flow.
func TestBPFSteersByConnectionID(t *testing.T) {
	requireURing(t)
	const n, total = 2, 4000
	hs := make([]*dptest.ShardChecker, n)
	e, err := dataplane.Start(&Backend{Steering: portable.SteerBPF}, dataplane.Config{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Shards: n},
		func(i int) dataplane.Handler { hs[i] = &dptest.ShardChecker{Shard: i, Shards: n}; return hs[i] })
	if errors.Is(err, bpf.ErrPermission) || errors.Is(err, bpf.ErrNotSupported) || errors.Is(err, bpf.ErrMemlock) {
		t.Skipf("SK_REUSEPORT steering unavailable here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	if f, _ := FeaturesOf(e.Conn(0)); !f.SteeredByBPF {
		t.Fatal("SteerBPF opened without BPF steering")
	}
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(e.Conn(0).LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hdr := make([]byte, 32)
	for i := range total {
		cid := wire.MakeConnID(i%256, uint64(i)*0x9E3779B97F4A7C15)
		binary.LittleEndian.PutUint64(hdr, cid)
		if _, err := conn.Write(hdr); err != nil {
			t.Fatal(err)
		}
		if i%256 == 255 {
			time.Sleep(time.Millisecond)
		}
	}
	sum := func() (got, wrong int64) {
		for _, h := range hs {
			got, wrong = got+h.Got.Load(), wrong+h.Wrong.Load()
		}
		return
	}
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if got, _ := sum(); got == total {
			break
		}
	}
	if got, wrong := sum(); got != total || wrong != 0 {
		t.Fatalf("%d of %d datagrams arrived, %d on the wrong shard", got, total, wrong)
	}
	for i, h := range hs {
		if h.Got.Load() != total/n {
			t.Errorf("shard %d got %d datagrams, want %d", i, h.Got.Load(), total/n)
		}
	}
}

// Wake interrupts a Wait with no deadline, from another goroutine.
func TestWakeInterruptsWait(t *testing.T) {
	requireURing(t)
	conns, err := (&Backend{}).Open(dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0)})
	if err != nil {
		t.Fatal(err)
	}
	c := conns[0]
	defer c.Close()
	for range 3 {
		go func() { time.Sleep(20 * time.Millisecond); c.Wake() }()
		start := time.Now()
		if err := c.Wait(time.Time{}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("Wait returned after %v", d)
		}
	}
	// Wait may return spuriously once for a wake-up already consumed (its
	// completion can trail the Wait it ended): settle, then measure.
	if err := c.Wait(time.Now().Add(5*time.Millisecond), time.Time{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := c.Wait(time.Now().Add(30*time.Millisecond), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Errorf("Wait with a 30ms deadline and nothing to do returned after %v", d)
	}
}

// openFDs and uringMappings count the process's descriptors and io_uring
// mappings, to check that Close leaves nothing behind.
func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func uringMappings(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "io_uring")
}

func openPair(t *testing.T, b *Backend, cfg dataplane.Config) (a, z *shardConn) {
	t.Helper()
	cfg.Addr = netip.AddrPortFrom(loopback4, 0)
	open := func() *shardConn {
		conns, err := b.Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conns[0].Close() })
		return conns[0].(*shardConn)
	}
	return open(), open()
}

// checkAccounting verifies that every receive buffer is either in the
// kernel's ring or held by us exactly once, and that no send is in flight.
func checkAccounting(t *testing.T, c *shardConn) {
	t.Helper()
	c.reap()
	r := &c.rx
	busy := 0
	for bid, b := range r.busy {
		if b {
			busy++
		}
		if r.refs[bid] != 0 {
			t.Errorf("buffer %d still has %d datagrams out", bid, r.refs[bid])
		}
	}
	if r.provided+busy != r.nbufs {
		t.Errorf("%d buffers in the ring + %d held = %d, want %d", r.provided, busy, r.provided+busy, r.nbufs)
	}
	if busy != r.qLen+boolInt(r.splitting) {
		t.Errorf("%d buffers held but %d queued and %d being split", busy, r.qLen, boolInt(r.splitting))
	}
}

// With SQPOLL (off by default) the kernel thread takes the SQEs; the
// traffic is the same.
func TestSQPollPingPong(t *testing.T) {
	requireURing(t)
	cfg := dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0)}
	probe, err := (&Backend{SQPoll: true}).Open(cfg)
	if err != nil {
		t.Skipf("SQPOLL unavailable here: %v", err)
	}
	f, _ := FeaturesOf(probe[0])
	probe[0].Close()
	if !f.SQPoll {
		t.Fatal("SQPoll asked for but not in force")
	}
	// The server's counters are read once its last send completed: with
	// SQPOLL the kernel thread submits it after Send returned, and the
	// completion is counted when the shard next reaps.
	srv, err := dataplane.Start(&Backend{SQPoll: true}, cfg, func(int) dataplane.Handler { return &dptest.Echo{} })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	p := &dptest.Pinger{Dst: srv.Conn(0).LocalAddr(), Size: 1200, Total: 10000, Window: 256}
	cli, err := dataplane.Start(&Backend{SQPoll: true}, cfg, func(int) dataplane.Handler { return p })
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); p.Got.Load() < 10000 && p.Err() == nil && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if err := cli.Stop(); err != nil {
		t.Error(err)
	}
	if err := p.Err(); err != nil || p.Got.Load() != 10000 {
		t.Fatalf("%d of 10000 echoes (%v); client %+v", p.Got.Load(), err, cli.Stats())
	}
	var st dataplane.Stats
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if st = srv.Stats(); st.TxPackets == 10000 {
			break
		}
	}
	if st.RxPackets != 10000 || st.TxPackets != 10000 {
		t.Fatalf("server counters %+v", st)
	}
}
