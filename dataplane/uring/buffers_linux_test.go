package uring

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/dptest"
)

// The hot path — TxBuffers, Send, Recv, Release, Wait — allocates nothing.
func TestHotPathDoesNotAllocate(t *testing.T) {
	requireURing(t)
	a, b := openPair(t, &Backend{}, dataplane.Config{})
	tx := make([]dataplane.Packet, dataplane.DefaultBatch)
	rx := make([]dataplane.Packet, dataplane.DefaultBatch)
	dst := b.LocalAddr()
	received, sent := 0, 0
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
		sent += n
		for k := 0; k < 100 && received < sent; k++ {
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
	if received == 0 || received != sent {
		t.Fatalf("received %d of %d", received, sent)
	}
	checkAccounting(t, b)
}

// When the application holds every provided buffer, the multishot receive
// ends with ENOBUFS and the datagrams wait in the socket; once buffers are
// released it is re-armed and every datagram arrives, in order, once.
func TestReceiveRearmsAfterENOBUFS(t *testing.T) {
	requireURing(t)
	conns, err := (&Backend{RxBuffers: 4}).Open(dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0), DisableGRO: true})
	if err != nil {
		t.Fatal(err)
	}
	c := conns[0].(*shardConn)
	defer c.Close()
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.LocalAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c.Recv(nil) // arm the receive
	const total = 40
	for i := range total {
		var b [16]byte
		binary.LittleEndian.PutUint64(b[:], uint64(i))
		if _, err := conn.Write(b[:]); err != nil {
			t.Fatal(err)
		}
	}
	// Receive without releasing: only 4 buffers' worth can arrive.
	var held []dataplane.Packet
	rx := make([]dataplane.Packet, 8)
	for quiet := time.Now().Add(200 * time.Millisecond); time.Now().Before(quiet); {
		n, err := c.Recv(rx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, rx[:n]...)
		if n == 0 {
			c.Wait(time.Now().Add(5*time.Millisecond), time.Time{})
		}
	}
	if len(held) != 4 {
		t.Fatalf("%d datagrams received while holding every buffer, want 4", len(held))
	}
	c.reap()
	if c.rx.armed || c.rx.enobufs == 0 {
		t.Fatalf("receive armed %v after %d ENOBUFS ends: the buffer ring ran dry without ending it", c.rx.armed, c.rx.enobufs)
	}
	next := 0
	check := func(pkts []dataplane.Packet) {
		for _, p := range pkts {
			if seq := binary.LittleEndian.Uint64(p.Buf); seq != uint64(next) || len(p.Buf) != 16 {
				t.Fatalf("datagram %d (%d bytes), want %d", seq, len(p.Buf), next)
			}
			next++
		}
	}
	check(held)
	c.Release(held)
	for deadline := time.Now().Add(3 * time.Second); next < total && time.Now().Before(deadline); {
		n, err := c.Recv(rx)
		if err != nil {
			t.Fatal(err)
		}
		check(rx[:n])
		c.Release(rx[:n])
		if n == 0 {
			c.Wait(time.Now().Add(5*time.Millisecond), time.Time{})
		}
	}
	if next != total {
		t.Fatalf("%d of %d datagrams after releasing", next, total)
	}
	checkAccounting(t, c)
	if c.rx.provided != c.rx.nbufs {
		t.Errorf("%d of %d buffers back in the ring", c.rx.provided, c.rx.nbufs)
	}
}

// Recv may be called again before Release: buffers stay with the
// application, and Release of both batches in either order returns them all.
func TestReleaseOutOfOrder(t *testing.T) {
	requireURing(t)
	a, b := openPair(t, &Backend{}, dataplane.Config{})
	tx := make([]dataplane.Packet, 64)
	n := a.TxBuffers(tx)
	for i := range n {
		tx[i].Buf = tx[i].Buf[:100]
		dptest.FillPattern(tx[i].Buf, uint64(i))
		tx[i].Addr = b.LocalAddr()
	}
	a.Send(tx[:n])
	first, second := make([]dataplane.Packet, 10), make([]dataplane.Packet, 64)
	var k1, k2 int
	for deadline := time.Now().Add(2 * time.Second); k1+k2 < n && time.Now().Before(deadline); {
		if k1 == 0 {
			k1, _ = b.Recv(first)
		} else {
			m, _ := b.Recv(second[k2:])
			k2 += m
		}
		b.Wait(time.Now().Add(5*time.Millisecond), time.Time{})
	}
	if k1+k2 != n {
		t.Fatalf("received %d of %d", k1+k2, n)
	}
	for i, p := range append(first[:k1:k1], second[:k2]...) {
		if seq, err := dptest.CheckPattern(p.Buf, 100); err != nil || seq != uint64(i) {
			t.Fatalf("datagram %d: seq %d, %v", i, seq, err)
		}
	}
	b.Release(second[:k2])
	b.Release(first[:k1])
	b.Release(first[:k1]) // twice: ignored
	checkAccounting(t, b)
	if b.rx.provided != b.rx.nbufs {
		t.Errorf("%d of %d buffers back in the ring", b.rx.provided, b.rx.nbufs)
	}
}

// TxBuffers hands out fewer (none) once every send chunk is in flight, and
// completions free them again.
func TestTxBuffersBoundedByInFlight(t *testing.T) {
	requireURing(t)
	a, b := openPair(t, &Backend{}, dataplane.Config{})
	tx := make([]dataplane.Packet, 64)
	// Hand out every chunk without sending: each TxBuffers after a Send of
	// none returns the same chunk, so sends must be real to exhaust them.
	a.tx.free = a.tx.free[:0] // pretend all are in flight
	if n := a.TxBuffers(tx); n != 0 {
		t.Fatalf("%d buffers with every chunk in flight", n)
	}
	a.tx.free = append(a.tx.free, 0)
	n := a.TxBuffers(tx)
	if n != 64 {
		t.Fatalf("%d buffers from a free chunk", n)
	}
	for i := range n {
		tx[i].Buf = tx[i].Buf[:64]
		tx[i].Addr = b.LocalAddr()
	}
	if _, err := a.Send(tx[:n]); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); len(a.tx.free) == 0 && time.Now().Before(deadline); {
		a.Wait(time.Now().Add(5*time.Millisecond), time.Time{})
	}
	if len(a.tx.free) != 1 {
		t.Fatalf("the chunk did not come back after its sends completed")
	}
	if st := a.Stats(); st.TxPackets != 64 {
		t.Fatalf("stats %+v: want 64 sent", st)
	}
	a.tx.free = append(a.tx.free, 1, 2, 3, 4, 5, 6, 7) // restore for Close
}

// At least 10M datagrams through one pair of shards on loopback (64-byte
// datagrams, GSO and GRO on): none lost, none duplicated, none corrupt, and
// afterwards every receive buffer back in the ring, every send chunk free,
// no descriptor or io_uring mapping left after Close. The window of
// datagrams in flight (256 GRO buffers' worth) is larger than the receive
// buffers can hold, so the multishot receive also runs dry and is re-armed
// over and over (about once per batch here).
func TestLongRun10M(t *testing.T) {
	requireURing(t)
	const total, size, window = 10_000_000, 64, 16384
	fds0, maps0 := openFDs(t), uringMappings(t)
	b := &Backend{}
	cfg := dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0)}
	ca, err := b.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cz, err := b.Open(cfg)
	if err != nil {
		ca[0].Close()
		t.Fatal(err)
	}
	a, z := ca[0].(*shardConn), cz[0].(*shardConn)
	dst := z.LocalAddr()
	seen := make([]uint64, total/64+1)
	tx := make([]dataplane.Packet, dataplane.DefaultBatch)
	rx := make([]dataplane.Packet, dataplane.DefaultBatch)
	sent, got, bad := 0, 0, 0
	start := time.Now()
	deadline := start.Add(100 * time.Second)
	for got < total && bad == 0 && time.Now().Before(deadline) {
		for sent < total && sent-got < window {
			n := min(a.TxBuffers(tx), total-sent)
			for i := range n {
				p := tx[i].Buf[:size]
				binary.LittleEndian.PutUint64(p, uint64(sent))
				binary.LittleEndian.PutUint64(p[size-8:], ^uint64(sent))
				tx[i].Buf, tx[i].Addr = p, dst
				sent++
			}
			if _, err := a.Send(tx[:n]); err != nil {
				t.Fatal(err)
			}
			if n < len(tx) {
				break
			}
		}
		n, err := z.Recv(rx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range rx[:n] {
			seq := binary.LittleEndian.Uint64(p.Buf)
			if len(p.Buf) != size || seq >= total || binary.LittleEndian.Uint64(p.Buf[size-8:]) != ^seq || seen[seq/64]&(1<<(seq%64)) != 0 {
				t.Errorf("datagram %d of %d bytes: corrupt, unknown or duplicated", seq, len(p.Buf))
				bad++
				continue
			}
			seen[seq/64] |= 1 << (seq % 64)
		}
		got += n
		z.Release(rx[:n])
		if n == 0 {
			z.Wait(time.Now().Add(2*time.Millisecond), time.Time{})
		}
	}
	elapsed := time.Since(start)
	a.reap()
	sa, sz := a.Stats(), z.Stats()
	t.Logf("%d datagrams in %v (%.2fM/s); sender %+v; receiver %+v; receive re-arms after ENOBUFS %d",
		got, elapsed.Round(time.Millisecond), float64(got)/elapsed.Seconds()/1e6, sa, sz, z.rx.enobufs)
	if got != total {
		t.Fatalf("%d of %d datagrams arrived (%d sent)", got, total, sent)
	}
	if sz.RxPackets != total || sz.RxDropped != 0 || sa.TxDropped != 0 {
		t.Errorf("counters: sender %+v receiver %+v", sa, sz)
	}
	checkAccounting(t, z)
	if z.rx.provided != z.rx.nbufs {
		t.Errorf("%d of %d receive buffers back in the ring", z.rx.provided, z.rx.nbufs)
	}
	for deadline := time.Now().Add(time.Second); !a.tx.idle() && time.Now().Before(deadline); {
		a.Wait(time.Now().Add(5*time.Millisecond), time.Time{})
	}
	if !a.tx.idle() {
		t.Errorf("%d of %d send chunks free at the end", len(a.tx.free), len(a.tx.chunks))
	}
	if err := a.Close(); err != nil {
		t.Error(err)
	}
	if err := z.Close(); err != nil {
		t.Error(err)
	}
	if fds, maps := openFDs(t), uringMappings(t); fds != fds0 || maps != maps0 {
		t.Errorf("after Close: %d descriptors and %d io_uring mappings, %d and %d before", fds, maps, fds0, maps0)
	}
}

// Opening and closing shards with traffic in flight leaves nothing behind.
func TestCloseLeavesNothing(t *testing.T) {
	requireURing(t)
	fds0, maps0 := openFDs(t), uringMappings(t)
	for range 10 {
		cfg := dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0)}
		ca, err := (&Backend{}).Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		cz, err := (&Backend{}).Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		a, z := ca[0], cz[0]
		z.Recv(nil)
		tx := make([]dataplane.Packet, 64)
		n := a.TxBuffers(tx)
		for i := range n {
			tx[i].Buf, tx[i].Addr = tx[i].Buf[:500], z.LocalAddr()
		}
		a.Send(tx[:n])
		rx := make([]dataplane.Packet, 16)
		z.Wait(time.Now().Add(5*time.Millisecond), time.Time{})
		z.Recv(rx) // held, not released, at Close
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
		if err := z.Close(); err != nil {
			t.Fatal(err)
		}
		if err := z.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
		z.Wake() // after Close: harmless
	}
	if fds, maps := openFDs(t), uringMappings(t); fds != fds0 || maps != maps0 {
		t.Errorf("after 10 pairs: %d descriptors and %d io_uring mappings, %d and %d before", fds, maps, fds0, maps0)
	}
}

// Empty datagrams are datagrams: each arrives with length 0 and its buffer
// comes back on Release.
func TestEmptyDatagrams(t *testing.T) {
	requireURing(t)
	for _, gro := range []bool{true, false} {
		conns, err := (&Backend{}).Open(dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0), DisableGRO: !gro})
		if err != nil {
			t.Fatal(err)
		}
		c := conns[0].(*shardConn)
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(c.LocalAddr()))
		if err != nil {
			t.Fatal(err)
		}
		c.Recv(nil)
		for range 5 {
			conn.Write(nil)
		}
		rx := make([]dataplane.Packet, 8)
		got := 0
		for deadline := time.Now().Add(2 * time.Second); got < 5 && time.Now().Before(deadline); {
			n, err := c.Recv(rx)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range rx[:n] {
				if len(p.Buf) != 0 || p.Addr != netip.MustParseAddrPort(conn.LocalAddr().String()) {
					t.Errorf("datagram %q from %v", p.Buf, p.Addr)
				}
			}
			got += n
			c.Release(rx[:n])
			if n == 0 {
				c.Wait(time.Now().Add(5*time.Millisecond), time.Time{})
			}
		}
		if got != 5 {
			t.Fatalf("gro %v: %d of 5 empty datagrams", gro, got)
		}
		checkAccounting(t, c)
		if c.rx.provided != c.rx.nbufs {
			t.Errorf("gro %v: %d of %d buffers back in the ring", gro, c.rx.provided, c.rx.nbufs)
		}
		conn.Close()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
