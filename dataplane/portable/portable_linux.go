// Package portable is the dataplane backend that runs on any Linux: one UDP
// socket per shard bound with SO_REUSEPORT, datagrams moved in batches with
// recvmmsg/sendmmsg, UDP GSO (UDP_SEGMENT) on send and UDP GRO on receive
// where the kernel offers them, large socket buffers.
package portable

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/dataplane"
)

// Backend is the portable backend. The zero value is ready to use.
type Backend struct {
	// Steer, when set, is called once with every shard's socket (index =
	// shard) after they are bound, to attach a steering program that sends
	// each connection's datagrams to the socket of the shard that owns it. An
	// error fails Open; without Steer the kernel's 4-tuple hash spreads flows.
	Steer func(fds []int) error
}

// Name returns "portable".
func (*Backend) Name() string { return "portable" }

// Features reports what the kernel offered a socket of this backend.
type Features struct {
	GSO, GRO bool
	// RecvBuffer and SendBuffer are the socket buffer sizes the kernel set.
	RecvBuffer, SendBuffer int
}

// Open binds cfg.Shards sockets to cfg.Addr with SO_REUSEPORT.
func (b *Backend) Open(cfg dataplane.Config) ([]dataplane.ShardConn, error) {
	cfg = cfg.WithDefaults()
	addr := cfg.Addr
	var conns []dataplane.ShardConn
	var fds []int
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := range cfg.Shards {
		c, err := openShard(cfg, addr)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("portable: shard %d: %w", i, err)
		}
		conns = append(conns, c)
		fds = append(fds, c.fd)
		addr = c.local // later shards bind the port the first one got
	}
	if b.Steer != nil {
		if err := b.Steer(fds); err != nil {
			closeAll()
			return nil, fmt.Errorf("portable: steering: %w", err)
		}
	}
	return conns, nil
}

// shardConn is one shard's socket with its batch buffers. Only the shard's
// goroutine touches it, except Wake and Stats.
type shardConn struct {
	fd, wakeFD int
	local      netip.AddrPort
	v6         bool // AF_INET6 socket (dual-stack when bound to ::)
	gso, gro   bool
	features   Features
	maxDgram   int
	closed     atomic.Bool
	stats      counters

	rx rxState
	tx txState
}

// counters are Stats kept with atomics so Stats may read them from anywhere;
// each is added once per batch, not per datagram.
type counters struct {
	rxPackets, rxBytes, rxCalls, rxGROSplits, rxDropped atomic.Uint64
	txPackets, txBytes, txCalls, txGSOSends, txDropped  atomic.Uint64
	wakeups                                             atomic.Uint64
}

func (c *shardConn) Stats() dataplane.Stats {
	s := &c.stats
	return dataplane.Stats{
		RxPackets: s.rxPackets.Load(), RxBytes: s.rxBytes.Load(), RxCalls: s.rxCalls.Load(),
		RxGROSplits: s.rxGROSplits.Load(), RxDropped: s.rxDropped.Load(),
		TxPackets: s.txPackets.Load(), TxBytes: s.txBytes.Load(), TxCalls: s.txCalls.Load(),
		TxGSOSends: s.txGSOSends.Load(), TxDropped: s.txDropped.Load(), Wakeups: s.wakeups.Load(),
	}
}

// FeaturesOf reports what the kernel offered a ShardConn opened by this backend.
func FeaturesOf(c dataplane.ShardConn) (Features, bool) {
	sc, ok := c.(*shardConn)
	if !ok {
		return Features{}, false
	}
	return sc.features, true
}

func (c *shardConn) LocalAddr() netip.AddrPort { return c.local }

func openShard(cfg dataplane.Config, addr netip.AddrPort) (c *shardConn, err error) {
	if !addr.IsValid() {
		return nil, fmt.Errorf("invalid bind address %v", addr)
	}
	family := unix.AF_INET
	if addr.Addr().Is6() {
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	c = &shardConn{fd: fd, wakeFD: -1, v6: family == unix.AF_INET6, maxDgram: cfg.MaxDatagram}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return nil, os.NewSyscallError("setsockopt SO_REUSEPORT", err)
	}
	if c.v6 && addr.Addr().IsUnspecified() {
		// Dual-stack: IPv4 peers appear as v4-mapped addresses.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return nil, os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	c.features.RecvBuffer = setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, cfg.SocketBuffer)
	c.features.SendBuffer = setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, cfg.SocketBuffer)
	if err := unix.Bind(fd, sockaddr(addr)); err != nil {
		return nil, fmt.Errorf("bind %v: %w", addr, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, os.NewSyscallError("getsockname", err)
	}
	c.local = addrPortOf(sa)
	if !cfg.DisableGSO {
		// Supported since Linux 4.18; a NIC may still refuse at send time (EIO),
		// which turns GSO off for this socket then.
		_, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT)
		c.gso = err == nil
	}
	if !cfg.DisableGRO {
		c.gro = unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1) == nil // Linux 5.0
	}
	c.features.GSO, c.features.GRO = c.gso, c.gro
	if c.wakeFD, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("eventfd", err)
	}
	c.rx.init(cfg.Batch, c.rxBufferSize())
	c.tx.init(cfg.Batch, cfg.MaxDatagram)
	return c, nil
}

// rxBufferSize is the receive buffer per message: a whole GRO super-datagram
// when GRO is on, else one datagram plus a byte to detect truncation.
func (c *shardConn) rxBufferSize() int {
	if c.gro {
		return 65535
	}
	return c.maxDgram + 1
}

// setBuffer asks for size bytes with the privileged option (which ignores the
// sysctl maximum; needs CAP_NET_ADMIN), falling back to the plain one, and
// returns the size the kernel reports.
func setBuffer(fd, force, plain, size int) int {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
	}
	got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, plain)
	return got
}

func sockaddr(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func addrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

func (c *shardConn) Release([]dataplane.Packet) {} // receive buffers are reused on the next Recv

// Wait blocks in ppoll until the socket is readable, Wake is called, or the deadline passes.
func (c *shardConn) Wait(deadline time.Time) error {
	var ts *unix.Timespec
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return nil
		}
		t := unix.NsecToTimespec(d.Nanoseconds())
		ts = &t
	}
	fds := [2]unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}, {Fd: int32(c.wakeFD), Events: unix.POLLIN}}
	c.stats.wakeups.Add(1)
	for {
		_, err := unix.Ppoll(fds[:], ts, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("ppoll", err)
		}
		break
	}
	if fds[1].Revents != 0 {
		var b [8]byte
		unix.Read(c.wakeFD, b[:]) // reset the eventfd counter
	}
	return nil
}

// Wake makes the shard's Wait return.
func (c *shardConn) Wake() {
	if c.closed.Load() {
		return
	}
	one := [8]byte{1}
	unix.Write(c.wakeFD, one[:]) // EAGAIN: the counter is already non-zero, a wake-up is pending
}

func (c *shardConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	var errs []error
	if c.fd >= 0 {
		errs = append(errs, unix.Close(c.fd))
	}
	if c.wakeFD >= 0 {
		errs = append(errs, unix.Close(c.wakeFD))
	}
	return errors.Join(errs...)
}
