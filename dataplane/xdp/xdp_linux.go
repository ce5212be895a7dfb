// Package xdp is the AF_XDP dataplane backend: an XDP program (bpf.LoadXDP)
// steers MXP datagrams arriving on RX queue i into shard i's AF_XDP socket,
// whose frames live in the shard's own UMEM, and the shard sends by writing
// whole Ethernet frames into the same UMEM and its TX ring.
//
// Each shard owns one AF_XDP socket bound to RX queue i of the interface
// that holds Config.Addr, with its UMEM, fill, completion, RX and TX rings;
// nothing is shared between shards. Beside it, each shard has a plain UDP
// socket on the same address and port (SO_REUSEPORT group, steered by the
// SK_REUSEPORT program when there are several shards): it keeps the kernel
// from answering ICMP port unreachable, receives what the XDP program
// passes (datagrams of a shard that arrived on another shard's queue,
// frames too large for a UMEM frame, IPv4 fragments, IPv6 with extension
// headers, and everything in generic mode's UDP GSO super-packets), and
// sends the datagrams whose next hop's MAC address the kernel does not know
// yet (which makes it resolve it). See docs/xdp.md.
package xdp

import (
	"errors"
	"fmt"
	"github.com/mxp-dataplane/mxp/dataplane/internal/udpsock"
	"github.com/mxp-dataplane/mxp/internal/caps"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/bpf"
	"github.com/mxp-dataplane/mxp/dataplane"
)

// Defaults of the Backend's sizes.
const (
	DefaultFrames   = 8192 // UMEM frames per shard (32 MiB)
	DefaultRingSize = 4096 // entries of each of the four rings
	FrameSize       = 4096 // bytes per UMEM frame
	// xdpHeadroom is what the kernel keeps in front of a received frame
	// (XDP_PACKET_HEADROOM); the XDP program passes larger frames.
	xdpHeadroom = 256
	// txBudget is XDP_MAX_TX_SKB_BUDGET: descriptors the kernel sends per
	// sendto in copy mode (its default is 32).
	txBudget = 256
	// txRetry is how long Wait sleeps at most while sent frames are yet to
	// complete or the kernel refused to take more.
	txRetry = 100 * time.Microsecond
	// busyRetries bounds the 10 ms waits for a queue that is still busy.
	busyRetries = 100
	// sockCheckTurns: Recv reads the fallback socket at least every this
	// many calls.
	sockCheckTurns = 16
)

// Backend is the AF_XDP backend. The zero value is ready to use.
type Backend struct {
	// Mode is how to attach the XDP program: XDPModeAuto (native, else
	// generic), XDPModeNative or XDPModeGeneric.
	Mode bpf.XDPMode
	// CopyOnly binds in copy mode even where the driver has zero-copy.
	CopyOnly bool
	// Frames is the number of UMEM frames per shard, RingSize the size of
	// each ring (powers of two; 0 means the defaults). Frames should be at
	// least twice RingSize: the fill ring takes up to RingSize of them.
	Frames, RingSize int

	features Features
	opened   bool
}

// Features reports what the last Open settled for.
type Features struct {
	Interface string
	Ifindex   int
	Queues    int         // RX queues of the interface
	Mode      bpf.XDPMode // how the XDP program runs: native or generic
	ZeroCopy  bool        // AF_XDP sockets bound in zero-copy mode
	// NeedWakeup: the kernel takes XDP_USE_NEED_WAKEUP, so the shard kicks
	// it (sendto, poll) only when a ring's flag asks for it.
	NeedWakeup bool
	// SteeredByBPF: the fallback UDP sockets are steered to shards by the
	// SK_REUSEPORT program (false with one shard, or when it did not load).
	SteeredByBPF bool
	// SteerNote says why the fallback sockets are not steered by BPF when
	// there are several shards, or is empty.
	SteerNote string
	// ReplacedStale is the ID of a stale MXP XDP program that was replaced
	// on the interface (left by a killed process), or 0.
	ReplacedStale uint32
}

// Name returns "xdp".
func (*Backend) Name() string { return "xdp" }

// Variant is the backend's name in bench reports: "xdp-copy" or
// "xdp-zerocopy", after Open ("xdp" before).
func (b *Backend) Variant() string {
	if !b.opened {
		return "xdp"
	}
	if b.features.ZeroCopy {
		return "xdp-zerocopy"
	}
	return "xdp-copy"
}

// AttachMode is how the last Open attached the XDP program: "native" or
// "generic" ("auto" before Open).
func (b *Backend) AttachMode() string { return b.features.Mode.String() }

// Notes says what the last Open settled for: copy or zero-copy, native or
// generic XDP, the interface and its queues.
func (b *Backend) Notes() []string {
	if !b.opened {
		return nil
	}
	f := b.features
	mode := "copy mode (the driver has no zero-copy)"
	if f.ZeroCopy {
		mode = "zero-copy mode"
	}
	notes := []string{
		mode,
		fmt.Sprintf("%s XDP on %s", f.Mode, f.Interface),
	}
	if f.SteerNote != "" {
		notes = append(notes, f.SteerNote)
	}
	if f.ReplacedStale != 0 {
		notes = append(notes, fmt.Sprintf("replaced a stale MXP XDP program (id %d)", f.ReplacedStale))
	}
	return notes
}

// FeaturesOf reports what the kernel offered a ShardConn opened by this backend.
func FeaturesOf(c dataplane.ShardConn) (Features, bool) {
	sc, ok := c.(*shardConn)
	if !ok {
		return Features{}, false
	}
	return sc.g.features, true
}

// Accounting returns who owns a shard's UMEM frames. Call it while the
// shard is idle (before Engine.Start or after Engine.Stop, before Close).
func Accounting(c dataplane.ShardConn) (FrameAccount, bool) {
	sc, ok := c.(*shardConn)
	if !ok {
		return FrameAccount{}, false
	}
	a := sc.fr.account()
	if !sc.fr.check() {
		a.Violations++ // the counters disagree with the per-frame owners
	}
	return a, true
}

// Extra are the backend's own counters of one shard.
type Extra struct {
	// SocketRx and SocketTx are datagrams received from and sent through
	// the shard's UDP socket rather than its AF_XDP socket.
	SocketRx, SocketTx uint64
	// NeighbourMisses are datagrams sent through the UDP socket because
	// the next hop's MAC was unknown (each also counts in SocketTx).
	NeighbourMisses uint64
	// Kernel is the AF_XDP socket's XDP_STATISTICS.
	Kernel unix.XDPStatistics
	// Program is the XDP program's counters (all shards).
	Program bpf.XDPCounters
}

// ExtraOf returns the backend's own counters of a shard.
func ExtraOf(c dataplane.ShardConn) (Extra, error) {
	sc, ok := c.(*shardConn)
	if !ok {
		return Extra{}, errors.New("xdp: not a shard of the xdp backend")
	}
	e := Extra{SocketRx: sc.socketRx.Load(), SocketTx: sc.socketTx.Load(), NeighbourMisses: sc.neighMiss.Load()}
	var err error
	if e.Kernel, err = xdpStatistics(sc.statsFD); err != nil {
		return e, os.NewSyscallError("getsockopt XDP_STATISTICS", err)
	}
	if e.Program, err = sc.g.prog.Counters(); err != nil {
		return e, err
	}
	return e, nil
}

func unavailable(feature, format string, args ...any) error {
	return &dataplane.UnavailableError{Backend: "xdp", Feature: feature, Reason: fmt.Sprintf(format, args...)}
}

// Probe checks that this process and kernel can run the backend: CAP_NET_ADMIN
// and CAP_NET_RAW, CAP_BPF (or CAP_SYS_ADMIN), AF_XDP sockets, XDP programs
// and XSKMAP maps; and, when cfg.Addr is set, that a non-loopback
// interface of this network namespace holds it, with at least cfg.Shards RX
// queues and no other program's XDP attached.
func Probe(cfg dataplane.Config) (dataplane.Backend, error) {
	eff, err := caps.Effective()
	if err != nil {
		return nil, unavailable("capabilities", "cannot read them: %v", err)
	}
	for _, c := range []struct {
		bit  uint
		name string
	}{{caps.NetAdmin, "CAP_NET_ADMIN"}, {caps.NetRaw, "CAP_NET_RAW"}} {
		if eff&(1<<c.bit) == 0 {
			return nil, unavailable(c.name, "run as root or grant %s (uid %d has not got it)", c.name, os.Geteuid())
		}
	}
	if eff&(1<<caps.BPF) == 0 && eff&(1<<caps.SysAdmin) == 0 {
		return nil, unavailable("CAP_BPF", "run as root or grant CAP_BPF (CAP_SYS_ADMIN before Linux 5.8)")
	}
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EAFNOSUPPORT) {
			return nil, unavailable("AF_XDP", "the kernel has no AF_XDP sockets (Linux 4.18+ with CONFIG_XDP_SOCKETS): %v", err)
		}
		return nil, unavailable("AF_XDP", "socket(AF_XDP): %v", err)
	}
	unix.Close(fd)
	if err := bpf.CheckXDP(); err != nil {
		feature := "XDP"
		if errors.Is(err, bpf.ErrPermission) {
			feature = "CAP_BPF"
		}
		return nil, unavailable(feature, "%v", err)
	}
	if cfg.Addr.IsValid() {
		nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, unavailable("netlink", "%v", err)
		}
		defer nl.Close()
		l, err := findInterface(nl, cfg.Addr.Addr())
		if err != nil {
			return nil, err
		}
		if q := max(l.Attrs().NumRxQueues, 1); cfg.Shards > q {
			return nil, unavailable("RX queues", "%d shards, but %s has %d RX queues and an AF_XDP socket takes one", cfg.Shards, l.Attrs().Name, q)
		}
		if id, name, err := bpf.InterfaceXDP(l.Attrs().Index); err == nil && id != 0 && name != bpf.XDPProgramName {
			return nil, unavailable("interface", "%s already runs XDP program %q (id %d), which MXP will not replace", l.Attrs().Name, name, id)
		}
	}
	return &Backend{}, nil
}

// findInterface returns the link that holds addr, or for an unspecified
// address the only up, non-loopback link with an address of its family.
func findInterface(nl *netlink.Handle, addr netip.Addr) (netlink.Link, error) {
	addr = addr.Unmap()
	var found netlink.Link
	if addr.IsUnspecified() {
		family := netlink.FAMILY_V4
		if addr.Is6() {
			family = netlink.FAMILY_ALL
		}
		links, err := nl.LinkList()
		if err != nil {
			return nil, fmt.Errorf("xdp: list links: %w", err)
		}
		var names []string
		for _, l := range links {
			a := l.Attrs()
			if a.Flags&net.FlagUp == 0 || a.Flags&net.FlagLoopback != 0 {
				continue
			}
			if as, err := nl.AddrList(l, family); err != nil || len(as) == 0 {
				continue
			}
			found = l
			names = append(names, a.Name)
		}
		switch len(names) {
		case 0:
			return nil, unavailable("interface", "no up, non-loopback interface with an address for %v", addr)
		case 1:
		default:
			return nil, unavailable("interface", "%v is unspecified and interfaces %s all qualify: bind the address of one", addr, strings.Join(names, ", "))
		}
	} else {
		family := netlink.FAMILY_V4
		if addr.Is6() {
			family = netlink.FAMILY_V6
		}
		as, err := nl.AddrList(nil, family)
		if err != nil {
			return nil, fmt.Errorf("xdp: list addresses: %w", err)
		}
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == addr {
				if found, err = nl.LinkByIndex(a.LinkIndex); err != nil {
					return nil, fmt.Errorf("xdp: link %d: %w", a.LinkIndex, err)
				}
				break
			}
		}
		if found == nil {
			return nil, unavailable("interface", "no interface of this network namespace holds %v", addr)
		}
	}
	if found.Attrs().Flags&net.FlagLoopback != 0 {
		return nil, unavailable("interface", "%v is on the loopback interface %s: no native XDP there, and its traffic never crosses a NIC; use the uring or portable backend", addr, found.Attrs().Name)
	}
	return found, nil
}

// group is what the shards of one Open share: the XDP program, its
// attachment and the fallback sockets' steering program. The last shard to
// close releases it.
type group struct {
	prog     *bpf.XDP
	att      *bpf.XDPAttachment
	steer    *bpf.Reuseport
	features Features
	refs     atomic.Int32
}

func (g *group) release() error {
	if g.refs.Add(-1) != 0 {
		return nil
	}
	var errs []error
	if g.att != nil {
		errs = append(errs, g.att.Detach())
	}
	if g.prog != nil {
		errs = append(errs, g.prog.Close())
	}
	if g.steer != nil {
		errs = append(errs, g.steer.Close())
	}
	return errors.Join(errs...)
}

// steerSockets attaches the SK_REUSEPORT program to the fallback sockets.
func (g *group) steerSockets(shards []*shardConn) error {
	r, err := bpf.LoadReuseport(len(shards))
	if err != nil {
		return err
	}
	for i, c := range shards {
		if err := r.SetShard(i, c.udp); err != nil {
			r.Close()
			return err
		}
	}
	if err := r.AttachTo(shards[0].udp); err != nil {
		r.Close()
		return err
	}
	g.steer = r
	g.features.SteeredByBPF = true
	return nil
}

// Open finds the interface that holds cfg.Addr, opens cfg.Shards fallback
// UDP sockets on that address and port, loads the XDP program for that
// port, binds one AF_XDP socket per shard to RX queues 0..Shards-1, and
// attaches the program. It must run in the network namespace of the
// interface (the sockets keep working from any thread afterwards).
func (b *Backend) Open(cfg dataplane.Config) (conns []dataplane.ShardConn, err error) {
	cfg = cfg.WithDefaults()
	if !cfg.Addr.IsValid() {
		return nil, fmt.Errorf("xdp: invalid bind address %v", cfg.Addr)
	}
	if cfg.Shards > bpf.MaxShards {
		return nil, fmt.Errorf("xdp: %d shards: at most %d", cfg.Shards, bpf.MaxShards)
	}
	nframes, ringSize := b.Frames, b.RingSize
	if nframes == 0 {
		nframes = DefaultFrames
	}
	if ringSize == 0 {
		ringSize = DefaultRingSize
	}
	if nframes&(nframes-1) != 0 || ringSize&(ringSize-1) != 0 || ringSize < 64 || nframes < 2*ringSize {
		return nil, fmt.Errorf("xdp: %d frames and rings of %d: want powers of two, rings of at least 64, frames at least twice the ring size", nframes, ringSize)
	}
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("xdp: netlink: %w", err)
	}
	defer nl.Close()
	lnk, err := findInterface(nl, cfg.Addr.Addr())
	if err != nil {
		return nil, err
	}
	la := lnk.Attrs()
	queues := max(la.NumRxQueues, 1)
	if cfg.Shards > queues {
		return nil, fmt.Errorf("xdp: %d shards, but %s has %d RX queues and an AF_XDP socket takes one: use at most %d shards, or give the interface more queues (ethtool -L)", cfg.Shards, la.Name, queues, queues)
	}
	g := &group{features: Features{Interface: la.Name, Ifindex: la.Index, Queues: queues}}
	var shards []*shardConn
	defer func() {
		if err != nil {
			for _, c := range shards {
				c.Close() // the last one releases the group
			}
		}
	}()
	// The fallback sockets first: they pick the port when cfg.Addr has 0.
	addr := cfg.Addr
	for i := range cfg.Shards {
		c, err := newShard(cfg, i, addr, g)
		if err != nil {
			return nil, fmt.Errorf("xdp: shard %d: %w", i, err)
		}
		shards = append(shards, c)
		addr = c.local
	}
	if cfg.Shards > 1 {
		if err := g.steerSockets(shards); err != nil {
			g.features.SteerNote = "fallback sockets steered by the kernel's 4-tuple hash: " + err.Error()
		}
	}
	if g.prog, err = bpf.LoadXDP(bpf.XDPOptions{Ports: []uint16{addr.Port()}, Shards: cfg.Shards, MaxFrame: FrameSize - xdpHeadroom}); err != nil {
		return nil, fmt.Errorf("xdp: %w", err)
	}
	hwaddr := la.HardwareAddr
	if len(hwaddr) != 6 {
		return nil, unavailable("interface", "%s has no Ethernet address (%v): AF_XDP TX here builds Ethernet frames", la.Name, hwaddr)
	}
	src4, src6 := interfaceAddrs(nl, lnk, cfg.Addr.Addr())
	for i, c := range shards {
		copy(c.srcMAC[:], hwaddr)
		c.src4, c.src6 = src4, src6
		if err := c.openXSK(la.Index, i, nframes, ringSize, la.MTU, !b.CopyOnly); err != nil {
			return nil, fmt.Errorf("xdp: shard %d: %w", i, err)
		}
		if c.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return nil, fmt.Errorf("xdp: shard %d: netlink: %w", i, err)
		}
		c.neigh = newNeighbours(c.nl, la.Index)
		if err := g.prog.SetSocket(i, c.fd); err != nil {
			return nil, fmt.Errorf("xdp: shard %d: %w", i, err)
		}
	}
	g.features.ZeroCopy, g.features.NeedWakeup = shards[0].zeroCopy, shards[0].needWakeup
	if g.att, err = g.prog.Attach(la.Index, b.Mode); err != nil {
		if errors.Is(err, bpf.ErrPermission) {
			return nil, unavailable("CAP_NET_ADMIN", "%v", err)
		}
		return nil, fmt.Errorf("xdp: %w", err)
	}
	g.features.Mode = g.att.Mode()
	g.features.ReplacedStale = uint32(g.att.Replaced())
	b.features, b.opened = g.features, true
	conns = make([]dataplane.ShardConn, len(shards))
	for i, c := range shards {
		conns[i] = c
	}
	return conns, nil
}

// interfaceAddrs returns the source address for each family: the bound
// one, else the interface's first IPv4 address and (for an IPv6 socket) its
// first IPv6 address that is not link-local.
func interfaceAddrs(nl *netlink.Handle, l netlink.Link, bound netip.Addr) (v4, v6 netip.Addr) {
	bound = bound.Unmap()
	if !bound.IsUnspecified() {
		if bound.Is4() {
			return bound, netip.Addr{}
		}
		return netip.Addr{}, bound
	}
	as, _ := nl.AddrList(l, netlink.FAMILY_ALL)
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() && !v4.IsValid() {
			v4 = ip
		}
		if ip.Is6() && !v6.IsValid() && !ip.IsLinkLocalUnicast() && bound.Is6() {
			v6 = ip
		}
	}
	return v4, v6
}

// shardConn is one shard's AF_XDP socket with its UMEM and rings, and its
// fallback UDP socket. Only the shard's goroutine touches it, except Wake,
// Stats and ExtraOf.
type shardConn struct {
	idx                  int
	fd, udp, wakeFD      int
	local                netip.AddrPort
	v6                   bool // the UDP socket is AF_INET6
	anyAddr              bool // bound to the unspecified address: any destination IP is ours
	maxDgram             int
	umem                 []byte
	base                 uintptr
	fill, comp, rx, tx   *ring
	fr                   *frames
	zeroCopy, needWakeup bool
	txRoom, txCap        int   // payload offset and capacity in a TX frame
	txOut                []int // frames handed out by the last TxBuffers
	maxTxInFlight        int
	// txStarved: the last TxBuffers ran short while frames were in flight,
	// so Wait must come back soon to reap completions (which wake no poll).
	txStarved bool

	srcMAC     [6]byte
	src4, src6 netip.Addr
	nl         *netlink.Handle
	neigh      *neighbours

	sockBuf   []byte // fallback receive slots, allocated on first use
	sockSlot  int
	sockReady bool // the fallback socket may have datagrams
	turns     uint32
	batch     int

	g      *group
	closed atomic.Bool
	stats  dataplane.Counters

	socketRx, socketTx, neighMiss atomic.Uint64
	kernelRxDrops                 atomic.Uint64 // the last XDP_STATISTICS read
	statsFD                       int           // c.fd, set once before the shard runs
}

// Stats returns the shard's counters; RxDropped includes what the kernel
// dropped on the way into the AF_XDP socket (its RX ring full, or no fill
// frame), from XDP_STATISTICS.
func (c *shardConn) Stats() dataplane.Stats {
	if !c.closed.Load() {
		if k, err := xdpStatistics(c.statsFD); err == nil {
			c.kernelRxDrops.Store(k.Rx_dropped + k.Rx_ring_full)
		}
	}
	st := c.stats.Snapshot()
	st.RxDropped += c.kernelRxDrops.Load()
	return st
}

func (c *shardConn) LocalAddr() netip.AddrPort { return c.local }

// newShard opens the shard's fallback UDP socket and eventfd.
func newShard(cfg dataplane.Config, idx int, addr netip.AddrPort, g *group) (c *shardConn, err error) {
	c = &shardConn{idx: idx, fd: -1, udp: -1, wakeFD: -1, statsFD: -1, maxDgram: cfg.MaxDatagram, batch: cfg.Batch, g: g}
	g.refs.Add(1)
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	// The fallback socket: plain UDP (no GSO or GRO: it carries what the
	// XDP program passes, a datagram at a time), dual-stack on [::].
	sock, err := udpsock.Open(netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port()), udpsock.Options{Nonblock: true, Buffer: cfg.SocketBuffer, DisableGSO: true, DisableGRO: true, Shared: true})
	if err != nil {
		return nil, err
	}
	c.udp, c.v6, c.local = sock.FD, sock.V6, sock.Local
	c.anyAddr = c.local.Addr().IsUnspecified()
	if c.wakeFD, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	return c, nil
}

// openXSK creates the shard's UMEM, AF_XDP socket and rings and binds it to
// queue, in zero-copy mode if tryZC and the driver can, else in copy mode.
func (c *shardConn) openXSK(ifindex, queue, nframes, ringSize, mtu int, tryZC bool) error {
	var umem []byte
	umem, err := unix.Mmap(-1, 0, nframes*FrameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return os.NewSyscallError("mmap UMEM", err)
	}
	c.umem, c.base = umem, umemBase(umem)
	c.fr = newFrames(nframes, FrameSize)
	binds := []uint16{unix.XDP_COPY | unix.XDP_USE_NEED_WAKEUP, unix.XDP_COPY}
	if tryZC {
		binds = append([]uint16{unix.XDP_ZEROCOPY | unix.XDP_USE_NEED_WAKEUP}, binds...)
	}
	var errs []error
	for _, flags := range binds {
		err := c.bindXSK(ifindex, queue, ringSize, flags)
		// A socket closed a moment ago (by a process that just exited)
		// leaves the queue busy until the kernel's deferred cleanup runs:
		// wait for it a little.
		for try := 0; errors.Is(err, unix.EBUSY) && try < busyRetries; try++ {
			c.closeXSK()
			time.Sleep(10 * time.Millisecond)
			err = c.bindXSK(ifindex, queue, ringSize, flags)
		}
		if err == nil {
			c.zeroCopy = flags&unix.XDP_ZEROCOPY != 0
			c.needWakeup = flags&unix.XDP_USE_NEED_WAKEUP != 0
			break
		}
		c.closeXSK()
		errs = append(errs, err)
		if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ENOMEM) {
			break // no other mode would do better
		}
	}
	c.statsFD = c.fd
	if c.fd < 0 {
		err := errors.Join(errs...)
		switch {
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("queue %d still has an AF_XDP socket after %v (another process?): %w", queue, busyRetries*10*time.Millisecond, err)
		case errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.ENOMEM):
			return fmt.Errorf("UMEM of %d bytes exceeds RLIMIT_MEMLOCK (raise it, or run with CAP_IPC_LOCK): %w", len(umem), err)
		}
		return err
	}
	// A few TX frames fewer than the ring, so the TX ring never fills.
	c.maxTxInFlight = min(ringSize, nframes-ringSize) - 64
	c.txRoom = hdrRoom4
	if c.v6 {
		c.txRoom = hdrRoom6
	}
	// The largest payload that fits the interface's MTU (for IPv6 when the
	// socket may send IPv6), the frame and MaxDatagram.
	c.txCap = min(FrameSize-c.txRoom, c.maxDgram, max(mtu, 68)-(c.txRoom-ethLen))
	c.refill()
	return nil
}

func (c *shardConn) bindXSK(ifindex, queue, ringSize int, flags uint16) (err error) {
	if c.fd, err = unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
		return os.NewSyscallError("socket(AF_XDP)", err)
	}
	reg := unix.XDPUmemReg{Addr: uint64(c.base), Len: uint64(len(c.umem)), Size: FrameSize}
	if err := setUmemReg(c.fd, &reg); err != nil {
		return os.NewSyscallError("setsockopt XDP_UMEM_REG", err)
	}
	for _, opt := range []int{unix.XDP_UMEM_FILL_RING, unix.XDP_UMEM_COMPLETION_RING, unix.XDP_RX_RING, unix.XDP_TX_RING} {
		if err := unix.SetsockoptInt(c.fd, unix.SOL_XDP, opt, ringSize); err != nil {
			return os.NewSyscallError("setsockopt XDP ring size", err)
		}
	}
	off, hasFlags, err := mmapOffsets(c.fd)
	if err != nil {
		return os.NewSyscallError("getsockopt XDP_MMAP_OFFSETS", err)
	}
	n := uint32(ringSize)
	if c.fill, err = mapRing(c.fd, off.Fr, hasFlags, unix.XDP_UMEM_PGOFF_FILL_RING, n, 8); err != nil {
		return err
	}
	if c.comp, err = mapRing(c.fd, off.Cr, hasFlags, unix.XDP_UMEM_PGOFF_COMPLETION_RING, n, 8); err != nil {
		return err
	}
	if c.rx, err = mapRing(c.fd, off.Rx, hasFlags, unix.XDP_PGOFF_RX_RING, n, 16); err != nil {
		return err
	}
	if c.tx, err = mapRing(c.fd, off.Tx, hasFlags, unix.XDP_PGOFF_TX_RING, n, 16); err != nil {
		return err
	}
	if !hasFlags {
		flags &^= unix.XDP_USE_NEED_WAKEUP
	}
	sa := &unix.SockaddrXDP{Flags: flags, Ifindex: uint32(ifindex), QueueID: uint32(queue)}
	if err := unix.Bind(c.fd, sa); err != nil {
		return fmt.Errorf("bind AF_XDP socket to queue %d with flags %#x: %w", queue, flags, err)
	}
	// Kernels before 6.13 lack the option and send 32 per call.
	unix.SetsockoptInt(c.fd, unix.SOL_XDP, unix.XDP_MAX_TX_SKB_BUDGET, txBudget)
	return nil
}

// closeXSK undoes bindXSK (not the UMEM), so that another mode may be tried.
func (c *shardConn) closeXSK() error {
	var errs []error
	for _, r := range []**ring{&c.fill, &c.comp, &c.rx, &c.tx} {
		if *r != nil {
			errs = append(errs, (*r).unmap())
			*r = nil
		}
	}
	if c.fd >= 0 {
		errs = append(errs, unix.Close(c.fd))
		c.fd = -1
	}
	return errors.Join(errs...)
}

// refill gives free frames to the kernel for receiving.
func (c *shardConn) refill() {
	want := uint32(len(c.fr.free))
	if want == 0 {
		return
	}
	n := min(c.fill.free(want), want)
	idx := c.fill.cachedProd
	for k := range n {
		i := c.fr.take(ownKernelRx)
		c.fill.setAddr(idx+k, c.fr.base(i))
	}
	if n > 0 {
		c.fill.submit(n)
	}
}

// Recv takes received frames from the RX ring (Buf is a view of the UMEM
// frame at the UDP payload), then tops up from the fallback socket.
func (c *shardConn) Recv(pkts []dataplane.Packet) (int, error) {
	if c.tx.cachedProd != c.tx.cachedCons && c.tx.pending() > 0 {
		c.kick() // frames the last Send left on the TX ring
	}
	n, bytes, dropped := 0, 0, 0
	if avail := c.rx.available(); avail > 0 {
		take := min(avail, uint32(len(pkts)))
		idx := c.rx.cachedCons
		for k := range take {
			d := c.rx.desc(idx + k)
			i := c.fr.index(d.Addr)
			if !c.fr.move(i, ownKernelRx, ownHandler) {
				dropped++ // a bogus address: counted as a violation too
				continue
			}
			end := d.Addr + uint64(d.Len)
			if end > c.fr.base(i)+FrameSize {
				c.fr.put(i, ownHandler)
				dropped++
				continue
			}
			frame := c.umem[d.Addr:end:end]
			info, ok := parseFrame(frame)
			if !ok || info.dst.Port() != c.local.Port() || !c.anyAddr && info.dst.Addr() != c.local.Addr() {
				c.fr.put(i, ownHandler)
				dropped++
				continue
			}
			p := frame[info.payloadOff : info.payloadOff+info.payloadLen : info.payloadOff+info.payloadLen]
			pkts[n] = dataplane.Packet{Buf: p, Addr: info.src}
			n++
			bytes += len(p)
		}
		c.rx.release(take)
		c.stats.RxCalls.Add(1)
	}
	// The fallback socket is read when Wait saw it readable, and every
	// sockCheckTurns turns in case a busy ring keeps Wait from running: a
	// recvfrom that finds nothing costs as much as a small batch.
	c.turns++
	if room := len(pkts) - n; room > 0 && (c.sockReady || c.turns%sockCheckTurns == 0) {
		m, b := c.recvSocket(pkts[n:])
		n += m
		bytes += b
		c.sockReady = m == room // a full batch: maybe more
	}
	if c.needWakeup && c.fill.needWakeup() {
		unix.Recvfrom(c.fd, nil, unix.MSG_DONTWAIT) // wake the driver to use the fill ring
	}
	c.stats.AddRx(n, bytes, 0, dropped)
	if dropped > 0 {
		c.refill()
	}
	return n, nil
}

// recvSocket reads what the kernel stack delivered to the fallback socket.
func (c *shardConn) recvSocket(pkts []dataplane.Packet) (n, bytes int) {
	if c.sockBuf == nil {
		c.sockSlot = min(c.maxDgram, 65535) + 1 // one more byte shows truncation
		c.sockBuf = make([]byte, c.batch*c.sockSlot)
	}
	dropped := 0
	for n < len(pkts) && (n+1)*c.sockSlot <= len(c.sockBuf) {
		buf := c.sockBuf[n*c.sockSlot : (n+1)*c.sockSlot]
		m, from, err := unix.Recvfrom(c.udp, buf, unix.MSG_DONTWAIT)
		if err != nil {
			break // EAGAIN: nothing more; anything else shows up again in Wait
		}
		if m >= c.sockSlot {
			dropped++
			continue
		}
		pkts[n] = dataplane.Packet{Buf: buf[:m:m], Addr: udpsock.AddrPortOf(from)}
		n++
		bytes += m
	}
	if n > 0 {
		c.stats.RxCalls.Add(1)
		c.socketRx.Add(uint64(n))
	}
	if dropped > 0 {
		c.stats.RxDropped.Add(uint64(dropped))
	}
	return n, bytes
}

// frameOf returns the UMEM frame b is a view of, or -1.
func (c *shardConn) frameOf(b []byte) int {
	a := bufAddr(b)
	if a < c.base || a >= c.base+uintptr(len(c.umem)) {
		return -1
	}
	return c.fr.index(uint64(a - c.base))
}

// Release returns received frames to the fill ring (buffers from the
// fallback socket need nothing).
func (c *shardConn) Release(pkts []dataplane.Packet) {
	for _, p := range pkts {
		if i := c.frameOf(p.Buf); i >= 0 {
			c.fr.put(i, ownHandler)
		}
	}
	c.refill()
}

// reap takes sent frames back from the completion ring.
func (c *shardConn) reap() {
	n := c.comp.available()
	if n == 0 {
		return
	}
	idx := c.comp.cachedCons
	for k := range n {
		c.fr.put(c.fr.index(c.comp.addr(idx+k)), ownKernelTx)
	}
	c.comp.release(n)
}

// TxBuffers hands out free UMEM frames, each Buf starting after room for
// the Ethernet, IP and UDP headers Send writes in front of it.
func (c *shardConn) TxBuffers(pkts []dataplane.Packet) int {
	c.reap()
	for _, i := range c.txOut { // a TxBuffers without its Send
		c.fr.put(i, ownTxBuf)
	}
	c.txOut = c.txOut[:0]
	k := 0
	defer func() { c.txStarved = k < len(pkts) && c.fr.count[ownKernelTx] > 0 }()
	for k < len(pkts) && c.fr.count[ownKernelTx]+k < c.maxTxInFlight {
		i := c.fr.take(ownTxBuf)
		if i < 0 {
			break
		}
		start := int(c.fr.base(i)) + c.txRoom
		pkts[k].Buf = c.umem[start : start : start+c.txCap]
		c.txOut = append(c.txOut, i)
		k++
	}
	return k
}

// Send puts the filled frames on the TX ring with their headers, and kicks
// the kernel. A datagram whose next hop's MAC is not known yet goes through
// the fallback UDP socket instead (which makes the kernel resolve it).
func (c *shardConn) Send(pkts []dataplane.Packet) (int, error) {
	var now time.Time
	sent, bytes, dropped := 0, 0, 0
	idx := c.tx.cachedProd
	var produced uint32
	for _, p := range pkts {
		dst := netip.AddrPortFrom(p.Addr.Addr().Unmap(), p.Addr.Port())
		i := c.frameOf(p.Buf)
		if i < 0 {
			// Not a UMEM frame: the handler outgrew the buffer's capacity
			// (a datagram larger than the MTU allows) and append moved it.
			// The kernel can send it (fragmenting it if need be).
			if dst.IsValid() && c.sendSocket(p.Buf, dst) {
				sent++
				bytes += len(p.Buf)
			} else {
				dropped++
			}
			continue
		}
		if c.fr.owner[i] != ownTxBuf {
			dropped++ // a frame, but not one the last TxBuffers handed out
			continue
		}
		src := c.src4
		if dst.Addr().Is6() {
			src = c.src6
		}
		off := int(uint64(bufAddr(p.Buf)-c.base) - c.fr.base(i))
		hl := headerLen(dst.Addr())
		if !dst.IsValid() || !src.IsValid() || off < hl {
			dropped++
			continue
		}
		if now.IsZero() {
			now = time.Now()
		}
		e := c.neigh.lookup(dst.Addr(), now)
		if !e.ok {
			c.neighMiss.Add(1)
			if c.sendSocket(p.Buf, dst) {
				sent++
				bytes += len(p.Buf)
			} else {
				dropped++
			}
			continue // the frame returns to the free list below
		}
		h := txHeader{srcMAC: c.srcMAC, dstMAC: e.mac, src: netip.AddrPortFrom(src, c.local.Port()), dst: dst}
		fb := int(c.fr.base(i))
		start := buildHeaders(c.umem[fb:fb+FrameSize], off, len(p.Buf), &h)
		c.tx.setDesc(idx+produced, uint64(fb+start), uint32(hl+len(p.Buf)))
		produced++
		c.fr.move(i, ownTxBuf, ownKernelTx)
		sent++
		bytes += len(p.Buf)
	}
	for _, i := range c.txOut {
		if c.fr.owner[i] == ownTxBuf {
			c.fr.put(i, ownTxBuf)
		}
	}
	c.txOut = c.txOut[:0]
	if produced > 0 {
		c.tx.submit(produced)
		// In copy mode each sendto sends up to txBudget frames: let a few
		// batches gather (the engine sends up to four per turn); the next
		// Recv or Wait kicks what is left, so nothing waits longer than
		// the rest of this loop turn.
		if c.zeroCopy || c.tx.pending() >= txBudget {
			c.kick()
		}
	}
	c.stats.AddTx(sent, bytes, 0, dropped)
	return sent, nil
}

// kick makes the kernel send what is on the TX ring: in copy mode it
// sends only from sendto (up to txBudget descriptors per call, EAGAIN when
// more remain); in zero-copy mode the driver needs it only when the ring's
// need_wakeup flag is up.
func (c *shardConn) kick() {
	for range 16 {
		if c.zeroCopy && c.needWakeup && !c.tx.needWakeup() {
			return
		}
		err := unix.Sendto(c.fd, nil, unix.MSG_DONTWAIT, nil)
		c.stats.TxCalls.Add(1)
		if err != nil && err != unix.EAGAIN && err != unix.EBUSY && err != unix.ENOBUFS {
			return // ENETDOWN, ENXIO...: the frames wait on the ring for the next kick
		}
		if c.tx.pending() == 0 {
			return
		}
		if err == nil && c.zeroCopy {
			return
		}
	}
}

// sendSocket sends one datagram through the fallback UDP socket.
func (c *shardConn) sendSocket(b []byte, dst netip.AddrPort) bool {
	if err := unix.Sendto(c.udp, b, unix.MSG_DONTWAIT, udpsock.Sockaddr(dst, c.v6)); err != nil {
		return false
	}
	c.socketTx.Add(1)
	return true
}

// Wait blocks in ppoll until the AF_XDP or the fallback socket is readable,
// Wake is called, or the deadline passes. Frames left on the TX ring are
// kicked first (poll on the AF_XDP socket kicks them too).
func (c *shardConn) Wait(deadline, now time.Time) error {
	if !deadline.IsZero() {
		if now.IsZero() {
			now = time.Now()
		}
		if !now.Before(deadline) {
			return nil
		}
	}
	// Frames still on the TX ring (the kernel said EAGAIN: the device's
	// queue is full) or awaited on the completion ring wake no poll: come
	// back soon to kick and reap again.
	var limit time.Duration
	if c.tx.pending() > 0 || c.txStarved {
		c.kick()
		limit = txRetry
	}
	fds := [3]unix.PollFd{
		{Fd: int32(c.fd), Events: unix.POLLIN},
		{Fd: int32(c.udp), Events: unix.POLLIN},
		{Fd: int32(c.wakeFD), Events: unix.POLLIN},
	}
	c.stats.Wakeups.Add(1)
	if err := udpsock.Ppoll(fds[:], deadline, limit); err != nil {
		return err
	}
	if fds[1].Revents != 0 {
		c.sockReady = true
	}
	if fds[2].Revents != 0 {
		udpsock.Drain(c.wakeFD)
	}
	return nil
}

// Wake makes the shard's Wait return.
func (c *shardConn) Wake() {
	if c.closed.Load() {
		return
	}
	udpsock.Signal(c.wakeFD)
}

// Close closes the sockets and unmaps the rings and the UMEM; the last
// shard of an Open detaches the XDP program.
func (c *shardConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	if c.statsFD >= 0 {
		if k, err := xdpStatistics(c.statsFD); err == nil { // the last word, for Stats after Close
			c.kernelRxDrops.Store(k.Rx_dropped + k.Rx_ring_full)
		}
	}
	errs := []error{c.closeXSK()}
	if c.umem != nil {
		errs = append(errs, unix.Munmap(c.umem))
		c.umem = nil
	}
	for _, fd := range []int{c.udp, c.wakeFD} {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
		}
	}
	if c.nl != nil {
		c.nl.Close()
	}
	errs = append(errs, c.g.release())
	return errors.Join(errs...)
}
