package portable

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/mxp-dataplane/mxp/dataplane"
	"pgregory.net/rapid"
)

// TestGSOCoalesceThenGROSplit: cutting a batch into GSO runs, "sending" each
// run as the kernel would (the datagrams concatenated, with the run's segment
// size) and splitting every coalesced buffer again as GRO receive does, gives
// back exactly the original datagrams, in order, and every run obeys the
// kernel's limits.
func TestGSOCoalesceThenGROSplit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		dests := []netip.AddrPort{
			netip.MustParseAddrPort("198.18.0.1:9000"),
			netip.MustParseAddrPort("198.18.0.2:9000"),
			netip.MustParseAddrPort("[2001:db8::1]:9000"),
		}
		maxSegs := rapid.IntRange(1, maxGSOSegments).Draw(t, "maxSegs")
		maxBytes := rapid.IntRange(1, maxGSOBytes).Draw(t, "maxBytes")
		n := rapid.IntRange(1, 200).Draw(t, "n")
		sizes := []int{0, 1, 64, 1200, 1472}
		pkts := make([]dataplane.Packet, n)
		for i := range pkts {
			size := rapid.SampledFrom(sizes).Draw(t, "size")
			if rapid.Bool().Draw(t, "odd") {
				size = rapid.IntRange(0, 1500).Draw(t, "oddsize")
			}
			b := make([]byte, size)
			for j := range b {
				b[j] = byte(i*31 + j)
			}
			if size > 7 {
				b[7] = byte(rapid.IntRange(0, 2).Draw(t, "shard")) // a few shards, often equal
			}
			pkts[i] = dataplane.Packet{Buf: b, Addr: rapid.SampledFrom(dests).Draw(t, "dest")}
		}
		var got []dataplane.Packet
		for start := 0; start < n; {
			end := gsoRun(pkts, start, maxSegs, maxBytes)
			if end <= start || end > n {
				t.Fatalf("gsoRun(%d) = %d", start, end)
			}
			seg := len(pkts[start].Buf)
			var wire []byte
			for i := start; i < end; i++ {
				p := pkts[i]
				if p.Addr != pkts[start].Addr {
					t.Fatalf("run %d..%d mixes destinations", start, end)
				}
				if shardByte(p.Buf) != shardByte(pkts[start].Buf) {
					t.Fatalf("run %d..%d mixes connection-ID shard bytes: the receiver would steer it whole to one shard", start, end)
				}
				if i < end-1 && len(p.Buf) != seg || len(p.Buf) > seg {
					t.Fatalf("run %d..%d: datagram %d has %d bytes, segment size %d", start, end, i, len(p.Buf), seg)
				}
				wire = append(wire, p.Buf...)
			}
			if end-start > 1 && (end-start > maxSegs || len(wire) > maxBytes) {
				t.Fatalf("run %d..%d over the limits: %d segments, %d bytes", start, end, end-start, len(wire))
			}
			// The receiver's GRO may coalesce the run back into one buffer.
			if len(wire) == 0 {
				got = append(got, dataplane.Packet{Buf: wire, Addr: pkts[start].Addr})
			}
			for off := 0; off < len(wire); {
				var d []byte
				d, off = groSegment(wire, seg, off)
				got = append(got, dataplane.Packet{Buf: d, Addr: pkts[start].Addr})
			}
			start = end
		}
		if len(got) != n {
			t.Fatalf("%d datagrams after the round trip, want %d", len(got), n)
		}
		for i := range got {
			if !bytes.Equal(got[i].Buf, pkts[i].Buf) || got[i].Addr != pkts[i].Addr {
				t.Fatalf("datagram %d differs", i)
			}
		}
	})
}

// A run is as long as the rules allow: the coalescing is not just correct
// but useful.
func TestGSORunIsMaximal(t *testing.T) {
	dst := netip.MustParseAddrPort("198.18.0.1:9000")
	mk := func(sizes ...int) []dataplane.Packet {
		p := make([]dataplane.Packet, len(sizes))
		for i, s := range sizes {
			p[i] = dataplane.Packet{Buf: make([]byte, s), Addr: dst}
		}
		return p
	}
	cases := []struct {
		sizes []int
		want  int
	}{
		{[]int{1200, 1200, 1200, 700, 1200}, 4},
		{[]int{1200, 1300}, 1},
		{[]int{0, 0}, 1},
		{[]int{100, 100, 0}, 2},
		{make100(70), maxGSOSegments},
	}
	for _, c := range cases {
		if got := gsoRun(mk(c.sizes...), 0, maxGSOSegments, maxGSOBytes); got != c.want {
			t.Errorf("sizes %v: run of %d, want %d", c.sizes[:min(len(c.sizes), 6)], got, c.want)
		}
	}
	// Datagrams of connections on another shard start a new run.
	mixed := mk(1200, 1200, 1200, 1200)
	mixed[2].Buf[7] = 1
	if got := gsoRun(mixed, 0, maxGSOSegments, maxGSOBytes); got != 2 {
		t.Errorf("shard bytes 0,0,1,0: run of %d, want 2", got)
	}
	big := mk(make1200(60)...)
	if got := gsoRun(big, 0, maxGSOSegments, maxGSOBytes); got != maxGSOBytes/1200 {
		t.Errorf("1200-byte datagrams: run of %d, want %d (byte limit)", got, maxGSOBytes/1200)
	}
}

func make100(n int) []int  { return fill(n, 100) }
func make1200(n int) []int { return fill(n, 1200) }
func fill(n, v int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = v
	}
	return s
}
