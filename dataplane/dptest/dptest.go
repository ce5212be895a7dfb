// Package dptest holds the test handlers and harness every dataplane
// backend's tests share: numbered, patterned datagrams, an echoing handler,
// a windowed pinger that checks every echo, a shard-steering checker, and a
// wrapper that opens a backend inside a test network namespace.
package dptest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/wire"
)

// FillPattern writes datagram seq: the sequence number, then bytes derived from it.
func FillPattern(b []byte, seq uint64) {
	binary.LittleEndian.PutUint64(b, seq)
	for i := 8; i < len(b); i++ {
		b[i] = byte(seq*13 + uint64(i))
	}
}

// CheckPattern returns the sequence number of a datagram FillPattern wrote,
// or why it is not one of size bytes.
func CheckPattern(b []byte, size int) (uint64, error) {
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

// Echo sends every datagram back where it came from.
type Echo struct {
	pending []dataplane.Packet
	store   []byte
}

func (e *Echo) Receive(pkts []dataplane.Packet, _ time.Time) {
	for _, p := range pkts {
		off := len(e.store)
		e.store = append(e.store, p.Buf...)
		e.pending = append(e.pending, dataplane.Packet{Buf: e.store[off:len(e.store):len(e.store)], Addr: p.Addr})
	}
}

func (e *Echo) Transmit(out []dataplane.Packet, _ time.Time) int {
	n := min(len(out), len(e.pending))
	for i := range n {
		out[i].Buf = append(out[i].Buf[:0], e.pending[i].Buf...)
		out[i].Addr = e.pending[i].Addr
	}
	// Keep the arrays (a resliced pending would lose its front for good and
	// allocate again): what is left moves down.
	e.pending = e.pending[:copy(e.pending, e.pending[n:])]
	if len(e.pending) == 0 {
		e.store = e.store[:0]
	}
	return n
}

func (e *Echo) Deadline() time.Time { return time.Time{} }

// Pinger sends Total numbered datagrams of Size bytes to Dst, keeping at
// most Window unanswered, and checks every echo.
type Pinger struct {
	Dst                 netip.AddrPort
	Size, Total, Window int
	next                uint64
	Got                 atomic.Int64
	seen                []bool
	err                 atomic.Pointer[error]
}

// Err returns the first problem an echo showed.
func (p *Pinger) Err() error {
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

func (p *Pinger) fail(err error) { p.err.CompareAndSwap(nil, &err) }

func (p *Pinger) Receive(pkts []dataplane.Packet, _ time.Time) {
	if p.seen == nil {
		p.seen = make([]bool, p.Total)
	}
	for _, q := range pkts {
		seq, err := CheckPattern(q.Buf, p.Size)
		if err != nil {
			p.fail(err)
			continue
		}
		if seq >= uint64(p.Total) || p.seen[seq] {
			p.fail(fmt.Errorf("datagram %d duplicated or unknown", seq))
			continue
		}
		p.seen[seq] = true
		p.Got.Add(1)
	}
}

func (p *Pinger) Transmit(out []dataplane.Packet, _ time.Time) int {
	n := 0
	for n < len(out) && p.next < uint64(p.Total) && int(p.next)-int(p.Got.Load()) < p.Window {
		b := out[n].Buf[:p.Size]
		FillPattern(b, p.next)
		out[n] = dataplane.Packet{Buf: b, Addr: p.Dst}
		p.next++
		n++
	}
	return n
}

func (p *Pinger) Deadline() time.Time { return time.Time{} }

// PingResult is what both engines counted.
type PingResult struct{ Client, Server dataplane.Stats }

// PingPong runs total datagrams of size bytes from a client engine through
// an echoing server engine and fails t unless every one comes back intact,
// once, within 20 s.
func PingPong(t testing.TB, sb dataplane.Backend, server dataplane.Config, cb dataplane.Backend, client dataplane.Config, size, total int) PingResult {
	t.Helper()
	srv, err := dataplane.Start(sb, server, func(int) dataplane.Handler { return &Echo{} })
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	defer srv.Stop()
	p := &Pinger{Dst: srv.Conn(0).LocalAddr(), Size: size, Total: total, Window: 256}
	cli, err := dataplane.Start(cb, client, func(int) dataplane.Handler { return p })
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for p.Got.Load() < int64(total) && p.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := cli.Stop(); err != nil {
		t.Errorf("client stop: %v", err)
	}
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	res := PingResult{Client: cli.Stats(), Server: srv.Stats()}
	if got := p.Got.Load(); got != int64(total) {
		t.Fatalf("%d of %d echoes came back in time; client %+v server %+v", got, total, res.Client, res.Server)
	}
	return res
}

// ShardChecker counts datagrams, and those that reached a shard other than
// the one their connection ID names.
type ShardChecker struct {
	Shard, Shards int
	Got, Wrong    atomic.Int64
}

func (h *ShardChecker) Receive(pkts []dataplane.Packet, _ time.Time) {
	for _, p := range pkts {
		if len(p.Buf) < 8 || int(p.Buf[wire.ConnIDShardOffset])%h.Shards != h.Shard {
			h.Wrong.Add(1)
		}
	}
	h.Got.Add(int64(len(pkts)))
}
func (*ShardChecker) Transmit([]dataplane.Packet, time.Time) int { return 0 }
func (*ShardChecker) Deadline() time.Time                        { return time.Time{} }

// FormatStats is a one-line summary of a shard's counters for test logs.
func FormatStats(s dataplane.Stats) string {
	return fmt.Sprintf("rx %d in %d calls (%d GRO splits), tx %d in %d calls (%d GSO sends), dropped rx %d tx %d",
		s.RxPackets, s.RxCalls, s.RxGROSplits, s.TxPackets, s.TxCalls, s.TxGSOSends, s.RxDropped, s.TxDropped)
}

// OpenOne opens shard 0 of b on 127.0.0.1 (a free port), closed when the
// test ends: for tests that drive a ShardConn without an engine.
func OpenOne(t testing.TB, b dataplane.Backend, cfg dataplane.Config) dataplane.ShardConn {
	t.Helper()
	cfg.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
	conns, err := b.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns[0]
}
