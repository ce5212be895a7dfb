package crypto

import (
	"io"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20"
)

// detRand is a deterministic randomness source (ChaCha20 keystream of a
// seed) so tests and benchmarks are reproducible.
type detRand struct{ c *chacha20.Cipher }

func newDetRand(seed byte) io.Reader {
	key := make([]byte, 32)
	key[0] = seed
	c, err := chacha20.NewUnauthenticatedCipher(key, make([]byte, 12))
	if err != nil {
		panic(err)
	}
	return &detRand{c}
}

func (d *detRand) Read(p []byte) (int, error) {
	clear(p)
	d.c.XORKeyStream(p, p)
	return len(p), nil
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

var testAddr = netip.MustParseAddrPort("192.0.2.10:40000")

func mustIdentity(t testing.TB, seed byte) Identity {
	t.Helper()
	id, err := GenerateIdentity(newDetRand(seed))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// testPeers returns initiator and responder configs with distinct identities.
func testPeers(t testing.TB) (*Config, *Config) {
	t.Helper()
	ic := &Config{Identity: mustIdentity(t, 1), Rand: newDetRand(11)}
	rc := &Config{Identity: mustIdentity(t, 2), Rand: newDetRand(12)}
	return ic, rc
}

// handshake runs a full handshake in memory and returns both sessions.
func handshake(t testing.TB, ic, rc *Config, connID uint64) (*Session, *Session, HelloResult) {
	t.Helper()
	resp, err := NewResponder(rc)
	if err != nil {
		t.Fatal(err)
	}
	return handshakeWith(t, ic, resp, rc.Identity.Public, connID, nil, nil)
}

func handshakeWith(t testing.TB, ic *Config, resp *Responder, rpub PublicKey, connID uint64, ticket *Ticket, early []byte) (*Session, *Session, HelloResult) {
	t.Helper()
	ini, err := NewInitiator(ic, rpub, connID)
	if err != nil {
		t.Fatal(err)
	}
	if ticket != nil {
		if err := ini.UseTicket(ticket, early, t0); err != nil {
			t.Fatal(err)
		}
	}
	hello, err := ini.Hello(t0)
	if err != nil {
		t.Fatal(err)
	}
	res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
	if err != nil {
		t.Fatalf("responder: %v", err)
	}
	is, fin, err := ini.HandleResponderHello(res.Reply, t0)
	if err != nil {
		t.Fatalf("initiator: %v", err)
	}
	if err := res.Session.HandleInitiatorFinish(fin); err != nil {
		t.Fatalf("finish: %v", err)
	}
	return is, res.Session, res
}
