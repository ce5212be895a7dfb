package udpsock

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenSharesAPort(t *testing.T) {
	a, err := Open(netip.MustParseAddrPort("127.0.0.1:0"), Options{Nonblock: true, Buffer: 1 << 20, Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(a.FD)
	b, err := Open(a.Local, Options{Buffer: 1 << 20, Shared: true})
	if err != nil {
		t.Fatalf("second socket on %v: %v", a.Local, err)
	}
	defer unix.Close(b.FD)
	// A socket not Shared keeps its port: a shared one cannot join it (a
	// plain one never could, whatever the first socket asked).
	alone, err := Open(netip.MustParseAddrPort("127.0.0.1:0"), Options{Nonblock: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(alone.FD)
	if c, err := Open(alone.Local, Options{Shared: true}); err == nil {
		unix.Close(c.FD)
		t.Fatalf("a shared socket bound %v, which a socket opened alone holds", alone.Local)
	}
	if a.Local.Port() == 0 || b.Local != a.Local || a.V6 {
		t.Fatalf("bound %v and %v", a.Local, b.Local)
	}
	if a.RecvBuffer < 256<<10 {
		t.Errorf("receive buffer %d", a.RecvBuffer)
	}
	fl, _ := unix.FcntlInt(uintptr(a.FD), unix.F_GETFL, 0)
	fl2, _ := unix.FcntlInt(uintptr(b.FD), unix.F_GETFL, 0)
	if fl&unix.O_NONBLOCK == 0 || fl2&unix.O_NONBLOCK != 0 {
		t.Errorf("O_NONBLOCK: %v and %v", fl&unix.O_NONBLOCK != 0, fl2&unix.O_NONBLOCK != 0)
	}
	off, err := Open(netip.MustParseAddrPort("[::]:0"), Options{DisableGSO: true, DisableGRO: true})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(off.FD)
	if !off.V6 || off.GSO || off.GRO {
		t.Errorf("dual-stack socket with offloads off: %+v", off)
	}
	for _, c := range []struct {
		ap string
		v6 bool
	}{{"198.18.0.1:9000", false}, {"198.18.0.1:9000", true}, {"[2001:db8::1]:443", true}} {
		// An IPv4 address on an AF_INET6 socket goes v4-mapped, and comes back plain.
		if got := AddrPortOf(Sockaddr(netip.MustParseAddrPort(c.ap), c.v6)); got.String() != c.ap {
			t.Errorf("round trip of %s (v6 socket %v): %s", c.ap, c.v6, got)
		}
	}
	if _, err := Open(netip.AddrPort{}, Options{}); err == nil {
		t.Error("an invalid address opened")
	}
}

func TestNameRoundTrip(t *testing.T) {
	var b [NameLen]byte
	for _, c := range []struct {
		ap   string
		v6   bool
		want string // "" = refused
	}{
		{"198.18.0.1:9000", false, "198.18.0.1:9000"},
		{"198.18.0.1:9000", true, "198.18.0.1:9000"}, // v4-mapped on the wire, plain IPv4 back
		{"[2001:db8::1]:443", true, "[2001:db8::1]:443"},
		{"[2001:db8::1]:443", false, ""},
	} {
		n, ok := PutName(b[:], netip.MustParseAddrPort(c.ap), c.v6)
		if !ok {
			if c.want != "" {
				t.Errorf("PutName(%s, v6=%v) refused", c.ap, c.v6)
			}
			continue
		}
		if got := AddrFromName(b[:n]).String(); got != c.want {
			t.Errorf("%s (v6=%v): %s back, want %s", c.ap, c.v6, got, c.want)
		}
	}
	if AddrFromName([]byte{0xff, 0xff, 1, 2}).IsValid() {
		t.Error("an unknown family read as an address")
	}
}
