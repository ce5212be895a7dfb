package testnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const testPrefix = "mxptn"

func ipv6Available() bool {
	_, err := os.Stat("/proc/net/if_inet6")
	return err == nil
}

func newTopo(t *testing.T, cfg Config) *Topology {
	t.Helper()
	if cfg.Prefix == "" {
		cfg.Prefix = testPrefix
	}
	return NewT(t, cfg)
}

// namespacesWithPrefix lists NetnsDir entries starting with p.
func namespacesWithPrefix(t *testing.T, p string) []string {
	t.Helper()
	ents, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), p) {
			out = append(out, e.Name())
		}
	}
	return out
}

// rootLinksWithPrefix lists links of the test's own namespace whose name
// starts with p.
func rootLinksWithPrefix(t *testing.T, p string) []string {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, p) {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

func checkLink(t *testing.T, h *Host, name, kind string, mtu, queues int) {
	t.Helper()
	hd, err := h.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()
	l, err := hd.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: link %s: %v", h.Name, name, err)
	}
	a := l.Attrs()
	if l.Type() != kind {
		t.Errorf("%s/%s: type %q, want %q", h.Name, name, l.Type(), kind)
	}
	if a.MTU != mtu {
		t.Errorf("%s/%s: MTU %d, want %d", h.Name, name, a.MTU, mtu)
	}
	if queues > 0 && (a.NumTxQueues != queues || a.NumRxQueues != queues) {
		t.Errorf("%s/%s: %d TX / %d RX queues, want %d", h.Name, name, a.NumTxQueues, a.NumRxQueues, queues)
	}
	if a.Flags&net.FlagUp == 0 {
		t.Errorf("%s/%s: not up", h.Name, name)
	}
	lo, err := hd.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s: loopback not up", h.Name)
	}
}

// exchange sends count datagrams of size bytes from host src to host dst
// over the given family, in lock-step windows so that no socket buffer can
// overflow, and checks that every one arrives intact and in order. It
// gives up after a few seconds.
func exchange(t *testing.T, src, dst *Host, to netip.Addr, count, size int) {
	t.Helper()
	network := "udp4"
	if to.Is6() {
		network = "udp6"
	}
	var rx, tx *net.UDPConn
	if err := dst.Do(func() (err error) {
		rx, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, 0)))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", dst.Name, err)
	}
	defer rx.Close()
	if err := src.Do(func() (err error) {
		tx, err = net.DialUDP(network, nil, rx.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatalf("dial from %s: %v", src.Name, err)
	}
	defer tx.Close()

	deadline := time.Now().Add(5 * time.Second)
	rx.SetReadDeadline(deadline)
	tx.SetWriteDeadline(deadline)
	// At most ~64 KiB in flight: well under the default receive buffer,
	// counting the kernel's per-skb overhead.
	window := min(32, 1+65536/size)
	msg := make([]byte, size)
	buf := make([]byte, size+1)
	for sent := 0; sent < count; {
		n := min(window, count-sent)
		for i := 0; i < n; i++ {
			fill(msg, sent+i)
			if _, err := tx.Write(msg); err != nil {
				t.Fatalf("send %d of %d bytes: %v", sent+i, size, err)
			}
		}
		for i := 0; i < n; i++ {
			got, from, err := rx.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("receive %d (of %d sent): %v", sent+i, count, err)
			}
			fill(msg, sent+i)
			if !bytes.Equal(buf[:got], msg) {
				t.Fatalf("datagram %d: got %d bytes, want %d bytes of pattern %d", sent+i, got, size, sent+i)
			}
			want := src.IPv4
			if to.Is6() {
				want = src.IPv6
			}
			if from.Addr().Unmap() != want {
				t.Fatalf("datagram %d from %v, want %v", sent+i, from.Addr(), want)
			}
		}
		sent += n
	}
}

func fill(b []byte, seq int) {
	for i := range b {
		b[i] = byte(seq + i)
	}
}

// checkDF verifies that the path MTU is the configured one: a datagram that
// exactly fills it goes out with DF set, one byte more is refused with
// EMSGSIZE.
func checkDF(t *testing.T, src *Host, to netip.Addr, mtu int) {
	t.Helper()
	err := src.Do(func() error {
		c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, 9)))
		if err != nil {
			return err
		}
		defer c.Close()
		raw, err := c.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
		}); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		if _, err := c.Write(make([]byte, mtu-28)); err != nil {
			return fmt.Errorf("%d-byte datagram (fills MTU %d): %w", mtu-28, mtu, err)
		}
		_, err = c.Write(make([]byte, mtu-27))
		if !errors.Is(err, syscall.EMSGSIZE) {
			return fmt.Errorf("%d-byte datagram over MTU %d with DF: got %v, want EMSGSIZE", mtu-27, mtu, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestTwoHosts(t *testing.T) {
	const mtu, queues = 4000, 4
	v6 := ipv6Available()
	topo := newTopo(t, Config{MTU: mtu, Queues: queues, IPv6: v6})
	if len(topo.Hosts) != 2 || topo.Hub != nil {
		t.Fatalf("got %d hosts, hub %v; want 2, none", len(topo.Hosts), topo.Hub)
	}
	a, b := topo.Hosts[0], topo.Hosts[1]
	if a.IPv4 != netip.MustParseAddr("198.18.0.1") || b.IPv4 != netip.MustParseAddr("198.18.0.2") {
		t.Fatalf("addresses %v, %v", a.IPv4, b.IPv4)
	}
	for _, h := range topo.Hosts {
		if !strings.HasPrefix(h.Name, fmt.Sprintf("%s-%d-", testPrefix, os.Getpid())) {
			t.Errorf("namespace name %q lacks prefix and pid", h.Name)
		}
		checkLink(t, h, LinkName, "veth", mtu, queues)
	}
	exchange(t, a, b, b.IPv4, 256, 1200)
	exchange(t, b, a, a.IPv4, 64, mtu-28)
	checkDF(t, a, b.IPv4, mtu)
	if v6 {
		exchange(t, a, b, b.IPv6, 128, 1200)
	} else {
		t.Log("IPv6 not available: IPv6 exchange not tested")
	}
	// The hosts are isolated from the test's namespace: the address of b
	// is not local here.
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, ad := range addrs {
			if strings.HasPrefix(ad.String(), "198.18.0.") {
				t.Errorf("topology address %v visible in the test's namespace", ad)
			}
		}
	}
}

func TestBridgeThreeHosts(t *testing.T) {
	const mtu = 9000
	topo := newTopo(t, Config{Hosts: 3, MTU: mtu, Queues: 2})
	if len(topo.Hosts) != 3 || topo.Hub == nil {
		t.Fatalf("got %d hosts, hub %v; want 3 and a hub", len(topo.Hosts), topo.Hub)
	}
	for _, h := range topo.Hosts {
		checkLink(t, h, LinkName, "veth", mtu, 2)
		checkLink(t, topo.Hub, "p"+h.Role, "veth", mtu, 2)
	}
	checkLink(t, topo.Hub, BridgeName, "bridge", mtu, 0)
	a, b, c := topo.Hosts[0], topo.Hosts[1], topo.Hosts[2]
	exchange(t, a, c, c.IPv4, 64, 1200)
	exchange(t, b, c, c.IPv4, 64, 1200)
	exchange(t, c, a, a.IPv4, 16, mtu-28)
}

func TestCloseLeavesNothing(t *testing.T) {
	Require(t)
	for _, hosts := range []int{2, 4} {
		topo, err := New(Config{Prefix: testPrefix, Hosts: hosts, IPv6: ipv6Available()})
		if err != nil {
			t.Fatal(err)
		}
		prefix := topo.Prefix()
		if got := len(namespacesWithPrefix(t, prefix)); got != len(topo.Namespaces()) || got == 0 {
			t.Fatalf("%d namespaces with prefix %s, want %d", got, prefix, len(topo.Namespaces()))
		}
		if err := topo.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := topo.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if left := namespacesWithPrefix(t, prefix); len(left) != 0 {
			t.Errorf("after Close, namespaces left: %v", left)
		}
		if left := rootLinksWithPrefix(t, testPrefix); len(left) != 0 {
			t.Errorf("after Close, links left in the test's namespace: %v", left)
		}
	}
}

func TestPartialFailureCleansUp(t *testing.T) {
	Require(t)
	for _, tc := range []struct {
		hosts int
		step  string
	}{{2, "host a"}, {2, "host b"}, {2, "veth"}, {2, "addresses"}, {3, "host c"}, {3, "bridge"}, {3, "addresses"}} {
		injected := errors.New("injected failure at " + tc.step)
		testHookStep = func(s string) error {
			if s == tc.step {
				return injected
			}
			return nil
		}
		before := topoSeq.Load()
		topo, err := New(Config{Prefix: testPrefix, Hosts: tc.hosts})
		testHookStep = nil
		if topo != nil || !errors.Is(err, injected) {
			t.Fatalf("%d hosts, fail at %q: New = %v, %v; want nil, the injected error", tc.hosts, tc.step, topo, err)
		}
		prefix := fmt.Sprintf("%s-%d-%d-", testPrefix, os.Getpid(), before+1)
		if left := namespacesWithPrefix(t, prefix); len(left) != 0 {
			t.Errorf("fail at %q: namespaces left: %v", tc.step, left)
		}
	}
	// A failure from the kernel rather than from the hook: an MTU the veth
	// driver refuses.
	before := topoSeq.Load()
	if _, err := New(Config{Prefix: testPrefix, MTU: 70000}); err == nil {
		t.Fatal("New with MTU 70000 succeeded")
	} else {
		var op *OpError
		if !errors.As(err, &op) || op.Op != "create veth" {
			t.Errorf("MTU 70000: error %v, want an OpError from create veth", err)
		}
	}
	if left := namespacesWithPrefix(t, fmt.Sprintf("%s-%d-%d-", testPrefix, os.Getpid(), before+1)); len(left) != 0 {
		t.Errorf("MTU 70000: namespaces left: %v", left)
	}
}

func TestCleanupStale(t *testing.T) {
	Require(t)
	// A pid that no longer exists: a child that has been reaped.
	child := exec.Command("true")
	if err := child.Run(); err != nil {
		t.Skipf("cannot run true to get a dead pid: %v", err)
	}
	dead := child.Process.Pid
	if processAlive(dead) {
		t.Skipf("pid %d reused already", dead)
	}
	stale := fmt.Sprintf("%s-%d-1-a", testPrefix, dead)
	ns, err := createNamedNetns(stale)
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
	t.Cleanup(func() { deleteNamedNetns(stale) })

	live := newTopo(t, Config{})
	deleted, err := CleanupStale(testPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || deleted[0] != stale {
		t.Errorf("CleanupStale deleted %v, want [%s]", deleted, stale)
	}
	if _, err := os.Stat(filepath.Join(NetnsDir, stale)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale namespace still there: %v", err)
	}
	if got := namespacesWithPrefix(t, live.Prefix()); len(got) != 2 {
		t.Errorf("live topology's namespaces after CleanupStale: %v, want 2", got)
	}
	if _, err := CleanupStale("Bad-Prefix"); !errors.Is(err, ErrConfig) {
		t.Errorf("CleanupStale(bad prefix) = %v, want ErrConfig", err)
	}
}

func TestExec(t *testing.T) {
	RequireExec(t)
	topo := newTopo(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := topo.Hosts[1].Exec(ctx, "ip", "-o", "-4", "addr", "show", "dev", LinkName)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), "198.18.0.2/24") {
		t.Errorf("ip addr inside host b: %q lacks 198.18.0.2/24", out)
	}
	if _, err := topo.Hosts[0].Exec(ctx, "false"); err == nil {
		t.Error("Exec(false) succeeded")
	}
}

func TestDo(t *testing.T) {
	topo := newTopo(t, Config{})
	a := topo.Hosts[0]
	var names []string
	if err := a.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "lo,"+LinkName {
		t.Errorf("interfaces inside host a: %v, want [lo %s]", names, LinkName)
	}
	want := errors.New("from fn")
	if err := a.Do(func() error { return want }); err != want {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	if err := a.Do(func() error { runtime.Goexit(); return nil }); err == nil {
		t.Error("Do with Goexit returned nil")
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want boom", r)
			}
		}()
		a.Do(func() error { panic("boom") })
		t.Error("Do did not re-panic")
	}()
	// The caller's thread never changed namespace.
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Name == LinkName {
			t.Errorf("%s visible in the test's namespace after Do", LinkName)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{Prefix: ""},
		{Prefix: "has-dash"},
		{Prefix: "UPPER"},
		{Prefix: "9lead"},
		{Prefix: "waytoolongprefix17"},
		{Prefix: "ok", Hosts: 1},
		{Prefix: "ok", Hosts: MaxHosts + 1},
		{Prefix: "ok", MTU: 67},
		{Prefix: "ok", Queues: -1},
	} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}
