package portable

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/dataplane"
)

// fillPattern writes datagram seq: the sequence number, then bytes derived from it.
func fillPattern(b []byte, seq uint64) {
	binary.LittleEndian.PutUint64(b, seq)
	for i := 8; i < len(b); i++ {
		b[i] = byte(seq*13 + uint64(i))
	}
}

func checkPattern(b []byte, size int) (uint64, error) {
	if len(b) != size {
		return 0, fmt.Errorf("datagram of %d bytes, want %d", len(b), size)
	}
	seq := binary.LittleEndian.Uint64(b)
	for i := 8; i < len(b); i++ {
		if b[i] != byte(seq*13+uint64(i)) {
			return seq, fmt.Errorf("datagram %d corrupt at byte %d", seq, i)
		}
	}
	return seq, nil
}

// echo sends every datagram back where it came from.
type echo struct {
	pending []dataplane.Packet
	store   []byte
}

func (e *echo) Receive(pkts []dataplane.Packet, _ time.Time) {
	for _, p := range pkts {
		off := len(e.store)
		e.store = append(e.store, p.Buf...)
		e.pending = append(e.pending, dataplane.Packet{Buf: e.store[off:len(e.store):len(e.store)], Addr: p.Addr})
	}
}

func (e *echo) Transmit(out []dataplane.Packet, _ time.Time) int {
	n := min(len(out), len(e.pending))
	for i := range n {
		out[i].Buf = append(out[i].Buf[:0], e.pending[i].Buf...)
		out[i].Addr = e.pending[i].Addr
	}
	return e.shift(n)
}

func (e *echo) shift(n int) int {
	e.pending = e.pending[n:]
	if len(e.pending) == 0 {
		e.pending, e.store = e.pending[:0], e.store[:0]
	}
	return n
}

func (e *echo) Deadline() time.Time { return time.Time{} }

// pinger sends total numbered datagrams of size bytes to dst, keeping at most
// window unanswered, and checks every echo.
type pinger struct {
	dst                 netip.AddrPort
	size, total, window int
	next                uint64
	got                 atomic.Int64
	seen                []bool
	err                 atomic.Pointer[error]
}

func (p *pinger) fail(err error) { p.err.CompareAndSwap(nil, &err) }

func (p *pinger) Receive(pkts []dataplane.Packet, _ time.Time) {
	for _, q := range pkts {
		seq, err := checkPattern(q.Buf, p.size)
		if err != nil {
			p.fail(err)
			continue
		}
		if seq >= uint64(p.total) || p.seen[seq] {
			p.fail(fmt.Errorf("datagram %d duplicated or unknown", seq))
			continue
		}
		p.seen[seq] = true
		p.got.Add(1)
	}
}

func (p *pinger) Transmit(out []dataplane.Packet, _ time.Time) int {
	n := 0
	for n < len(out) && p.next < uint64(p.total) && int(p.next)-int(p.got.Load()) < p.window {
		b := out[n].Buf[:p.size]
		fillPattern(b, p.next)
		out[n] = dataplane.Packet{Buf: b, Addr: p.dst}
		p.next++
		n++
	}
	return n
}

func (p *pinger) Deadline() time.Time { return time.Time{} }

type pingResult struct {
	client, server dataplane.Stats
}

// pingPong runs total datagrams from a client engine through an echoing
// server engine, both bound on bind.
func pingPong(t *testing.T, bind netip.Addr, server, client dataplane.Config, size, total int) pingResult {
	t.Helper()
	server.Addr = netip.AddrPortFrom(bind, 0)
	client.Addr = netip.AddrPortFrom(bind, 0)
	return pingPongVia(t, &Backend{}, server, &Backend{}, client, size, total)
}

// pingPongVia is pingPong with each side's backend and bind address given.
func pingPongVia(t *testing.T, sb dataplane.Backend, server dataplane.Config, cb dataplane.Backend, client dataplane.Config, size, total int) pingResult {
	t.Helper()
	srv, err := dataplane.Start(sb, server, func(int) dataplane.Handler { return &echo{} })
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	defer srv.Stop()
	p := &pinger{dst: srv.Conn(0).LocalAddr(), size: size, total: total, window: 256, seen: make([]bool, total)}
	cli, err := dataplane.Start(cb, client, func(int) dataplane.Handler { return p })
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for p.got.Load() < int64(total) && p.err.Load() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := cli.Stop(); err != nil {
		t.Errorf("client stop: %v", err)
	}
	if e := p.err.Load(); e != nil {
		t.Fatal(*e)
	}
	res := pingResult{client: cli.Stats(), server: srv.Stats()}
	if got := p.got.Load(); got != int64(total) {
		t.Fatalf("%d of %d echoes came back in time; client %+v server %+v", got, total, res.client, res.server)
	}
	return res
}

var loopback4 = netip.MustParseAddr("127.0.0.1")

func TestPingPongBatches(t *testing.T) {
	for _, size := range []int{0, 64, 1200, 1472} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			if size == 0 {
				size = 8 // the sequence number
			}
			r := pingPong(t, loopback4, dataplane.Config{}, dataplane.Config{}, size, 20000)
			if r.client.TxPackets != 20000 || r.server.RxPackets != 20000 || r.server.TxPackets != 20000 {
				t.Fatalf("counters: client %+v server %+v", r.client, r.server)
			}
			if r.client.TxCalls >= r.client.TxPackets/2 {
				t.Errorf("%d send calls for %d datagrams: not batching", r.client.TxCalls, r.client.TxPackets)
			}
		})
	}
}

func TestIPv6Loopback(t *testing.T) {
	pingPong(t, netip.MustParseAddr("::1"), dataplane.Config{}, dataplane.Config{}, 1200, 5000)
}

func TestDualStackServesIPv4(t *testing.T) {
	srvCfg := dataplane.Config{Addr: netip.MustParseAddrPort("[::]:0")}
	srv, err := dataplane.Start(&Backend{}, srvCfg, func(int) dataplane.Handler { return &echo{} })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), srv.Conn(0).LocalAddr().Port())
	p := &pinger{dst: dst, size: 100, total: 1000, window: 64, seen: make([]bool, 1000)}
	cli, err := dataplane.Start(&Backend{}, dataplane.Config{Addr: netip.MustParseAddrPort("127.0.0.1:0")}, func(int) dataplane.Handler { return p })
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2000 && p.got.Load() < 1000; i++ {
		time.Sleep(5 * time.Millisecond)
	}
	cli.Stop()
	if p.got.Load() != 1000 {
		t.Fatalf("%d of 1000 echoes through a dual-stack socket", p.got.Load())
	}
}

// GSO on send with GRO off on receive: the kernel splits our super-datagrams
// and every datagram arrives intact, one per message.
func TestGSOSendSplitByKernel(t *testing.T) {
	r := pingPong(t, loopback4, dataplane.Config{DisableGRO: true}, dataplane.Config{DisableGRO: true}, 1200, 20000)
	f := r.client
	if f.TxGSOSends == 0 {
		t.Skip("the kernel refused UDP_SEGMENT: GSO unavailable here (the fallback path ran instead)")
	}
	if r.server.RxGROSplits != 0 {
		t.Errorf("GRO was off but %d buffers were split", r.server.RxGROSplits)
	}
	if f.TxCalls > f.TxPackets/4 {
		t.Errorf("GSO on, yet %d send calls for %d datagrams", f.TxCalls, f.TxPackets)
	}
}

// GSO on send and GRO on receive: on loopback the kernel hands the
// receiver whole super-datagrams, which we split by the UDP_GRO segment size.
func TestGROReceiveSplit(t *testing.T) {
	r := pingPong(t, loopback4, dataplane.Config{}, dataplane.Config{}, 1200, 20000)
	if r.client.TxGSOSends == 0 {
		t.Skip("the kernel refused UDP_SEGMENT: GSO unavailable, so no GRO buffers to split")
	}
	if r.server.RxGROSplits == 0 {
		t.Skip("the kernel delivered no coalesced buffers: UDP_GRO unavailable here")
	}
	if r.server.RxCalls >= r.server.RxPackets {
		t.Errorf("%d receive calls for %d datagrams", r.server.RxCalls, r.server.RxPackets)
	}
}

// The fallback path: GSO and GRO forced off, one message per datagram.
func TestWithoutOffloads(t *testing.T) {
	off := dataplane.Config{DisableGSO: true, DisableGRO: true}
	r := pingPong(t, loopback4, off, off, 1200, 20000)
	if r.client.TxGSOSends != 0 || r.server.TxGSOSends != 0 || r.server.RxGROSplits != 0 {
		t.Fatalf("offloads used while disabled: client %+v server %+v", r.client, r.server)
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
			fillPattern(tx[i].Buf, uint64(i))
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
				b.Wait(time.Now().Add(time.Millisecond))
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
