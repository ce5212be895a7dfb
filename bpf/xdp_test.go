package bpf

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

const xdpTestPort = 4433

// loadXDP loads the XDP program or skips the test, saying what is missing.
func loadXDP(t *testing.T, shards int, ports ...uint16) *XDP {
	t.Helper()
	return loadXDPWith(t, XDPOptions{Ports: ports, Shards: shards})
}

func loadXDPWith(t *testing.T, o XDPOptions) *XDP {
	t.Helper()
	if err := CheckXDP(); err != nil {
		t.Skipf("skipping: XDP unavailable (uid %d): %v", os.Geteuid(), err)
	}
	x, err := LoadXDP(o)
	for _, missing := range []error{ErrXDPNotSupported, ErrMemlock, ErrPermission} {
		if errors.Is(err, missing) {
			t.Skipf("skipping: %v", err)
		}
	}
	if err != nil {
		t.Fatalf("LoadXDP: %v", err)
	}
	t.Cleanup(func() {
		if err := x.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return x
}

// frame describes a crafted Ethernet frame.
type frame struct {
	vlans   []uint16 // TPIDs of VLAN tags, outermost first
	v6      bool
	ipOpts  int    // IPv4 option bytes (multiple of 4)
	fragOff uint16 // IPv4 flags+fragment offset field
	proto   uint8  // 0: UDP
	dport   uint16
	payload []byte
	udpLen  int // 0: the right one
}

// bytes builds the frame, returning it with the offsets where each header
// starts (Ethernet, each VLAN tag, IP, UDP, payload).
func (f frame) bytes() ([]byte, []int) {
	var b []byte
	var offs []int
	be := binary.BigEndian
	offs = append(offs, 0)
	b = append(b, 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1) // dst, src MAC
	etype := uint16(0x0800)
	if f.v6 {
		etype = 0x86DD
	}
	for _, tpid := range f.vlans {
		b = be.AppendUint16(b, tpid)
		offs = append(offs, len(b))
		b = be.AppendUint16(b, 42) // TCI
	}
	b = be.AppendUint16(b, etype)
	proto := f.proto
	if proto == 0 {
		proto = 17
	}
	ulen := 8 + len(f.payload)
	if f.udpLen != 0 {
		ulen = f.udpLen
	}
	offs = append(offs, len(b))
	if f.v6 {
		b = append(b, 0x60, 0, 0, 0)
		b = be.AppendUint16(b, uint16(ulen))
		b = append(b, proto, 64)
		b = append(b, make([]byte, 32)...)
		b[len(b)-17] = 1
		b[len(b)-1] = 2
	} else {
		ihl := 20 + f.ipOpts
		b = append(b, 0x40|byte(ihl/4), 0)
		b = be.AppendUint16(b, uint16(ihl+ulen))
		b = append(b, 0, 1)
		b = be.AppendUint16(b, f.fragOff)
		b = append(b, 64, proto, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2)
		for range f.ipOpts {
			b = append(b, 1) // NOP options
		}
	}
	offs = append(offs, len(b))
	b = be.AppendUint16(b, 50000)
	b = be.AppendUint16(b, f.dport)
	b = be.AppendUint16(b, uint16(ulen))
	b = be.AppendUint16(b, 0)
	offs = append(offs, len(b))
	b = append(b, f.payload...)
	return b, offs
}

// mxpPayload is a 64-byte payload whose connection ID names shard.
func mxpPayload(shard byte) []byte {
	p := make([]byte, 64)
	p[7] = shard
	p[15] = 0xEE // a byte a wrong offset would read
	p[16] = 0x02 // packet flags: ACK_ELICITING, not HANDSHAKE
	return p
}

// handshakePayload is an MXP handshake packet's start: a random connection
// ID naming shard, and the HANDSHAKE flag.
func handshakePayload(shard byte) []byte {
	p := mxpPayload(shard)
	p[16] = 0x01
	return p
}

func runXDP(t *testing.T, x *XDP, pkt []byte) uint32 {
	t.Helper()
	in := pkt
	if len(in) < 14 {
		t.Fatalf("test frame of %d bytes: the kernel needs 14", len(in))
	}
	ret, err := x.Program().Run(&ebpf.RunOptions{Data: in, Repeat: 1})
	if err != nil {
		t.Fatalf("Program.Run: %v", err)
	}
	return ret
}

func counters(t *testing.T, x *XDP) XDPCounters {
	t.Helper()
	c, err := x.Counters()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func diff(a, b XDPCounters) XDPCounters {
	return XDPCounters{
		Matched: b.Matched - a.Matched, Redirected: b.Redirected - a.Redirected, Passed: b.Passed - a.Passed,
		Malformed: b.Malformed - a.Malformed, PassOtherQueue: b.PassOtherQueue - a.PassOtherQueue,
		PassNoSocket: b.PassNoSocket - a.PassNoSocket, PassShort: b.PassShort - a.PassShort, PassTooBig: b.PassTooBig - a.PassTooBig,
		Handshakes: b.Handshakes - a.Handshakes,
	}
}

const (
	xdpPass     = 2
	xdpRedirect = 4
)

// BPF_PROG_TEST_RUN runs the program on queue 0 with an empty XSKMAP, so
// a datagram of ours for shard 0 gets as far as the redirect and falls back
// to XDP_PASS (PassNoSocket); one for another shard is PassOtherQueue. The
// redirect itself is tested across veth in dataplane/xdp.
func TestXDPVerdicts(t *testing.T) {
	// A small MaxFrame: BPF_PROG_TEST_RUN keeps only about a page linear.
	x := loadXDPWith(t, XDPOptions{Ports: []uint16{xdpTestPort, 9999}, Shards: 4, MaxFrame: 512})
	big := make([]byte, 600)
	for _, c := range []struct {
		name string
		f    frame
		want XDPCounters
	}{
		{"ipv4 shard 0", frame{dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Matched: 1, Passed: 1, PassNoSocket: 1}},
		{"ipv4 second port", frame{dport: 9999, payload: mxpPayload(4)}, XDPCounters{Matched: 1, Passed: 1, PassNoSocket: 1}},
		{"ipv4 shard 1 other queue", frame{dport: xdpTestPort, payload: mxpPayload(1)}, XDPCounters{Matched: 1, Passed: 1, PassOtherQueue: 1}},
		{"ipv4 shard 5 = 1 mod 4", frame{dport: xdpTestPort, payload: mxpPayload(5)}, XDPCounters{Matched: 1, Passed: 1, PassOtherQueue: 1}},
		{"ipv6 shard 0", frame{v6: true, dport: xdpTestPort, payload: mxpPayload(8)}, XDPCounters{Matched: 1, Passed: 1, PassNoSocket: 1}},
		{"ipv6 shard 3", frame{v6: true, dport: xdpTestPort, payload: mxpPayload(3)}, XDPCounters{Matched: 1, Passed: 1, PassOtherQueue: 1}},
		{"vlan 802.1Q", frame{vlans: []uint16{0x8100}, dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Matched: 1, Passed: 1, PassNoSocket: 1}},
		{"qinq 802.1ad+802.1Q", frame{vlans: []uint16{0x88A8, 0x8100}, dport: xdpTestPort, payload: mxpPayload(2)}, XDPCounters{Matched: 1, Passed: 1, PassOtherQueue: 1}},
		{"qinq ipv6", frame{v6: true, vlans: []uint16{0x88A8, 0x8100}, dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Matched: 1, Passed: 1, PassNoSocket: 1}},
		{"three vlan tags: not parsed", frame{vlans: []uint16{0x88A8, 0x8100, 0x8100}, dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Passed: 1}},
		{"ipv4 options", frame{ipOpts: 8, dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Matched: 1, Passed: 1, PassNoSocket: 1}},
		{"ipv4 max options", frame{ipOpts: 40, dport: xdpTestPort, payload: mxpPayload(1)}, XDPCounters{Matched: 1, Passed: 1, PassOtherQueue: 1}},
		{"ipv4 first fragment", frame{fragOff: 0x2000, dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Passed: 1}},
		{"ipv4 later fragment", frame{fragOff: 0x0010, dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Passed: 1}},
		{"ipv4 DF set is not a fragment", frame{fragOff: 0x4000, dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Matched: 1, Passed: 1, PassNoSocket: 1}},
		{"wrong port", frame{dport: 4434, payload: mxpPayload(0)}, XDPCounters{Passed: 1}},
		{"ipv6 wrong port", frame{v6: true, dport: 53, payload: mxpPayload(0)}, XDPCounters{Passed: 1}},
		{"tcp", frame{proto: 6, dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Passed: 1}},
		{"ipv6 extension header", frame{v6: true, proto: 0, dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Matched: 1, Passed: 1, PassNoSocket: 1}},
		{"ipv6 hop-by-hop", frame{v6: true, proto: 60, dport: xdpTestPort, payload: mxpPayload(0)}, XDPCounters{Passed: 1}},
		{"short payload, no connection ID", frame{dport: xdpTestPort, payload: []byte{1, 2, 3}}, XDPCounters{Matched: 1, Passed: 1, PassShort: 1}},
		{"udp length below header", frame{dport: xdpTestPort, payload: mxpPayload(0), udpLen: 4}, XDPCounters{Passed: 1, Malformed: 1}},
		{"ipv6 udp length below header", frame{v6: true, dport: xdpTestPort, payload: mxpPayload(0), udpLen: 4}, XDPCounters{Passed: 1, Malformed: 1}},
		{"udp length beyond frame", frame{dport: xdpTestPort, payload: mxpPayload(0), udpLen: 200}, XDPCounters{Matched: 1, Passed: 1, Malformed: 1}},
		{"too big for a frame", frame{dport: xdpTestPort, payload: big}, XDPCounters{Matched: 1, Passed: 1, PassTooBig: 1}},
		// A handshake goes to the shard of its queue (0 here), whatever its
		// connection ID names: it reaches the redirect (empty slot).
		{"handshake, ID names shard 1", frame{dport: xdpTestPort, payload: handshakePayload(1)}, XDPCounters{Matched: 1, Passed: 1, PassNoSocket: 1}},
		{"ipv6 handshake, ID names shard 3", frame{v6: true, dport: xdpTestPort, payload: handshakePayload(3)}, XDPCounters{Matched: 1, Passed: 1, PassNoSocket: 1}},
		// 16 payload bytes: a connection ID but no flags byte: by the ID.
		{"16-byte payload", frame{dport: xdpTestPort, payload: handshakePayload(1)[:16]}, XDPCounters{Matched: 1, Passed: 1, PassOtherQueue: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.f.proto == 0 && c.name == "ipv6 extension header" {
				c.f.proto = 17 // UDP straight after the fixed header
			}
			pkt, _ := c.f.bytes()
			before := counters(t, x)
			if got := runXDP(t, x, pkt); got != xdpPass {
				t.Errorf("verdict %d, want XDP_PASS", got)
			}
			if got := diff(before, counters(t, x)); got != c.want {
				t.Errorf("counters moved by %+v, want %+v", got, c.want)
			}
		})
	}
}

// Every prefix of a valid frame cut inside a header (or before the
// connection ID's shard byte) passes and counts as malformed, never matched
// as ours and never redirected.
func TestXDPTruncated(t *testing.T) {
	x := loadXDP(t, 2, xdpTestPort)
	for _, f := range []frame{
		{dport: xdpTestPort, payload: mxpPayload(0)},
		{v6: true, dport: xdpTestPort, payload: mxpPayload(0)},
		{vlans: []uint16{0x88A8, 0x8100}, ipOpts: 12, dport: xdpTestPort, payload: mxpPayload(0)},
	} {
		pkt, offs := f.bytes()
		udpAt, payloadAt := offs[len(offs)-2], offs[len(offs)-1]
		for n := 14; n < payloadAt+8; n++ {
			before := counters(t, x)
			if got := runXDP(t, x, pkt[:n]); got != xdpPass {
				t.Fatalf("cut at %d: verdict %d, want XDP_PASS", n, got)
			}
			d := diff(before, counters(t, x))
			want := XDPCounters{Passed: 1, Malformed: 1}
			if n >= udpAt+8 {
				want.Matched = 1 // the UDP header is whole: ours, but cut short
			}
			if n == 14 && len(f.vlans) == 0 {
				want.Malformed = 1 // no IP header at all
			}
			if d != want {
				t.Errorf("v6=%v vlans=%d cut at %d (udp at %d): counters moved by %+v, want %+v", f.v6, len(f.vlans), n, udpAt, d, want)
			}
		}
		// Whole up to the connection ID but shorter than the UDP length.
		before := counters(t, x)
		runXDP(t, x, pkt[:payloadAt+8])
		if d := diff(before, counters(t, x)); d.Malformed != 1 || d.Redirected != 0 {
			t.Errorf("cut inside the payload: %+v", d)
		}
	}
}

// Malformed IP headers (bad version, IHL below 5, total length below the
// headers) pass as malformed.
func TestXDPMalformedIP(t *testing.T) {
	x := loadXDP(t, 1, xdpTestPort)
	good, offs := frame{dport: xdpTestPort, payload: mxpPayload(0)}.bytes()
	ipAt := offs[1]
	for name, mutate := range map[string]func(b []byte){
		"version 5":    func(b []byte) { b[ipAt] = 0x55 },
		"ihl 4":        func(b []byte) { b[ipAt] = 0x44 },
		"tot_len 20":   func(b []byte) { binary.BigEndian.PutUint16(b[ipAt+2:], 20) },
		"ihl past end": func(b []byte) { b[ipAt] = 0x4F },
	} {
		b := append([]byte(nil), good...)
		mutate(b)
		if name == "ihl past end" {
			b = b[:ipAt+64] // 60 bytes of IP header, then half a UDP header
		}
		before := counters(t, x)
		if got := runXDP(t, x, b); got != xdpPass {
			t.Errorf("%s: verdict %d", name, got)
		}
		if d := diff(before, counters(t, x)); d.Malformed != 1 || d.Passed != 1 || d.Redirected != 0 {
			t.Errorf("%s: counters moved by %+v, want one malformed pass", name, d)
		}
	}
	v6, offs6 := frame{v6: true, dport: xdpTestPort, payload: mxpPayload(0)}.bytes()
	v6[offs6[1]] = 0x40 // version 4 in an IPv6 EtherType
	before := counters(t, x)
	runXDP(t, x, v6)
	if d := diff(before, counters(t, x)); d.Malformed != 1 {
		t.Errorf("IPv6 with version 4: counters moved by %+v", d)
	}
	// Non-IP EtherTypes (ARP) pass untouched.
	arp := append([]byte(nil), good[:12]...)
	arp = append(arp, 0x08, 0x06)
	arp = append(arp, make([]byte, 28)...)
	before = counters(t, x)
	runXDP(t, x, arp)
	if d := diff(before, counters(t, x)); d != (XDPCounters{Passed: 1}) {
		t.Errorf("ARP: counters moved by %+v", d)
	}
}

func TestLoadXDPOptions(t *testing.T) {
	for _, o := range []XDPOptions{
		{Shards: 0, Ports: []uint16{1}},
		{Shards: 257, Ports: []uint16{1}},
		{Shards: 1},
		{Shards: 1, Ports: make([]uint16, MaxXDPPorts+1)},
		{Shards: 1, Ports: []uint16{1}, MaxFrame: 10},
	} {
		if _, err := LoadXDP(o); err == nil {
			t.Errorf("LoadXDP(%+v) succeeded", o)
		}
	}
}
