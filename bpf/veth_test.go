package bpf

import (
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/testnet"
)

// vethRig puts the reuseport group in host b of a two-host testnet topology
// and sends from host a, so datagrams cross a veth pair and the IP stack's
// receive path from a (virtual) NIC rather than loopback.
func vethRig(ipv6 bool) func(t *testing.T, n int) rig {
	return func(t *testing.T, n int) rig {
		testnet.Require(t)
		topo, err := testnet.New(testnet.Config{Prefix: "mxpbpf", Queues: 2, IPv6: ipv6})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := topo.Close(); err != nil {
				t.Errorf("topology Close: %v", err)
			}
		})
		a, b := topo.Hosts[0], topo.Hosts[1]
		ip := b.IPv4
		if ipv6 {
			ip = b.IPv6
		}
		var conns []*net.UDPConn
		if err := b.Do(func() (err error) {
			conns, err = openGroup(ip.String(), n)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for _, c := range conns {
			t.Cleanup(func() { c.Close() })
		}
		var tx *net.UDPConn
		if err := a.Do(func() (err error) {
			tx, err = net.DialUDP("udp", nil, conns[0].LocalAddr().(*net.UDPAddr))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Close() })
		return rig{conns, tx, func(dgs [][]byte) received { return sendFrom(t, tx, conns, dgs) }}
	}
}

func TestSteeringAcrossVeth(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, n := range []int{2, 4} {
			t.Run(fmt.Sprintf("ipv6=%v/%d", v6, n), func(t *testing.T) { testSteering(t, n, vethRig(v6)) })
		}
	}
}

// A UDP GSO send crosses the veth as one skb, so the receiving host looks
// up a socket once for all its segments: the program sees the first
// segment and the whole burst goes to that segment's shard (the kernel then
// splits it for a socket without UDP_GRO). Each burst here is one
// connection's, as GSO bursts are in MXP.
func TestSteeringGSOBurstsAcrossVeth(t *testing.T) {
	const n, bursts, segs, segSize = 4, 12, 4, 1000
	r := load(t, n)
	rg := vethRig(false)(t, n)
	if err := r.AttachToConn(rg.conns[0]); err != nil {
		t.Fatal(err)
	}
	for i, c := range rg.conns {
		if err := r.SetShardConn(i, c); err != nil {
			t.Fatal(err)
		}
	}
	tx := rg.tx
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], segSize)

	want := map[uint32]int{}
	got := make(received, n)
	for k := 0; k < bursts; k++ {
		sb := byte(k*7 + 1)
		buf := make([]byte, 0, segs*segSize)
		for s := 0; s < segs; s++ {
			seq := uint32(k*segs + s)
			buf = append(buf, datagram(seq, sb, segSize)...)
			want[seq] = int(sb) % n
		}
		if _, _, err := tx.WriteMsgUDP(buf, oob, nil); err != nil {
			t.Skipf("skipping: UDP GSO send refused here: %v", err)
		}
		for i, r := range collect(t, rg.conns, segs, 0) {
			got[i] = append(got[i], r...)
		}
	}
	for i, r := range collect(t, rg.conns, 0, 50*time.Millisecond) {
		got[i] = append(got[i], r...)
	}
	seen := 0
	for sock, ds := range got {
		for _, d := range ds {
			if len(d) != segSize {
				t.Errorf("socket %d got %d bytes, want segments of %d", sock, len(d), segSize)
				continue
			}
			seq := binary.LittleEndian.Uint32(d)
			if w := want[seq]; w != sock {
				t.Errorf("segment %d (burst %d) at socket %d, want %d", seq, seq/segs, sock, w)
			}
			seen++
		}
	}
	if seen != bursts*segs {
		t.Errorf("received %d of %d segments", seen, bursts*segs)
	}
	c, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("counters %+v for %d bursts of %d segments", c, bursts, segs)
	if c.SelectFailed != 0 || c.FallbackShort != 0 || (c.Steered != bursts && c.Steered != bursts*segs) {
		t.Errorf("counters %+v, want %d (one per GSO skb) or %d (one per segment) steered", c, bursts, bursts*segs)
	}
}
