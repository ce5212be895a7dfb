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
	return handshakeWith(t, ic, resp, rc.Identity.Public, connID)
}

func handshakeWith(t testing.TB, ic *Config, resp *Responder, rpub PublicKey, connID uint64) (*Session, *Session, HelloResult) {
	t.Helper()
	r := runHandshake(t, ic, resp, rpub, connID, true)
	return r.is, r.res.Session, r.res
}

// handshakeRun is what one handshake put on the wire, and its sessions.
type handshakeRun struct {
	hello, fin []byte
	res        HelloResult // the responder's reply and session
	is         *Session    // the initiator's
}

// runHandshake runs a handshake in memory at t0: InitiatorHello,
// ResponderHello and, if finish, the InitiatorFinish.
func runHandshake(t testing.TB, ic *Config, resp *Responder, rpub PublicKey, connID uint64, finish bool) handshakeRun {
	t.Helper()
	ini, err := NewInitiator(ic, rpub, connID)
	if err != nil {
		t.Fatal(err)
	}
	var r handshakeRun
	if r.hello, err = ini.Hello(t0); err != nil {
		t.Fatal(err)
	}
	if r.res, err = resp.HandleInitiatorHello(r.hello, testAddr, t0, false); err != nil {
		t.Fatalf("responder: %v", err)
	}
	if r.is, r.fin, err = ini.HandleResponderHello(r.res.Reply, t0); err != nil {
		t.Fatalf("initiator: %v", err)
	}
	if finish {
		if err := r.res.Session.HandleInitiatorFinish(r.fin); err != nil {
			t.Fatalf("finish: %v", err)
		}
	}
	return r
}
