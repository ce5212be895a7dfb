//go:build linux

package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NetnsDir is where named network namespaces are bind-mounted (the
// directory iproute2 uses).
const NetnsDir = "/run/netns"

// LinkName is the name of every host's veth end, inside its namespace.
const LinkName = "veth0"

// BridgeName is the name of the bridge in the hub namespace (three or more
// hosts).
const BridgeName = "br0"

// MaxHosts is the largest number of hosts a topology can have.
const MaxHosts = 26

// IPv4 and IPv6 prefixes the hosts' addresses are taken from.
var (
	IPv4Prefix = netip.MustParsePrefix("198.18.0.0/24")
	IPv6Prefix = netip.MustParsePrefix("2001:db8::/64")
)

// Config describes a topology. The zero value of every field but Prefix
// has a default.
type Config struct {
	// Prefix starts the name of every namespace the topology creates.
	// Lower-case letters and digits only, 1 to 16 of them, starting with a
	// letter.
	Prefix string
	// Hosts is the number of hosts, 2 to MaxHosts; 0 means 2.
	Hosts int
	// MTU of every veth end (and of the bridge); 0 means 1500. The kernel
	// refuses values outside 68..65535.
	MTU int
	// Queues is the number of RX and of TX queues of every veth end; 0
	// means 1 (the kernel's default for veth).
	Queues int
	// IPv6 also gives each host an address in IPv6Prefix.
	IPv6 bool
}

// Topology is a set of hosts built by New. Close it when done.
type Topology struct {
	// Hosts, in the order of their addresses: Hosts[i] has address i+1.
	Hosts []*Host
	// Hub is the namespace that holds the bridge, or nil for two hosts.
	Hub *Host

	cfg     Config
	base    string   // "<prefix>-<pid>"
	created []string // namespace names, in creation order
	mu      sync.Mutex
	closed  bool
}

// Host is one network namespace of a topology.
type Host struct {
	// Name is the namespace's name (a file in NetnsDir).
	Name string
	// Role is "a", "b", ... for hosts and "hub" for the bridge namespace.
	Role string
	// Link is the name of the host's veth end inside its namespace.
	Link string
	// IPv4 is the host's address (invalid for the hub).
	IPv4 netip.Addr
	// IPv6 is the host's IPv6 address, invalid unless Config.IPv6.
	IPv6 netip.Addr

	ns netns.NsHandle
}

// OpError is a failure of one step of building or tearing down a topology.
type OpError struct {
	Op     string // what was being done, e.g. "create namespace"
	Target string // the namespace or link concerned
	Err    error
}

func (e *OpError) Error() string {
	return "testnet: " + e.Op + " " + e.Target + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

// ErrConfig is wrapped by errors about an invalid Config.
var ErrConfig = errors.New("testnet: invalid config")

// topoSeq numbers the topologies of this process, so that several may
// exist at once with the same prefix.
var topoSeq atomic.Uint64

// testHookStep, when set (by tests), is called after each named step of New;
// an error from it makes New fail there.
var testHookStep func(step string) error

func (c *Config) normalize() error {
	if !validPrefix(c.Prefix) {
		return fmt.Errorf("%w: prefix %q: want 1-16 lower-case letters and digits, starting with a letter", ErrConfig, c.Prefix)
	}
	if c.Hosts == 0 {
		c.Hosts = 2
	}
	if c.Hosts < 2 || c.Hosts > MaxHosts {
		return fmt.Errorf("%w: %d hosts: want 2..%d", ErrConfig, c.Hosts, MaxHosts)
	}
	if c.MTU == 0 {
		c.MTU = 1500
	}
	if c.MTU < 68 {
		return fmt.Errorf("%w: MTU %d below 68", ErrConfig, c.MTU)
	}
	if c.Queues == 0 {
		c.Queues = 1
	}
	if c.Queues < 1 || c.Queues > 4096 {
		return fmt.Errorf("%w: %d queues: want 1..4096", ErrConfig, c.Queues)
	}
	return nil
}

func validPrefix(p string) bool {
	if len(p) < 1 || len(p) > 16 || p[0] < 'a' || p[0] > 'z' {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// New builds the topology cfg describes. On failure it deletes whatever it
// had created and returns the error (joined with any cleanup error).
func New(cfg Config) (*Topology, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	seq := topoSeq.Add(1)
	t := &Topology{cfg: cfg, base: fmt.Sprintf("%s-%d-%d", cfg.Prefix, os.Getpid(), seq)}
	if err := t.build(); err != nil {
		return nil, errors.Join(err, t.Close())
	}
	return t, nil
}

func step(name string) error {
	if testHookStep != nil {
		return testHookStep(name)
	}
	return nil
}

func (t *Topology) build() error {
	for i := 0; i < t.cfg.Hosts; i++ {
		h, err := t.newHost(string(rune('a' + i)))
		if err != nil {
			return err
		}
		h.Link = LinkName
		h.IPv4 = nthAddr(IPv4Prefix, i+1)
		if t.cfg.IPv6 {
			h.IPv6 = nthAddr(IPv6Prefix, i+1)
		}
		t.Hosts = append(t.Hosts, h)
		if err := step("host " + h.Role); err != nil {
			return err
		}
	}
	if t.cfg.Hosts == 2 {
		a, b := t.Hosts[0], t.Hosts[1]
		if err := t.addVeth(a, LinkName, b, LinkName); err != nil {
			return err
		}
		if err := step("veth"); err != nil {
			return err
		}
	} else {
		hub, err := t.newHost("hub")
		if err != nil {
			return err
		}
		t.Hub = hub
		if err := t.addBridge(hub); err != nil {
			return err
		}
		for _, h := range t.Hosts {
			port := "p" + h.Role
			if err := t.addVeth(h, LinkName, hub, port); err != nil {
				return err
			}
			if err := t.enslave(hub, port); err != nil {
				return err
			}
		}
		if err := step("bridge"); err != nil {
			return err
		}
	}
	for _, h := range t.Hosts {
		if err := t.configure(h); err != nil {
			return err
		}
	}
	return step("addresses")
}

func nthAddr(p netip.Prefix, n int) netip.Addr {
	a := p.Addr().As16()
	a[15] += byte(n)
	addr := netip.AddrFrom16(a)
	if p.Addr().Is4() {
		return addr.Unmap()
	}
	return addr
}

// newHost creates a named namespace with its loopback up. The namespace is
// recorded for Close before anything can fail after its creation.
func (t *Topology) newHost(role string) (*Host, error) {
	name := t.base + "-" + role
	h := &Host{Name: name, Role: role, ns: netns.None()}
	ns, err := createNamedNetns(name)
	if err != nil {
		return nil, &OpError{Op: "create namespace", Target: name, Err: err}
	}
	t.mu.Lock()
	t.created = append(t.created, name)
	t.mu.Unlock()
	h.ns = ns
	hd, err := netlink.NewHandleAt(ns)
	if err != nil {
		h.close()
		return nil, &OpError{Op: "netlink handle", Target: name, Err: err}
	}
	defer hd.Close()
	lo, err := hd.LinkByName("lo")
	if err == nil {
		err = hd.LinkSetUp(lo)
	}
	if err != nil {
		h.close()
		return nil, &OpError{Op: "bring loopback up", Target: name, Err: err}
	}
	return h, nil
}

// createNamedNetns creates a network namespace bind-mounted at
// NetnsDir/name and returns an open handle to it. The creating thread is
// discarded afterwards, so the caller's thread never changes namespace.
func createNamedNetns(name string) (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread leaves the namespace of the process
		// and must die with this goroutine.
		runtime.LockOSThread()
		if err := os.MkdirAll(NetnsDir, 0o755); err != nil {
			ch <- result{netns.None(), err}
			return
		}
		path := filepath.Join(NetnsDir, name)
		f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
		if err != nil {
			ch <- result{netns.None(), err}
			return
		}
		f.Close()
		fail := func(err error) {
			// Undo our own file (and mount) so that nothing is left.
			ch <- result{netns.None(), errors.Join(err, deleteNamedNetns(name))}
		}
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			fail(fmt.Errorf("unshare(CLONE_NEWNET): %w", err))
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			fail(fmt.Errorf("bind mount %s: %w", path, err))
			return
		}
		ns, err := netns.GetFromPath(path)
		if err != nil {
			fail(err)
			return
		}
		ch <- result{ns, nil}
	}()
	r := <-ch
	return r.ns, r.err
}

// deleteNamedNetns unmounts and removes NetnsDir/name; a missing namespace
// is not an error.
func deleteNamedNetns(name string) error {
	path := filepath.Join(NetnsDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
		return &OpError{Op: "unmount namespace", Target: name, Err: err}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return &OpError{Op: "remove namespace", Target: name, Err: err}
	}
	return nil
}

func (t *Topology) addVeth(a *Host, aName string, b *Host, bName string) error {
	hd, err := netlink.NewHandleAt(a.ns)
	if err != nil {
		return &OpError{Op: "netlink handle", Target: a.Name, Err: err}
	}
	defer hd.Close()
	q := t.cfg.Queues
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name:        aName,
			MTU:         t.cfg.MTU,
			NumTxQueues: q,
			NumRxQueues: q,
		},
		PeerName:        bName,
		PeerNamespace:   netlink.NsFd(int(b.ns)),
		PeerMTU:         uint32(t.cfg.MTU),
		PeerNumTxQueues: uint32(q),
		PeerNumRxQueues: uint32(q),
	}
	target := a.Name + "/" + aName + " <-> " + b.Name + "/" + bName
	if err := hd.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EOPNOTSUPP) {
			err = fmt.Errorf("%w (is the veth driver available?)", err)
		}
		return &OpError{Op: "create veth", Target: target, Err: err}
	}
	if err := setUp(a, aName); err != nil {
		return err
	}
	return setUp(b, bName)
}

func setUp(h *Host, link string) error {
	hd, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return &OpError{Op: "netlink handle", Target: h.Name, Err: err}
	}
	defer hd.Close()
	l, err := hd.LinkByName(link)
	if err == nil {
		err = hd.LinkSetUp(l)
	}
	if err != nil {
		return &OpError{Op: "set link up", Target: h.Name + "/" + link, Err: err}
	}
	return nil
}

func (t *Topology) addBridge(hub *Host) error {
	hd, err := netlink.NewHandleAt(hub.ns)
	if err != nil {
		return &OpError{Op: "netlink handle", Target: hub.Name, Err: err}
	}
	defer hd.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: BridgeName, MTU: t.cfg.MTU}}
	if err := hd.LinkAdd(br); err != nil {
		return &OpError{Op: "create bridge", Target: hub.Name + "/" + BridgeName, Err: err}
	}
	return setUp(hub, BridgeName)
}

func (t *Topology) enslave(hub *Host, port string) error {
	hd, err := netlink.NewHandleAt(hub.ns)
	if err != nil {
		return &OpError{Op: "netlink handle", Target: hub.Name, Err: err}
	}
	defer hd.Close()
	p, err := hd.LinkByName(port)
	if err != nil {
		return &OpError{Op: "find bridge port", Target: hub.Name + "/" + port, Err: err}
	}
	br, err := hd.LinkByName(BridgeName)
	if err != nil {
		return &OpError{Op: "find bridge", Target: hub.Name + "/" + BridgeName, Err: err}
	}
	if err := hd.LinkSetMaster(p, br); err != nil {
		return &OpError{Op: "add bridge port", Target: hub.Name + "/" + port, Err: err}
	}
	return nil
}

func (t *Topology) configure(h *Host) error {
	hd, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return &OpError{Op: "netlink handle", Target: h.Name, Err: err}
	}
	defer hd.Close()
	l, err := hd.LinkByName(h.Link)
	if err != nil {
		return &OpError{Op: "find link", Target: h.Name + "/" + h.Link, Err: err}
	}
	addrs := []netip.Prefix{netip.PrefixFrom(h.IPv4, IPv4Prefix.Bits())}
	if h.IPv6.IsValid() {
		addrs = append(addrs, netip.PrefixFrom(h.IPv6, IPv6Prefix.Bits()))
	}
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := hd.AddrAdd(l, a); err != nil {
			return &OpError{Op: "add address " + p.String(), Target: h.Name + "/" + h.Link, Err: err}
		}
	}
	return nil
}

func (h *Host) close() {
	if h.ns.IsOpen() {
		h.ns.Close()
	}
}

// Prefix returns the name every namespace of t starts with:
// "<prefix>-<pid>-<n>-", n counting the topologies of this process.
func (t *Topology) Prefix() string { return t.base + "-" }

// Namespaces returns the names of the namespaces t created, in creation
// order.
func (t *Topology) Namespaces() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.created...)
}

// Close deletes, by name, every link and namespace t created. It is safe to
// call more than once and on a topology New gave up building.
func (t *Topology) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	all := append([]*Host(nil), t.Hosts...)
	if t.Hub != nil {
		all = append(all, t.Hub)
	}
	// Delete the links first, so that the veths are gone when Close
	// returns rather than when the kernel gets round to dismantling the
	// namespaces. Deleting one end of a veth deletes its peer.
	for _, h := range all {
		if h.ns.IsOpen() {
			if err := deleteLinks(h); err != nil {
				errs = append(errs, err)
			}
		}
		h.close()
	}
	for i := len(t.created) - 1; i >= 0; i-- {
		if err := deleteNamedNetns(t.created[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func deleteLinks(h *Host) error {
	hd, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return &OpError{Op: "netlink handle", Target: h.Name, Err: err}
	}
	defer hd.Close()
	links, err := hd.LinkList()
	if err != nil {
		return &OpError{Op: "list links", Target: h.Name, Err: err}
	}
	var errs []error
	for _, l := range links {
		if l.Type() != "veth" && l.Type() != "bridge" {
			continue
		}
		if err := hd.LinkDel(l); err != nil {
			var lnf netlink.LinkNotFoundError
			if errors.As(err, &lnf) || errors.Is(err, unix.ENODEV) {
				continue // its peer was deleted first
			}
			errs = append(errs, &OpError{Op: "delete link", Target: h.Name + "/" + l.Attrs().Name, Err: err})
		}
	}
	return errors.Join(errs...)
}

// CleanupStale deletes the namespaces in NetnsDir named "<prefix>-<pid>-..."
// whose process pid no longer exists: the leftovers of runs that were
// killed before they could Close. Namespaces of live processes (this one
// included) are left alone. It returns the names it deleted.
func CleanupStale(prefix string) ([]string, error) {
	if !validPrefix(prefix) {
		return nil, fmt.Errorf("%w: prefix %q", ErrConfig, prefix)
	}
	ents, err := os.ReadDir(NetnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, &OpError{Op: "read", Target: NetnsDir, Err: err}
	}
	var deleted []string
	var errs []error
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix+"-")
		if !ok {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		if err := deleteNamespaceAndLinks(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, e.Name())
	}
	return deleted, errors.Join(errs...)
}

func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || err == unix.EPERM
}

func deleteNamespaceAndLinks(name string) error {
	ns, err := netns.GetFromPath(filepath.Join(NetnsDir, name))
	if err == nil {
		h := &Host{Name: name, ns: ns}
		// A leftover may hold no links or half-built ones; failures to
		// delete them are not fatal, the namespace's end takes them.
		_ = deleteLinks(h)
		h.close()
	}
	return deleteNamedNetns(name)
}

// Do runs fn inside h's network namespace and returns its error. fn runs on
// a fresh goroutine locked to an OS thread that is switched into the
// namespace and discarded afterwards; Do waits for it. Sockets fn creates
// belong to h's namespace for good and may be used anywhere afterwards, but
// goroutines fn starts run in the namespace of the process, not in h's. A
// panic in fn is re-raised in the caller; fn must not call t.FailNow
// (Do reports that as an error).
func (h *Host) Do(fn func() error) error {
	var (
		err      error
		panicked any
		returned bool
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if !returned {
				panicked = recover()
			}
		}()
		// Never unlocked: see the doc comment.
		runtime.LockOSThread()
		if e := netns.Set(h.ns); e != nil {
			err, returned = &OpError{Op: "setns", Target: h.Name, Err: e}, true
			return
		}
		err = fn()
		returned = true
	}()
	<-done
	if panicked != nil {
		panic(panicked)
	}
	if !returned {
		return &OpError{Op: "run", Target: h.Name, Err: errors.New("function exited via runtime.Goexit (t.FailNow inside Do?)")}
	}
	return err
}

// Command returns a command that runs name with args inside h's namespace,
// through `ip netns exec` (iproute2's ip must be on PATH).
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// Exec runs name with args inside h's namespace and returns its combined
// output.
func (h *Host) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := h.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return out, &OpError{Op: "exec " + name, Target: h.Name, Err: err}
	}
	return out, nil
}

// Netlink returns a netlink handle operating inside h's namespace; the
// caller closes it.
func (h *Host) Netlink() (*netlink.Handle, error) {
	hd, err := netlink.NewHandleAt(h.ns)
	if err != nil {
		return nil, &OpError{Op: "netlink handle", Target: h.Name, Err: err}
	}
	return hd, nil
}
