package xdp

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"

	"github.com/mxp-dataplane/mxp/dataplane"
)

func TestProbeReasons(t *testing.T) {
	requireXDP(t)
	_, b := topology(t, "mxpxprobe", 2, false)
	for _, c := range []struct {
		addr, want string
	}{
		{"127.0.0.1:4433", "loopback"},
		{"198.18.0.99:4433", "no interface"},
		{"[2001:db8::99]:4433", "no interface"},
	} {
		err := b.Do(func() error {
			_, err := Probe(dataplane.Config{Addr: netip.MustParseAddrPort(c.addr)})
			return err
		})
		var ue *dataplane.UnavailableError
		if !errors.As(err, &ue) || !errors.Is(err, dataplane.ErrUnavailable) || ue.Backend != "xdp" || ue.Feature != "interface" || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Probe(%s) = %v, want an UnavailableError about the interface saying %q", c.addr, err, c.want)
		}
	}
	for _, addr := range []netip.Addr{b.IPv4, netip.IPv4Unspecified()} {
		if err := b.Do(func() error { _, err := Probe(dataplane.Config{Addr: netip.AddrPortFrom(addr, 0)}); return err }); err != nil {
			t.Errorf("Probe(%v) in the host with that address: %v", addr, err)
		}
	}
	// More shards than queues: unavailable, so that auto picks another backend.
	if err := b.Do(func() error {
		_, err := Probe(dataplane.Config{Addr: netip.AddrPortFrom(b.IPv4, 0), Shards: 3})
		return err
	}); !errors.Is(err, dataplane.ErrUnavailable) || !strings.Contains(err.Error(), "2 RX queues") {
		t.Errorf("Probe with 3 shards on 2 queues: %v", err)
	}
	// Someone else's XDP program on the interface: unavailable, named.
	other, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "other_xdp", Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Do(func() error {
		l, err := netlink.LinkByName(b.Link)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetXdpFdWithFlags(l, other.FD(), 4 /* XDP_FLAGS_DRV_MODE */); err != nil {
			return err
		}
		_, perr := Probe(dataplane.Config{Addr: netip.AddrPortFrom(b.IPv4, 0)})
		if err := netlink.LinkSetXdpFdWithFlags(l, -1, 4); err != nil {
			return err
		}
		if !errors.Is(perr, dataplane.ErrUnavailable) || !strings.Contains(perr.Error(), "other_xdp") {
			return fmt.Errorf("Probe with someone else's XDP program attached: %v", perr)
		}
		return nil
	})
	other.Close()
	if err != nil {
		t.Error(err)
	}
	// More shards than RX queues: a clear error, nothing left behind.
	be := &inNetns{host: b}
	if _, err := be.Open(dataplane.Config{Addr: netip.AddrPortFrom(b.IPv4, 0), Shards: 3}); err == nil || !strings.Contains(err.Error(), "RX queues") {
		t.Errorf("3 shards on 2 queues: %v", err)
	}
	conns, err := be.Open(dataplane.Config{Addr: netip.AddrPortFrom(b.IPv4, 0), Shards: 2})
	if err != nil {
		t.Fatalf("2 shards on 2 queues: %v", err)
	}
	notes := strings.Join(be.Notes(), "; ")
	if be.Variant() != "xdp-copy" || !strings.Contains(notes, "copy mode") || !strings.Contains(notes, "native XDP") {
		t.Errorf("variant %q, notes %q", be.Variant(), notes)
	}
	for _, c := range conns {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
	// The last Close detaches the program.
	hd, err := b.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()
	l, err := hd.LinkByName(b.Link)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Errorf("XDP program %d still attached after every shard closed", x.ProgId)
	}
}

// xdpMD is struct xdp_md, the context BPF_PROG_TEST_RUN takes for XDP.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

// With the shard's AF_XDP socket in the XSKMAP, BPF_PROG_TEST_RUN on the
// interface's queue 0 returns XDP_REDIRECT for a datagram of shard 0 (the
// verdict the unit tests in bpf/ cannot reach without a socket), and
// XDP_PASS for one of shard 1, which arrived on the wrong queue.
func TestProgramRedirectVerdict(t *testing.T) {
	requireXDP(t)
	_, b := topology(t, "mxpxdpv", 2, false)
	be := &inNetns{host: b}
	conns, err := be.Open(dataplane.Config{Addr: netip.AddrPortFrom(b.IPv4, 0), Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	sc := conns[0].(*shardConn)
	h := txHeader{src: netip.MustParseAddrPort("198.18.0.1:5000"), dst: conns[0].LocalAddr()}
	for _, c := range []struct {
		shard byte
		want  uint32
	}{{0, 4 /* XDP_REDIRECT */}, {2, 4}, {1, 2 /* XDP_PASS */}} {
		p := make([]byte, 32)
		p[7] = c.shard
		frame := buildFrame(&h, p)
		var got uint32
		err := b.Do(func() (err error) {
			got, err = sc.g.prog.Program().Run(&ebpf.RunOptions{
				Data:    frame,
				Context: xdpMD{DataEnd: uint32(len(frame)), IngressIfindex: uint32(sc.g.features.Ifindex), RxQueueIndex: 0},
			})
			return err
		})
		if err != nil {
			t.Fatalf("Program.Run: %v", err)
		}
		if got != c.want {
			t.Errorf("shard byte %d on queue 0: verdict %d, want %d", c.shard, got, c.want)
		}
	}
}

// Closing and at once reopening on the same queues works: the kernel frees a
// closed AF_XDP socket's hold on its queue a moment later, and Open waits
// for it (a bench runs one process after another on the same veth).
func TestReopenQuickly(t *testing.T) {
	requireXDP(t)
	_, b := topology(t, "mxpxdpro", 2, false)
	be := &inNetns{host: b}
	for i := range 8 {
		conns, err := be.Open(dataplane.Config{Addr: netip.AddrPortFrom(b.IPv4, 0), Shards: 2})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		for _, c := range conns {
			if err := c.Close(); err != nil {
				t.Fatalf("close %d: %v", i, err)
			}
		}
	}
}
