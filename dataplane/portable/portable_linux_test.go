package portable

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/dptest"
	"github.com/mxp-dataplane/mxp/dataplane/internal/udpsock"
)

// pingPong runs total datagrams from a client engine through an echoing
// server engine, both bound on bind.
func pingPong(t *testing.T, bind netip.Addr, server, client dataplane.Config, size, total int) dptest.PingResult {
	t.Helper()
	server.Addr = netip.AddrPortFrom(bind, 0)
	client.Addr = netip.AddrPortFrom(bind, 0)
	return dptest.PingPong(t, &Backend{}, server, &Backend{}, client, size, total)
}

var loopback4 = netip.MustParseAddr("127.0.0.1")

func TestPingPongBatches(t *testing.T) {
	for _, size := range []int{0, 64, 1200, 1472} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			if size == 0 {
				size = 8 // the sequence number
			}
			r := pingPong(t, loopback4, dataplane.Config{}, dataplane.Config{}, size, 20000)
			if r.Client.TxPackets != 20000 || r.Server.RxPackets != 20000 || r.Server.TxPackets != 20000 {
				t.Fatalf("counters: client %+v server %+v", r.Client, r.Server)
			}
			if r.Client.TxCalls >= r.Client.TxPackets/2 {
				t.Errorf("%d send calls for %d datagrams: not batching", r.Client.TxCalls, r.Client.TxPackets)
			}
		})
	}
}

func TestIPv6Loopback(t *testing.T) {
	pingPong(t, netip.MustParseAddr("::1"), dataplane.Config{}, dataplane.Config{}, 1200, 5000)
}

func TestDualStackServesIPv4(t *testing.T) {
	srvCfg := dataplane.Config{Addr: netip.MustParseAddrPort("[::]:0")}
	srv, err := dataplane.Start(&Backend{}, srvCfg, func(int) dataplane.Handler { return &dptest.Echo{} })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), srv.Conn(0).LocalAddr().Port())
	p := &dptest.Pinger{Dst: dst, Size: 100, Total: 1000, Window: 64}
	cli, err := dataplane.Start(&Backend{}, dataplane.Config{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, func(int) dataplane.Handler { return p })
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000 && p.Got.Load() < 1000; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	cli.Stop()
	if p.Got.Load() != 1000 {
		t.Fatalf("%d of 1000 echoes through a dual-stack socket", p.Got.Load())
	}
}

// GSO on send with GRO off on receive: the kernel splits our super-datagrams
// and every datagram arrives intact, one per message.
func TestGSOSendSplitByKernel(t *testing.T) {
	r := pingPong(t, loopback4, dataplane.Config{DisableGRO: true}, dataplane.Config{DisableGRO: true}, 1200, 20000)
	f := r.Client
	if f.TxGSOSends == 0 {
		t.Skip("the kernel refused UDP_SEGMENT: GSO unavailable here (the fallback path ran instead)")
	}
	if r.Server.RxGROSplits != 0 {
		t.Errorf("GRO was off but %d buffers were split", r.Server.RxGROSplits)
	}
	if f.TxCalls > f.TxPackets/4 {
		t.Errorf("GSO on, yet %d send calls for %d datagrams", f.TxCalls, f.TxPackets)
	}
}

// GSO on send and GRO on receive: on loopback the kernel hands the
// receiver whole super-datagrams, which we split by the UDP_GRO segment size.
func TestGROReceiveSplit(t *testing.T) {
	r := pingPong(t, loopback4, dataplane.Config{}, dataplane.Config{}, 1200, 20000)
	if r.Client.TxGSOSends == 0 {
		t.Skip("the kernel refused UDP_SEGMENT: GSO unavailable, so no GRO buffers to split")
	}
	if r.Server.RxGROSplits == 0 {
		t.Skip("the kernel delivered no coalesced buffers: UDP_GRO unavailable here")
	}
	if r.Server.RxCalls >= r.Server.RxPackets {
		t.Errorf("%d receive calls for %d datagrams", r.Server.RxCalls, r.Server.RxPackets)
	}
}

// The fallback path: GSO and GRO forced off, one message per datagram.
func TestWithoutOffloads(t *testing.T) {
	off := dataplane.Config{DisableGSO: true, DisableGRO: true}
	r := pingPong(t, loopback4, off, off, 1200, 20000)
	if r.Client.TxGSOSends != 0 || r.Server.TxGSOSends != 0 || r.Server.RxGROSplits != 0 {
		t.Fatalf("offloads used while disabled: client %+v server %+v", r.Client, r.Server)
	}
}

func TestFeaturesProbed(t *testing.T) {
	conns, err := (&Backend{}).Open(dataplane.Config{Addr: netip.MustParseAddrPort("127.0.0.1:0")})
	if err != nil {
		t.Fatal(err)
	}
	defer conns[0].Close()
	f, ok := FeaturesOf(conns[0])
	if !ok {
		t.Fatal("FeaturesOf refused our own conn")
	}
	if f.RecvBuffer < 256<<10 {
		t.Errorf("receive buffer %d: the large-buffer request was not applied", f.RecvBuffer)
	}
	t.Logf("features: %+v", f)
}

// The hot path — TxBuffers, Send, Recv, Release — allocates nothing.
func TestHotPathDoesNotAllocate(t *testing.T) {
	open := func() dataplane.ShardConn {
		conns, err := (&Backend{}).Open(dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conns[0].Close() })
		return conns[0]
	}
	a, b := open(), open()
	tx := make([]dataplane.Packet, dataplane.DefaultBatch)
	rx := make([]dataplane.Packet, dataplane.DefaultBatch)
	dst := b.LocalAddr()
	received := 0
	allocs := testing.AllocsPerRun(200, func() {
		n := a.TxBuffers(tx)
		for i := range n {
			tx[i].Buf = tx[i].Buf[:1200]
			dptest.FillPattern(tx[i].Buf, uint64(i))
			tx[i].Addr = dst
		}
		if _, err := a.Send(tx[:n]); err != nil {
			t.Fatal(err)
		}
		want := received + n
		for k := 0; k < 100 && received < want; k++ {
			m, err := b.Recv(rx)
			if err != nil {
				t.Fatal(err)
			}
			received += m
			b.Release(rx[:m])
			if m == 0 {
				b.Wait(time.Now().Add(time.Millisecond), time.Time{})
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per batch of %d datagrams sent and received, want 0", allocs, len(tx))
	}
	if received == 0 {
		t.Fatal("nothing received")
	}
}

// After an idle spell the first receive asks for one datagram (a lone
// request or reply is the common case, and a batch read would look for a
// second); what else came waits for the next receive, which takes the rest
// in one batch, nothing lost and in order.
func TestFirstReceiveAfterIdleTakesOne(t *testing.T) {
	c := dptest.OpenOne(t, &Backend{}, dataplane.Config{})
	pkts := make([]dataplane.Packet, 64)
	if n, err := c.Recv(pkts); n != 0 || err != nil {
		t.Fatalf("Recv on an empty socket: %d, %v", n, err)
	}
	if err := c.Wait(time.Now().Add(5*time.Millisecond), time.Time{}); err != nil { // finds nothing: idle
		t.Fatal(err)
	}
	peer, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	const burst = 5
	for i := range burst {
		if _, err := peer.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	var got []byte
	calls := []int{}
	for end := time.Now().Add(5 * time.Second); len(got) < burst && time.Now().Before(end); {
		if err := c.Wait(end, time.Time{}); err != nil {
			t.Fatal(err)
		}
		n, err := c.Recv(pkts)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts[:n] {
			got = append(got, p.Buf...)
		}
		c.Release(pkts[:n])
		if n > 0 {
			calls = append(calls, n)
		}
	}
	if string(got) != "\x00\x01\x02\x03\x04" {
		t.Fatalf("received %v, want 0..4 in order", got)
	}
	if len(calls) != 2 || calls[0] != 1 || calls[1] != burst-1 {
		t.Errorf("datagrams per receive: %v, want [1 %d]", calls, burst-1)
	}
	if s := c.Stats(); s.RxCalls != 2 {
		t.Errorf("%d receive calls that returned data, want 2", s.RxCalls)
	}
}

// TxBuffers hands out a few slots after small sends and doubles them while
// each send takes all it was given, up to the batch.
func TestTxBuffersFollowTheSends(t *testing.T) {
	c := dptest.OpenOne(t, &Backend{}, dataplane.Config{})
	dst := c.LocalAddr() // to itself: the datagrams are never read
	pkts := make([]dataplane.Packet, 64)
	send := func(k int) {
		t.Helper()
		for i := range k {
			pkts[i].Buf = append(pkts[i].Buf, "x"...)
			pkts[i].Addr = dst
		}
		if n, err := c.Send(pkts[:k]); n != k || err != nil {
			t.Fatalf("Send(%d): %d, %v", k, n, err)
		}
	}
	var got []int
	for range 5 {
		n := c.TxBuffers(pkts)
		got = append(got, n)
		send(n) // a handler that fills every slot
	}
	if fmt.Sprint(got) != "[8 16 32 64 64]" {
		t.Fatalf("slots while every one is filled: %v, want [8 16 32 64 64]", got)
	}
	for range 5 { // idle turns: nothing to send
		c.TxBuffers(pkts)
		send(0)
	}
	if n := c.TxBuffers(pkts); n != 64 {
		t.Fatalf("slots after idle turns: %d, want 64 still", n)
	}
	send(0)
	for range 3 {
		c.TxBuffers(pkts)
		send(1) // one reply per turn
	}
	if n := c.TxBuffers(pkts); n != 8 {
		t.Fatalf("slots after sends of one: %d, want 8", n)
	}
	for i, p := range pkts[:8] {
		if len(p.Buf) != 0 || cap(p.Buf) < 1500 {
			t.Fatalf("slot %d: len %d cap %d, want an empty buffer of MaxDatagram", i, len(p.Buf), cap(p.Buf))
		}
	}
	send(0)
}

// Shards share their port through SO_REUSEPORT; a single shard's socket is
// opened without it: a socket that asks for SO_REUSEPORT can join the
// shards' port only when there are several.
func TestReusePortOnlyForSeveralShards(t *testing.T) {
	for _, shards := range []int{1, 2} {
		conns, err := (&Backend{}).Open(dataplane.Config{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Shards: shards})
		if err != nil {
			t.Fatal(err)
		}
		local := conns[0].LocalAddr()
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return serr
		}}
		c, err := lc.ListenPacket(context.Background(), "udp", local.String())
		if err == nil {
			c.Close()
		}
		for _, sc := range conns {
			sc.Close()
		}
		if joined := err == nil; joined != (shards > 1) {
			t.Fatalf("%d shards on %v: another SO_REUSEPORT socket joined them: %v (%v)", shards, local, joined, err)
		}
	}
}

// A lone datagram goes out with sendto and, after an idle spell, comes in
// with recvmsg rather than the batch calls: its bytes, its source address,
// and a datagram too long for MaxDatagram (dropped and counted, as the
// batch receive does, with or without GRO) all come through the same.
func TestLoneDatagrams(t *testing.T) {
	for _, cfg := range []dataplane.Config{{}, {DisableGRO: true, DisableGSO: true}} {
		t.Run(fmt.Sprintf("gro=%v", !cfg.DisableGRO), func(t *testing.T) {
			c := dptest.OpenOne(t, &Backend{}, cfg)
			peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()

			tx := make([]dataplane.Packet, 8)
			buf := make([]byte, 2048)
			for i, size := range []int{0, 1, 1472} {
				if n := c.TxBuffers(tx); n == 0 {
					t.Fatal("no send slot")
				}
				tx[0].Buf = tx[0].Buf[:size]
				if size >= 8 {
					dptest.FillPattern(tx[0].Buf, uint64(i))
				}
				tx[0].Addr = peerAddr
				if n, err := c.Send(tx[:1]); n != 1 || err != nil {
					t.Fatalf("Send of %d bytes: %d, %v", size, n, err)
				}
				peer.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, from, err := peer.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatal(err)
				}
				if from != c.LocalAddr() || n != size {
					t.Fatalf("got %d bytes from %v, want %d from %v", n, from, size, c.LocalAddr())
				}
				if size >= 8 {
					if seq, err := dptest.CheckPattern(buf[:n], size); err != nil || seq != uint64(i) {
						t.Fatalf("datagram %d: seq %d, %v", i, seq, err)
					}
				}
			}
			if s := c.Stats(); s.TxCalls != 3 || s.TxPackets != 3 || s.TxDropped != 0 {
				t.Errorf("after three lone sends: %s", dptest.FormatStats(s))
			}

			rx := make([]dataplane.Packet, 64)
			if n, err := c.Recv(rx); n != 0 || err != nil { // idle: the next receive asks for one
				t.Fatalf("Recv on an empty socket: %d, %v", n, err)
			}
			dst := net.UDPAddrFromAddrPort(c.LocalAddr())
			for _, size := range []int{1600, 0, 700} { // 1600 > MaxDatagram (1500)
				if _, err := peer.WriteToUDP(make([]byte, size), dst); err != nil {
					t.Fatal(err)
				}
				var got []dataplane.Packet
				for end := time.Now().Add(2 * time.Second); len(got) == 0 && time.Now().Before(end); {
					if err := c.Wait(time.Now().Add(50*time.Millisecond), time.Time{}); err != nil {
						t.Fatal(err)
					}
					n, err := c.Recv(rx)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, rx[:n]...)
					for _, p := range rx[:n] {
						if p.Addr != peerAddr || len(p.Buf) != size {
							t.Fatalf("received %d bytes from %v, want %d from %v", len(p.Buf), p.Addr, size, peerAddr)
						}
					}
					c.Release(rx[:n])
					if size > 1500 && c.Stats().RxDropped == 1 {
						break
					}
				}
				switch {
				case size > 1500 && len(got) != 0:
					t.Fatalf("a %d-byte datagram was handed out", size)
				case size <= 1500 && len(got) != 1:
					t.Fatalf("%d-byte datagram: received %d", size, len(got))
				}
			}
			if s := c.Stats(); s.RxDropped != 1 || s.RxPackets != 2 {
				t.Errorf("after one long and two lone datagrams: %s", dptest.FormatStats(s))
			}
		})
	}
}

// With ConnectPeer a lone shard's socket connects to the peer its handler
// names (PeerConnector), after which its datagrams to that peer go
// unaddressed; a datagram to another peer still goes, addressed, but that
// peer is heard only once the handler disconnects the socket; the port
// stays throughout; without ConnectPeer it never connects.
func TestConnectPeer(t *testing.T) {
	peerOf := ConnectedPeer
	listen := func() (*net.UDPConn, netip.AddrPort) {
		p, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p, p.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	for _, bind := range []netip.Addr{netip.IPv4Unspecified(), loopback4, netip.IPv6Unspecified()} { // [::]: dual-stack, IPv4 peers v4-mapped
		t.Run(bind.String(), func(t *testing.T) {
			conns, err := (&Backend{}).Open(dataplane.Config{Addr: netip.AddrPortFrom(bind, 0), ConnectPeer: true})
			if err != nil {
				t.Fatal(err)
			}
			c := conns[0]
			t.Cleanup(func() { c.Close() })
			port := c.LocalAddr().Port()
			to := netip.AddrPortFrom(loopback4, port) // the shard, as the peers reach it
			tx := make([]dataplane.Packet, 8)
			rx := make([]dataplane.Packet, 8)
			send := func(dst netip.AddrPort, b byte) {
				t.Helper()
				c.TxBuffers(tx)
				tx[0].Buf, tx[0].Addr = append(tx[0].Buf[:0], b), dst
				if n, err := c.Send(tx[:1]); n != 1 || err != nil {
					t.Fatalf("send to %v: %d, %v", dst, n, err)
				}
			}
			// expect reads one datagram at p, from the shard, and answers it.
			expect := func(p *net.UDPConn, b byte) {
				t.Helper()
				buf := make([]byte, 16)
				p.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, from, err := p.ReadFromUDPAddrPort(buf)
				if err != nil || n != 1 || buf[0] != b || from.Port() != port {
					t.Fatalf("peer got %d bytes %v from %v (%v), want [%d] from port %d", n, buf[:n], from, err, b, port)
				}
				if _, err := p.WriteToUDPAddrPort([]byte{b + 100}, to); err != nil {
					t.Fatal(err)
				}
			}
			// answer receives the peer's answer at the shard.
			answer := func(from netip.AddrPort, b byte) {
				t.Helper()
				for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
					if err := c.Wait(time.Now().Add(50*time.Millisecond), time.Time{}); err != nil {
						t.Fatal(err)
					}
					n, err := c.Recv(rx)
					if err != nil {
						t.Fatal(err)
					}
					got := n > 0
					if got && (rx[0].Addr != from || len(rx[0].Buf) != 1 || rx[0].Buf[0] != b+100) {
						t.Fatalf("shard got %v from %v, want [%d] from %v", rx[0].Buf, rx[0].Addr, b+100, from)
					}
					c.Release(rx[:n])
					if got {
						return
					}
				}
				t.Fatalf("no answer from %v", from)
			}

			connectTo := func(p netip.AddrPort) {
				t.Helper()
				if err := c.(dataplane.PeerConnector).ConnectPeer(p); err != nil {
					t.Fatal(err)
				}
				if got, ok := peerOf(c); ok != p.IsValid() || ok && got != p {
					t.Fatalf("ConnectPeer(%v): connected to %v (%v)", p, got, ok)
				}
			}
			a, aAddr := listen()
			send(aAddr, 1)
			expect(a, 1)
			answer(aAddr, 1)
			if p, ok := peerOf(c); ok {
				t.Fatalf("connected to %v before the handler asked", p)
			}
			connectTo(aAddr)
			send(aAddr, 2) // to the connected peer: no address in the call
			expect(a, 2)
			answer(aAddr, 2)

			// Another peer, while connected: the datagram goes, addressed,
			// but its answer is not heard until the handler disconnects.
			b, bAddr := listen()
			send(bAddr, 3)
			if p, ok := peerOf(c); !ok || p != aAddr {
				t.Fatalf("after sending to a second peer: connected to %v (%v), want %v still", p, ok, aAddr)
			}
			expect(b, 3)
			quiet := time.Now().Add(30 * time.Millisecond)
			for time.Now().Before(quiet) {
				c.Wait(quiet, time.Time{})
				if n, _ := c.Recv(rx); n > 0 {
					t.Fatalf("heard %v from %v while connected to %v", rx[0].Buf, rx[0].Addr, aAddr)
				}
			}
			connectTo(netip.AddrPort{})
			if _, err := b.WriteToUDPAddrPort([]byte{103}, to); err != nil {
				t.Fatal(err)
			}
			answer(bAddr, 3)
			send(aAddr, 4)
			expect(a, 4)
			answer(aAddr, 4)
			connectTo(bAddr) // from no peer to one
			send(bAddr, 5)
			expect(b, 5)
			answer(bAddr, 5)
			connectTo(aAddr) // from one peer straight to another
			send(aAddr, 6)
			expect(a, 6)
			answer(aAddr, 6)
			connectTo(netip.AddrPort{})
			send(bAddr, 7)
			expect(b, 7)
			answer(bAddr, 7)
			if c.LocalAddr().Port() != port {
				t.Fatalf("port %d, was %d", c.LocalAddr().Port(), port)
			}
			sa, err := unix.Getsockname(c.(*shardConn).fd)
			if err != nil || udpsock.AddrPortOf(sa).Port() != port {
				t.Fatalf("bound to %v (%v) after disconnecting, want port %d", sa, err, port)
			}
			if s := c.Stats(); s.TxDropped != 0 || s.RxDropped != 0 {
				t.Errorf("drops: %s", dptest.FormatStats(s))
			}
		})
	}
	// Without ConnectPeer: never connected.
	c := dptest.OpenOne(t, &Backend{}, dataplane.Config{})
	if err := c.(dataplane.PeerConnector).ConnectPeer(netip.AddrPortFrom(loopback4, 9)); err != nil {
		t.Fatal(err)
	}
	if p, ok := peerOf(c); ok {
		t.Fatalf("connected to %v without ConnectPeer", p)
	}
}
