// Package udpsock opens the UDP sockets the socket-based dataplane backends
// (portable, io_uring) share one way of setting up: SO_REUSEPORT when shards
// share a port, dual-stack IPv6, large buffers, and the GSO/GRO probes.
package udpsock

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"
)

// Options says how to open a socket.
type Options struct {
	// Nonblock opens the socket O_NONBLOCK (recvmmsg backends); io_uring
	// wants a blocking one.
	Nonblock bool
	// Buffer is the send and receive buffer size to ask for.
	Buffer int
	// DisableGSO and DisableGRO skip the offloads even where offered.
	DisableGSO, DisableGRO bool
	// Shared sets SO_REUSEPORT: other sockets (more shards) bind the same
	// port. A socket alone on its port goes without: a reuseport group
	// costs every datagram delivered to it a lookup (~0.1 µs per send on
	// loopback here), and no other socket can take its port by mistake.
	Shared bool
	// LockPort binds an explicit port when 0 is asked (one a probe socket
	// got from the kernel, tried again if another socket takes it first):
	// Linux keeps a port bound that way when the socket later disconnects
	// (connect AF_UNSPEC), and drops one it picked itself. For a socket
	// that connects to a peer and may have to disconnect.
	LockPort bool
}

// Socket is an open, bound UDP socket and what the kernel granted it.
type Socket struct {
	FD    int
	Local netip.AddrPort // with the port the kernel chose when 0 was asked
	V6    bool           // an AF_INET6 socket (dual-stack when bound to ::)
	// GSO: UDP_SEGMENT is supported (Linux 4.18; a device may still refuse
	// at send time with EIO). GRO: UDP_GRO was set (Linux 5.0).
	GSO, GRO               bool
	RecvBuffer, SendBuffer int
}

// Open creates a UDP socket bound to addr, with SO_REUSEPORT if o.Shared.
func Open(addr netip.AddrPort, o Options) (s Socket, err error) {
	if !addr.IsValid() {
		return s, fmt.Errorf("invalid bind address %v", addr)
	}
	family := unix.AF_INET
	if addr.Addr().Is6() {
		family = unix.AF_INET6
	}
	typ := unix.SOCK_DGRAM | unix.SOCK_CLOEXEC
	if o.Nonblock {
		typ |= unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(family, typ, unix.IPPROTO_UDP)
	if err != nil {
		return s, os.NewSyscallError("socket", err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
		}
	}()
	s = Socket{FD: fd, V6: family == unix.AF_INET6}
	if o.Shared {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			return s, os.NewSyscallError("setsockopt SO_REUSEPORT", err)
		}
	}
	if s.V6 && addr.Addr().IsUnspecified() {
		// Dual-stack: IPv4 peers appear as v4-mapped addresses.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return s, os.NewSyscallError("setsockopt IPV6_V6ONLY", err)
		}
	}
	s.RecvBuffer = setBuffer(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, o.Buffer)
	s.SendBuffer = setBuffer(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, o.Buffer)
	if err := bind(fd, addr, family, s.V6, o.LockPort); err != nil {
		return s, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return s, os.NewSyscallError("getsockname", err)
	}
	s.Local = AddrPortOf(sa)
	if !o.DisableGSO {
		_, err := unix.GetsockoptInt(fd, unix.SOL_UDP, unix.UDP_SEGMENT)
		s.GSO = err == nil
	}
	if !o.DisableGRO {
		s.GRO = unix.SetsockoptInt(fd, unix.SOL_UDP, unix.UDP_GRO, 1) == nil
	}
	return s, nil
}

// bind binds fd to addr; with lock and port 0, to a port a probe socket
// got, so that the port is the socket's own (see Options.LockPort).
func bind(fd int, addr netip.AddrPort, family int, v6, lock bool) error {
	if !lock || addr.Port() != 0 {
		if err := unix.Bind(fd, Sockaddr(addr, v6)); err != nil {
			return fmt.Errorf("bind %v: %w", addr, err)
		}
		return nil
	}
	const tries = 8
	for try := 1; ; try++ {
		port, err := probePort(addr, family, v6)
		if err != nil {
			return err
		}
		err = unix.Bind(fd, Sockaddr(netip.AddrPortFrom(addr.Addr(), port), v6))
		if err == nil {
			return nil
		}
		if err != unix.EADDRINUSE || try == tries {
			return fmt.Errorf("bind %v (port %d): %w", addr, port, err)
		}
	}
}

// probePort returns a port the kernel gives a socket bound to addr with
// port 0, and closes that socket.
func probePort(addr netip.AddrPort, family int, v6 bool) (uint16, error) {
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return 0, os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if v6 && addr.Addr().IsUnspecified() {
		unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0) // as the socket it is for
	}
	if err := unix.Bind(fd, Sockaddr(addr, v6)); err != nil {
		return 0, fmt.Errorf("bind %v: %w", addr, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, os.NewSyscallError("getsockname", err)
	}
	return AddrPortOf(sa).Port(), nil
}

// setBuffer asks for size bytes with the privileged option (which ignores
// the sysctl maximum; needs CAP_NET_ADMIN), falling back to the plain one,
// and returns the size the kernel reports.
func setBuffer(fd, force, plain, size int) int {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, size)
	}
	got, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, plain)
	return got
}

// Sockaddr converts an address to the unix package's form for a socket of
// the given family (an IPv4 address on an AF_INET6 socket goes v4-mapped).
func Sockaddr(ap netip.AddrPort, v6 bool) unix.Sockaddr {
	if !v6 {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// AddrPortOf converts the unix package's form back (v4-mapped addresses
// come back as IPv4, as AddrFromName's do).
func AddrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// NameLen is the room a socket address takes in a msghdr name buffer.
const NameLen = unix.SizeofSockaddrInet6

// AddrFromName reads a sockaddr_in or sockaddr_in6 that the kernel wrote
// into b (v4-mapped addresses come back as IPv4); the zero AddrPort if b
// holds neither.
func AddrFromName(b []byte) netip.AddrPort {
	if len(b) < 2 {
		return netip.AddrPort{}
	}
	switch binary.NativeEndian.Uint16(b) {
	case unix.AF_INET:
		if len(b) >= unix.SizeofSockaddrInet4 {
			return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:]))
		}
	case unix.AF_INET6:
		if len(b) >= unix.SizeofSockaddrInet6 {
			return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])).Unmap(), binary.BigEndian.Uint16(b[2:]))
		}
	}
	return netip.AddrPort{}
}

// PutName writes ap into b (at least NameLen bytes) as a socket of family v6
// (else IPv4) expects, and returns the name's length; false when this
// socket cannot reach ap (an IPv6 address from an IPv4 socket).
func PutName(b []byte, ap netip.AddrPort, v6 bool) (uint32, bool) {
	clear(b[:NameLen])
	if !v6 {
		a := ap.Addr().Unmap()
		if !a.Is4() {
			return 0, false
		}
		binary.NativeEndian.PutUint16(b[0:], unix.AF_INET)
		binary.BigEndian.PutUint16(b[2:], ap.Port())
		a4 := a.As4()
		copy(b[4:8], a4[:])
		return unix.SizeofSockaddrInet4, true
	}
	if !ap.Addr().IsValid() {
		return 0, false
	}
	binary.NativeEndian.PutUint16(b[0:], unix.AF_INET6)
	binary.BigEndian.PutUint16(b[2:], ap.Port())
	a16 := ap.Addr().As16() // v4 becomes v4-mapped
	copy(b[8:24], a16[:])
	return unix.SizeofSockaddrInet6, true
}
