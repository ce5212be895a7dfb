//go:build linux

package bpf

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/mxp-dataplane/mxp/internal/caps"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// XDPProgramName is the kernel's name of the XDP steering program (the C
// function in xdp_steer.c): how Attach recognises a stale copy of its own.
const XDPProgramName = "mxp_xdp_steer"

// DefaultXDPMaxFrame is the largest frame, Ethernet header included, the
// program redirects when XDPOptions.MaxFrame is 0: what a 4096-byte AF_XDP
// chunk holds after the kernel's 256-byte XDP headroom.
const DefaultXDPMaxFrame = 4096 - 256

// MaxXDPPorts is the largest number of ports the program matches.
const MaxXDPPorts = 64

// Counter indexes of the XDP program's per-CPU counters (enum counter in
// xdp_steer.c).
const (
	xdpCounterMatched = iota
	xdpCounterRedirected
	xdpCounterPassed
	xdpCounterMalformed
	xdpCounterPassQueue
	xdpCounterPassNoSocket
	xdpCounterPassShort
	xdpCounterPassBig
	xdpCounterHandshake
	numXDPCounters
)

// XDPCounters are the XDP program's counters, summed over all CPUs, since it
// was loaded. Every packet counts once in Redirected or Passed.
type XDPCounters struct {
	Matched    uint64 // UDP datagrams to one of the configured ports
	Redirected uint64 // sent to a shard's AF_XDP socket
	Passed     uint64 // left to the kernel stack, for whatever reason
	Malformed  uint64 // passed: truncated or invalid headers
	// Passed datagrams to our ports, by reason:
	PassOtherQueue uint64 // arrived on an RX queue other than their shard's
	PassNoSocket   uint64 // their shard's XSKMAP slot is empty
	PassShort      uint64 // payload too short for a connection ID
	PassTooBig     uint64 // frame larger than XDPOptions.MaxFrame
	// Handshakes are handshake packets redirected to the shard of the
	// queue they arrived on (also counted in Redirected).
	Handshakes uint64
}

// More sentinel errors of the XDP program (see also ErrPermission and
// ErrMemlock).
var (
	// ErrXDPNotSupported: the kernel lacks XDP programs or XSKMAP maps
	// (Linux 4.18+ with CONFIG_XDP_SOCKETS).
	ErrXDPNotSupported = errors.New("bpf: kernel lacks XDP programs or XSKMAP maps (needs Linux 4.18+ with CONFIG_XDP_SOCKETS)")
	// ErrBusy: the interface already runs an XDP program that Attach must
	// not replace: someone else's, or MXP's held by a live BPF link.
	ErrBusy = errors.New("bpf: interface already has an XDP program")
)

// XDPMode is how an XDP program is attached to an interface.
type XDPMode uint8

const (
	// XDPModeAuto tries native mode, then generic.
	XDPModeAuto XDPMode = iota
	// XDPModeNative runs the program in the driver (XDP_FLAGS_DRV_MODE).
	XDPModeNative
	// XDPModeGeneric runs it on the kernel's skb path (XDP_FLAGS_SKB_MODE):
	// every driver, slower, and it sees UDP GSO super-packets whole.
	XDPModeGeneric
)

func (m XDPMode) String() string {
	switch m {
	case XDPModeNative:
		return "native"
	case XDPModeGeneric:
		return "generic"
	}
	return "auto"
}

func (m XDPMode) linkFlags() link.XDPAttachFlags {
	if m == XDPModeGeneric {
		return link.XDPGenericMode
	}
	return link.XDPDriverMode
}

func (m XDPMode) netlinkFlags() int {
	if m == XDPModeGeneric {
		return unix.XDP_FLAGS_SKB_MODE
	}
	return unix.XDP_FLAGS_DRV_MODE
}

// XDPOptions configure LoadXDP.
//
// Steering: a datagram to one of Ports whose payload is an MXP packet goes to
// the shard its connection ID names (payload byte 7 modulo Shards) when it
// arrived on that shard's queue; a handshake packet (payload byte 16 has the
// HANDSHAKE bit) goes to the shard of the queue it arrived on; anything else
// passes to the kernel.
type XDPOptions struct {
	// Ports are the UDP destination ports whose datagrams are MXP's (1 to
	// MaxXDPPorts of them).
	Ports []uint16
	// Shards is the number of shards (1 to MaxShards); shard i's AF_XDP
	// socket must be bound to RX queue i.
	Shards int
	// MaxFrame is the largest frame (from the Ethernet header) redirected;
	// larger ones pass to the kernel. 0 means DefaultXDPMaxFrame.
	MaxFrame int
}

// XDP is the loaded XDP steering program with its maps.
type XDP struct {
	objs    xdpsteerObjects
	nShards int
	closed  bool
}

// CheckXDP tells whether this process can load the XDP program and its
// XSKMAP here: nil, or an error wrapping ErrPermission or
// ErrXDPNotSupported.
func CheckXDP() error {
	const op = "check XDP support"
	if !hasNetAdminAndBPF() {
		return &Error{Op: op, Err: ErrPermission}
	}
	if err := features.HaveProgramType(ebpf.XDP); err != nil {
		return &Error{Op: op, Err: fmt.Errorf("%w: %w", ErrXDPNotSupported, err)}
	}
	if err := features.HaveMapType(ebpf.XSKMap); err != nil {
		return &Error{Op: op, Err: fmt.Errorf("%w: %w", ErrXDPNotSupported, err)}
	}
	return nil
}

// hasNetAdminAndBPF: attaching XDP needs CAP_NET_ADMIN, loading needs
// CAP_BPF (or CAP_SYS_ADMIN).
func hasNetAdminAndBPF() bool {
	if _, err := caps.Effective(); err != nil {
		return os.Geteuid() == 0
	}
	return caps.Has(caps.NetAdmin) && (caps.Has(caps.BPF) || caps.Has(caps.SysAdmin))
}

// LoadXDP loads the steering program into the kernel. Nothing is attached
// until Attach.
func LoadXDP(opts XDPOptions) (*XDP, error) {
	const op = "load XDP program"
	if opts.Shards < 1 || opts.Shards > MaxShards {
		return nil, &Error{Op: op, Err: fmt.Errorf("shard count %d out of range 1..%d", opts.Shards, MaxShards)}
	}
	if len(opts.Ports) < 1 || len(opts.Ports) > MaxXDPPorts {
		return nil, &Error{Op: op, Err: fmt.Errorf("%d ports: want 1..%d", len(opts.Ports), MaxXDPPorts)}
	}
	if opts.MaxFrame == 0 {
		opts.MaxFrame = DefaultXDPMaxFrame
	}
	if opts.MaxFrame < 64 || opts.MaxFrame > 65536 {
		return nil, &Error{Op: op, Err: fmt.Errorf("max frame %d out of range 64..65536", opts.MaxFrame)}
	}
	spec, err := loadXdpsteer()
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	if err := spec.Variables[xdpsteerVarNshards].Set(uint32(opts.Shards)); err != nil {
		return nil, &Error{Op: op, Err: fmt.Errorf("set nshards: %w", err)}
	}
	if err := spec.Variables[xdpsteerVarMaxFrame].Set(uint32(opts.MaxFrame)); err != nil {
		return nil, &Error{Op: op, Err: fmt.Errorf("set max_frame: %w", err)}
	}
	spec.Maps[xdpsteerMapXsks].MaxEntries = uint32(opts.Shards)
	x := &XDP{nShards: opts.Shards}
	if err := spec.LoadAndAssign(&x.objs, nil); err != nil {
		return nil, &Error{Op: op, Err: classifyXDPLoadError(err)}
	}
	for _, p := range opts.Ports {
		if err := x.objs.Ports.Update(p, uint8(1), ebpf.UpdateAny); err != nil {
			x.objs.Close()
			return nil, &Error{Op: op, Err: fmt.Errorf("add port %d: %w", p, err)}
		}
	}
	return x, nil
}

func classifyXDPLoadError(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		if !hasNetAdminAndBPF() {
			return fmt.Errorf("%w: %w", ErrPermission, err)
		}
		var lim unix.Rlimit
		if unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil && lim.Cur != unix.RLIM_INFINITY {
			return fmt.Errorf("%w (limit %d bytes): %w", ErrMemlock, lim.Cur, err)
		}
		return fmt.Errorf("%w: %w", ErrPermission, err)
	}
	if errors.Is(err, ebpf.ErrNotSupported) ||
		features.HaveProgramType(ebpf.XDP) != nil ||
		features.HaveMapType(ebpf.XSKMap) != nil {
		return fmt.Errorf("%w: %w", ErrXDPNotSupported, err)
	}
	return err
}

// Program returns the loaded program (owned by x), e.g. for Program.Run.
func (x *XDP) Program() *ebpf.Program { return x.objs.MxpXdpSteer }

// NumShards returns the shard count the program was loaded for.
func (x *XDP) NumShards() int { return x.nShards }

// SetSocket puts the bound AF_XDP socket fd in shard's XSKMAP slot. The map
// holds a reference to the socket: closing fd removes it.
func (x *XDP) SetSocket(shard, fd int) error {
	op := fmt.Sprintf("set XDP socket of shard %d", shard)
	if x.closed {
		return &Error{Op: op, Err: ErrClosed}
	}
	if shard < 0 || shard >= x.nShards {
		return &Error{Op: op, Err: fmt.Errorf("shard out of range 0..%d", x.nShards-1)}
	}
	if err := x.objs.Xsks.Update(uint32(shard), uint32(fd), ebpf.UpdateAny); err != nil {
		return &Error{Op: op, Err: err}
	}
	return nil
}

// ClearSocket empties shard's slot: its datagrams then pass to the kernel.
func (x *XDP) ClearSocket(shard int) error {
	op := fmt.Sprintf("clear XDP socket of shard %d", shard)
	if x.closed {
		return &Error{Op: op, Err: ErrClosed}
	}
	if shard < 0 || shard >= x.nShards {
		return &Error{Op: op, Err: fmt.Errorf("shard out of range 0..%d", x.nShards-1)}
	}
	if err := x.objs.Xsks.Delete(uint32(shard)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return &Error{Op: op, Err: err}
	}
	return nil
}

// Counters returns the program's counters summed over all CPUs.
func (x *XDP) Counters() (XDPCounters, error) {
	if x.closed {
		return XDPCounters{}, &Error{Op: "read XDP counters", Err: ErrClosed}
	}
	var s [numXDPCounters]uint64
	for i := range s {
		var perCPU []uint64
		if err := x.objs.XdpCounters.Lookup(uint32(i), &perCPU); err != nil {
			return XDPCounters{}, &Error{Op: "read XDP counters", Err: err}
		}
		for _, v := range perCPU {
			s[i] += v
		}
	}
	return XDPCounters{
		Matched: s[xdpCounterMatched], Redirected: s[xdpCounterRedirected],
		Passed: s[xdpCounterPassed], Malformed: s[xdpCounterMalformed],
		PassOtherQueue: s[xdpCounterPassQueue], PassNoSocket: s[xdpCounterPassNoSocket],
		PassShort: s[xdpCounterPassShort], PassTooBig: s[xdpCounterPassBig],
		Handshakes: s[xdpCounterHandshake],
	}, nil
}

// Close releases the program and its maps. An attachment made with Attach
// keeps the program running until it is detached; one made with
// AttachLegacy keeps it until it is removed from the interface.
func (x *XDP) Close() error {
	if x.closed {
		return nil
	}
	x.closed = true
	if err := x.objs.Close(); err != nil {
		return &Error{Op: "close XDP program", Err: err}
	}
	return nil
}

// XDPAttachment is the program attached to one interface.
type XDPAttachment struct {
	ifindex  int
	mode     XDPMode
	lnk      link.Link      // nil for a legacy (netlink) attachment
	ns       netns.NsHandle // the namespace of a legacy attachment
	replaced ebpf.ProgramID
	detached bool
}

// Mode returns the mode the program runs in (native or generic).
func (a *XDPAttachment) Mode() XDPMode { return a.mode }

// Ifindex returns the interface's index (in the attaching namespace).
func (a *XDPAttachment) Ifindex() int { return a.ifindex }

// Legacy tells whether the program was attached through netlink rather than
// a BPF link (kernels before 5.9), so that it outlives the process.
func (a *XDPAttachment) Legacy() bool { return a.lnk == nil }

// Replaced returns the ID of the stale MXP program the attachment replaced,
// or 0.
func (a *XDPAttachment) Replaced() ebpf.ProgramID { return a.replaced }

// Attach attaches the program to the interface ifindex of the calling
// thread's network namespace, through a BPF link, so that the kernel detaches
// it when the process dies. XDPModeAuto tries native mode and falls back to
// generic. A stale copy of this program left attached through netlink (by a
// killed process that used AttachLegacy, or an older mxpd) is replaced; any
// other program, or MXP's held by a live BPF link, is ErrBusy. Kernels
// without BPF links for XDP (before 5.9) get AttachLegacy.
func (x *XDP) Attach(ifindex int, mode XDPMode) (*XDPAttachment, error) {
	return x.attach(ifindex, mode, false)
}

// AttachLegacy is Attach through netlink (IFLA_XDP), as `ip link set xdp`
// does: the program stays on the interface when the process dies, until
// Detach or a later Attach replaces it.
func (x *XDP) AttachLegacy(ifindex int, mode XDPMode) (*XDPAttachment, error) {
	return x.attach(ifindex, mode, true)
}

func (x *XDP) attach(ifindex int, mode XDPMode, legacy bool) (*XDPAttachment, error) {
	op := fmt.Sprintf("attach XDP program to interface %d", ifindex)
	if x.closed {
		return nil, &Error{Op: op, Err: ErrClosed}
	}
	replaced, err := removeStale(ifindex)
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	modes := []XDPMode{mode}
	if mode == XDPModeAuto {
		modes = []XDPMode{XDPModeNative, XDPModeGeneric}
	}
	var errs []error
	for _, m := range modes {
		a := &XDPAttachment{ifindex: ifindex, mode: m, replaced: replaced, ns: netns.None()}
		if !legacy {
			l, err := link.AttachXDP(link.XDPOptions{Program: x.objs.MxpXdpSteer, Interface: ifindex, Flags: m.linkFlags()})
			if err == nil {
				a.lnk = l
				return a, nil
			}
			if !errors.Is(err, ebpf.ErrNotSupported) {
				errs = append(errs, fmt.Errorf("%s mode: %w", m, err))
				continue
			}
			// No BPF links for XDP on this kernel: netlink it is.
		}
		if err := setXDPFd(ifindex, x.objs.MxpXdpSteer.FD(), m.netlinkFlags()|unix.XDP_FLAGS_UPDATE_IF_NOEXIST); err != nil {
			errs = append(errs, fmt.Errorf("%s mode (netlink): %w", m, err))
			continue
		}
		if ns, err := netns.Get(); err == nil {
			a.ns = ns
		}
		return a, nil
	}
	err = errors.Join(errs...)
	if errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST) {
		err = fmt.Errorf("%w: %w", ErrBusy, err)
	} else if errors.Is(err, unix.EPERM) {
		err = fmt.Errorf("%w: %w", ErrPermission, err)
	}
	return nil, &Error{Op: op, Err: err}
}

func setXDPFd(ifindex, fd, flags int) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return err
	}
	return netlink.LinkSetXdpFdWithFlags(l, fd, flags)
}

// InterfaceXDP returns the ID and name of the XDP program attached to the
// interface ifindex of the calling thread's network namespace (0 and "" for
// none).
func InterfaceXDP(ifindex int) (ebpf.ProgramID, string, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return 0, "", &Error{Op: "find interface", Err: err}
	}
	xs := l.Attrs().Xdp
	if xs == nil || !xs.Attached || xs.ProgId == 0 {
		return 0, "", nil
	}
	id := ebpf.ProgramID(xs.ProgId)
	return id, programName(id), nil
}

func programName(id ebpf.ProgramID) string {
	name := "?"
	if p, err := ebpf.NewProgramFromID(id); err == nil {
		if info, err := p.Info(); err == nil {
			name = info.Name
		}
		p.Close()
	}
	return name
}

// removeStale looks at the XDP program on ifindex: none, fine; a copy of
// ours attached through netlink and held by no BPF link (a leftover of a
// killed process), removed and its ID returned; anything else, ErrBusy.
func removeStale(ifindex int) (ebpf.ProgramID, error) {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return 0, fmt.Errorf("find interface: %w", err)
	}
	xs := l.Attrs().Xdp
	if xs == nil || !xs.Attached || xs.ProgId == 0 {
		return 0, nil
	}
	id := ebpf.ProgramID(xs.ProgId)
	name := programName(id)
	if name != XDPProgramName {
		return 0, fmt.Errorf("%w: program %q (id %d) is not MXP's; remove it first (ip link set dev %s xdp off)", ErrBusy, name, id, l.Attrs().Name)
	}
	if linkID, ok := linkHolding(id); ok {
		return 0, fmt.Errorf("%w: MXP's program (id %d) is held by BPF link %d: another mxpd runs on %s", ErrBusy, id, linkID, l.Attrs().Name)
	}
	var flags int
	switch xs.AttachMode {
	case 1: // XDP_ATTACHED_DRV
		flags = unix.XDP_FLAGS_DRV_MODE
	case 2: // XDP_ATTACHED_SKB
		flags = unix.XDP_FLAGS_SKB_MODE
	default:
		return 0, fmt.Errorf("%w: MXP's program (id %d) attached in mode %d, not native or generic", ErrBusy, id, xs.AttachMode)
	}
	if err := netlink.LinkSetXdpFdWithFlags(l, -1, flags); err != nil {
		return 0, fmt.Errorf("remove stale MXP program %d: %w", id, err)
	}
	return id, nil
}

// linkHolding finds a BPF link whose program is id.
func linkHolding(id ebpf.ProgramID) (link.ID, bool) {
	var it link.Iterator
	defer it.Close()
	for it.Next() {
		if info, err := it.Link.Info(); err == nil && info.Program == id {
			return it.ID, true
		}
	}
	return 0, false
}

// Detach removes the program from the interface. Safe to call twice.
func (a *XDPAttachment) Detach() error {
	if a.detached {
		return nil
	}
	a.detached = true
	if a.lnk != nil {
		if err := a.lnk.Close(); err != nil {
			return &Error{Op: "detach XDP program", Err: err}
		}
		return nil
	}
	defer a.ns.Close()
	err := inNetns(a.ns, func() error { return setXDPFd(a.ifindex, -1, a.mode.netlinkFlags()) })
	if err != nil {
		return &Error{Op: "detach XDP program (netlink)", Err: err}
	}
	return nil
}

// inNetns runs fn on a thread in ns (or in the caller's when ns is not open).
func inNetns(ns netns.NsHandle, fn func() error) error {
	if !ns.IsOpen() {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}
