package xdp

import (
	"encoding/binary"
	"net/netip"
)

// Header sizes.
const (
	ethLen   = 14
	vlanLen  = 4
	ipv4Len  = 20
	ipv6Len  = 40
	udpLen   = 8
	hdrRoom4 = ethLen + ipv4Len + udpLen // 42
	hdrRoom6 = ethLen + ipv6Len + udpLen // 62
)

const (
	etherTypeIPv4   = 0x0800
	etherTypeIPv6   = 0x86DD
	etherType8021Q  = 0x8100
	etherType8021AD = 0x88A8
	protoUDP        = 17
)

// rxInfo is what parseFrame finds in a received frame.
type rxInfo struct {
	payloadOff, payloadLen int
	src, dst               netip.AddrPort
}

// parseFrame parses an Ethernet frame (up to two VLAN tags, IPv4 with
// options or IPv6 without extension headers, UDP) and returns where the UDP
// payload is, with the source and destination. ok is false for anything
// else, a fragment, or a frame shorter than its headers say. The UDP
// checksum is not checked: on veth a locally sent datagram still carries
// only the pseudo-header sum (CHECKSUM_PARTIAL), and MXP authenticates
// every packet anyway.
func parseFrame(b []byte) (info rxInfo, ok bool) {
	be := binary.BigEndian
	if len(b) < ethLen {
		return info, false
	}
	off := ethLen
	etype := be.Uint16(b[12:])
	for range 2 {
		if etype != etherType8021Q && etype != etherType8021AD {
			break
		}
		if len(b) < off+vlanLen {
			return info, false
		}
		etype = be.Uint16(b[off+2:])
		off += vlanLen
	}
	var src, dst netip.Addr
	var ipEnd int // end of the IP datagram per its header
	switch etype {
	case etherTypeIPv4:
		if len(b) < off+ipv4Len {
			return info, false
		}
		ip := b[off:]
		ihl := int(ip[0]&0x0F) * 4
		if ip[0]>>4 != 4 || ihl < ipv4Len || len(ip) < ihl || ip[9] != protoUDP {
			return info, false
		}
		if be.Uint16(ip[6:])&0x3FFF != 0 { // MF or a fragment offset
			return info, false
		}
		tot := int(be.Uint16(ip[2:]))
		if tot < ihl+udpLen || off+tot > len(b) {
			return info, false
		}
		src, dst = netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		ipEnd = off + tot
		off += ihl
	case etherTypeIPv6:
		if len(b) < off+ipv6Len {
			return info, false
		}
		ip := b[off:]
		if ip[0]>>4 != 6 || ip[6] != protoUDP {
			return info, false
		}
		plen := int(be.Uint16(ip[4:]))
		if plen < udpLen || off+ipv6Len+plen > len(b) {
			return info, false
		}
		src, dst = netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40]))
		ipEnd = off + ipv6Len + plen
		off += ipv6Len
	default:
		return info, false
	}
	if off+udpLen > ipEnd {
		return info, false
	}
	u := b[off:]
	ulen := int(be.Uint16(u[4:]))
	if ulen < udpLen || off+ulen > ipEnd {
		return info, false
	}
	info.src = netip.AddrPortFrom(src, be.Uint16(u[0:]))
	info.dst = netip.AddrPortFrom(dst, be.Uint16(u[2:]))
	info.payloadOff = off + udpLen
	info.payloadLen = ulen - udpLen
	return info, true
}

// txHeader is what buildHeaders needs besides the payload.
type txHeader struct {
	srcMAC, dstMAC [6]byte
	src, dst       netip.AddrPort
}

// headerLen is the size of the Ethernet, IP and UDP headers to dst.
func headerLen(dst netip.Addr) int {
	if dst.Is4() {
		return hdrRoom4
	}
	return hdrRoom6
}

// buildHeaders writes the Ethernet, IP and UDP headers for a payload of
// plen bytes that starts at frame[room], into frame[room-headerLen:room],
// and returns the offset where the frame starts. IPv4 gets its header
// checksum; the UDP checksum is computed for both families (mandatory for
// IPv6). h.src and h.dst must be of one family (IPv4 as 4-byte addresses).
func buildHeaders(frame []byte, room, plen int, h *txHeader) int {
	be := binary.BigEndian
	hl := headerLen(h.dst.Addr())
	start := room - hl
	b := frame[start : room+plen]
	copy(b[0:6], h.dstMAC[:])
	copy(b[6:12], h.srcMAC[:])
	ulen := udpLen + plen
	var u []byte
	var sum uint32
	if h.dst.Addr().Is4() {
		be.PutUint16(b[12:], etherTypeIPv4)
		ip := b[ethLen : ethLen+ipv4Len]
		ip[0], ip[1] = 0x45, 0
		be.PutUint16(ip[2:], uint16(ipv4Len+ulen))
		be.PutUint16(ip[4:], 0)      // ID: DF is set, never fragmented
		be.PutUint16(ip[6:], 0x4000) // DF
		ip[8], ip[9] = 64, protoUDP
		ip[10], ip[11] = 0, 0
		s, d := h.src.Addr().As4(), h.dst.Addr().As4()
		copy(ip[12:16], s[:])
		copy(ip[16:20], d[:])
		be.PutUint16(ip[10:], ^fold(sumBytes(0, ip)))
		sum = sumBytes(sumBytes(0, s[:]), d[:])
		u = b[ethLen+ipv4Len:]
	} else {
		be.PutUint16(b[12:], etherTypeIPv6)
		ip := b[ethLen : ethLen+ipv6Len]
		be.PutUint32(ip[0:], 6<<28)
		be.PutUint16(ip[4:], uint16(ulen))
		ip[6], ip[7] = protoUDP, 64
		s, d := h.src.Addr().As16(), h.dst.Addr().As16()
		copy(ip[8:24], s[:])
		copy(ip[24:40], d[:])
		sum = sumBytes(sumBytes(0, s[:]), d[:])
		u = b[ethLen+ipv6Len:]
	}
	be.PutUint16(u[0:], h.src.Port())
	be.PutUint16(u[2:], h.dst.Port())
	be.PutUint16(u[4:], uint16(ulen))
	be.PutUint16(u[6:], 0)
	sum += protoUDP + uint32(ulen)
	c := ^fold(sumBytes(sum, u[:ulen]))
	if c == 0 {
		c = 0xFFFF // 0 means "no checksum" in UDP over IPv4, and is invalid in IPv6
	}
	be.PutUint16(u[6:], c)
	return start
}

// sumBytes adds b to the one's-complement sum s as big-endian 16-bit words
// (RFC 1071), eight bytes at a time into a 64-bit accumulator.
func sumBytes(s uint32, b []byte) uint32 {
	acc := uint64(s)
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		acc += v >> 32
		acc += v & 0xFFFFFFFF
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	// Fold to 16 bits (32-bit words fold to the same 16-bit sum), so that
	// callers may add small values to the result without overflow.
	for acc>>16 != 0 {
		acc = acc&0xFFFF + acc>>16
	}
	return uint32(acc)
}

func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xFFFF + s>>16
	}
	return uint16(s)
}
