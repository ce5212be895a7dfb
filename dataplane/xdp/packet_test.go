package xdp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// refChecksum is RFC 1071 done the plain way, 16 bits at a time.
func refChecksum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	if len(all)%2 == 1 {
		all = append(all, 0)
	}
	var s uint32
	for i := 0; i < len(all); i += 2 {
		s += uint32(all[i])<<8 | uint32(all[i+1])
	}
	for s>>16 != 0 {
		s = s&0xFFFF + s>>16
	}
	return ^uint16(s)
}

// checkFrame verifies a built frame the way a receiver would: the IPv4
// header checksum and the UDP checksum over the pseudo-header sum to zero.
func checkFrame(t testing.TB, f []byte, h *txHeader, payload []byte) {
	t.Helper()
	info, ok := parseFrame(f)
	if !ok {
		t.Fatalf("built frame does not parse: % x", f)
	}
	if info.src != h.src || info.dst != h.dst {
		t.Fatalf("parsed %v -> %v, built %v -> %v", info.src, info.dst, h.src, h.dst)
	}
	if got := f[info.payloadOff : info.payloadOff+info.payloadLen]; !bytes.Equal(got, payload) {
		t.Fatalf("payload changed")
	}
	if !bytes.Equal(f[0:6], h.dstMAC[:]) || !bytes.Equal(f[6:12], h.srcMAC[:]) {
		t.Fatalf("MACs: % x", f[:12])
	}
	udp := f[info.payloadOff-udpLen : info.payloadOff+info.payloadLen]
	var pseudo []byte
	if h.dst.Addr().Is4() {
		ip := f[ethLen : ethLen+ipv4Len]
		if c := refChecksum(ip); c != 0 {
			t.Fatalf("IPv4 header checksum does not verify (%#04x)", c)
		}
		s, d := h.src.Addr().As4(), h.dst.Addr().As4()
		pseudo = append(append(pseudo, s[:]...), d[:]...)
		pseudo = append(pseudo, 0, protoUDP)
		pseudo = binary.BigEndian.AppendUint16(pseudo, uint16(len(udp)))
	} else {
		s, d := h.src.Addr().As16(), h.dst.Addr().As16()
		pseudo = append(append(pseudo, s[:]...), d[:]...)
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(udp)))
		pseudo = append(pseudo, 0, 0, 0, protoUDP)
	}
	if binary.BigEndian.Uint16(udp[6:]) == 0 {
		t.Fatalf("UDP checksum 0")
	}
	if c := refChecksum(pseudo, udp); c != 0 {
		t.Fatalf("UDP checksum does not verify (%#04x)", c)
	}
}

func buildFrame(h *txHeader, payload []byte) []byte {
	room := hdrRoom6
	frame := make([]byte, room+len(payload))
	copy(frame[room:], payload)
	start := buildHeaders(frame, room, len(payload), h)
	return frame[start:]
}

func TestBuildParse(t *testing.T) {
	for _, c := range []struct{ src, dst string }{
		{"198.18.0.1:4433", "198.18.0.2:50000"},
		{"[2001:db8::1]:4433", "[2001:db8::2]:1"},
	} {
		for _, n := range []int{0, 1, 7, 8, 63, 64, 1200, 1472} {
			h := txHeader{srcMAC: [6]byte{2, 0, 0, 0, 0, 1}, dstMAC: [6]byte{2, 0, 0, 0, 0, 2},
				src: netip.MustParseAddrPort(c.src), dst: netip.MustParseAddrPort(c.dst)}
			p := make([]byte, n)
			for i := range p {
				p[i] = byte(i*31 + n)
			}
			f := buildFrame(&h, p)
			if len(f) != headerLen(h.dst.Addr())+n {
				t.Fatalf("frame of %d bytes for %d payload", len(f), n)
			}
			checkFrame(t, f, &h, p)
		}
	}
}

func TestParseRejects(t *testing.T) {
	h := txHeader{src: netip.MustParseAddrPort("198.18.0.1:1"), dst: netip.MustParseAddrPort("198.18.0.2:2")}
	good := buildFrame(&h, make([]byte, 32))
	for n := range len(good) {
		if _, ok := parseFrame(good[:n]); ok {
			t.Errorf("frame cut at %d parses", n)
		}
	}
	frag := append([]byte(nil), good...)
	frag[ethLen+6] = 0x20 // MF
	if _, ok := parseFrame(frag); ok {
		t.Errorf("fragment parses")
	}
	// VLAN tags are skipped: 802.1ad + 802.1Q in front.
	tagged := append(append(append([]byte(nil), good[:12]...), 0x88, 0xA8, 0, 1, 0x81, 0x00, 0, 2), good[12:]...)
	if info, ok := parseFrame(tagged); !ok || info.payloadLen != 32 || info.dst != h.dst {
		t.Errorf("QinQ frame: %+v %v", info, ok)
	}
}

func TestSumBytesMatchesReference(t *testing.T) {
	b := make([]byte, 3000)
	for i := range b {
		b[i] = byte(i*151 + 7)
	}
	for n := range 70 {
		if got, want := ^fold(sumBytes(0, b[:n])), refChecksum(b[:n]); got != want {
			t.Fatalf("n=%d: %#04x want %#04x", n, got, want)
		}
	}
	for i := range b {
		b[i] = 0xFF
	}
	if got, want := ^fold(sumBytes(0xFFFF, b)), refChecksum([]byte{0xFF, 0xFF}, b); got != want {
		t.Fatalf("all ones: %#04x want %#04x", got, want)
	}
}

// FuzzFrame: the parser never panics on arbitrary bytes, and whatever it
// accepts it reports inside the frame; a frame built from fuzzed addresses,
// ports and payload parses back to the same and its checksums verify.
func FuzzFrame(f *testing.F) {
	h := txHeader{src: netip.MustParseAddrPort("198.18.0.1:4433"), dst: netip.MustParseAddrPort("198.18.0.2:9")}
	f.Add(buildFrame(&h, []byte("0123456789abcdef")), []byte{198, 18, 0, 1}, []byte{198, 18, 0, 2}, uint16(1), uint16(2))
	h6 := txHeader{src: netip.MustParseAddrPort("[2001:db8::1]:4433"), dst: netip.MustParseAddrPort("[2001:db8::2]:9")}
	f.Add(buildFrame(&h6, make([]byte, 100)), make([]byte, 16), make([]byte, 16), uint16(443), uint16(0))
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0x81, 0x00, 0, 0, 0x81, 0x00}, []byte{1}, []byte{2}, uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, data, src, dst []byte, sport, dport uint16) {
		if info, ok := parseFrame(data); ok {
			if info.payloadOff < ethLen+ipv4Len+udpLen || info.payloadOff+info.payloadLen > len(data) {
				t.Fatalf("payload [%d, +%d) outside a %d-byte frame", info.payloadOff, info.payloadLen, len(data))
			}
		}
		s, ok1 := netip.AddrFromSlice(src)
		d, ok2 := netip.AddrFromSlice(dst)
		if !ok1 || !ok2 || s.Is4() != d.Is4() || len(data) > 9000 {
			return
		}
		h := txHeader{srcMAC: [6]byte{1}, dstMAC: [6]byte{2}, src: netip.AddrPortFrom(s, sport), dst: netip.AddrPortFrom(d, dport)}
		checkFrame(t, buildFrame(&h, data), &h, data)
	})
}
