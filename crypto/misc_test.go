package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestErrorsAreTypedAndDescriptive(t *testing.T) {
	e := newError(KindTicket, "ticket expired", errors.New("cause"))
	if !errors.Is(e, ErrTicket) || errors.Is(e, ErrReplay) {
		t.Fatal("Is by kind")
	}
	if msg := e.Error(); !strings.Contains(msg, "Ticket") || !strings.Contains(msg, "ticket expired") || !strings.Contains(msg, "cause") {
		t.Fatalf("message %q", msg)
	}
	if errors.Unwrap(e).Error() != "cause" {
		t.Fatal("unwrap")
	}
	if ErrorKind(200).String() == "" || KindReplay.String() != "Replay" {
		t.Fatal("kind names")
	}
	for k := KindMalformed; k <= KindInvalidArgument; k++ {
		if strings.HasPrefix(k.String(), "ErrorKind(") {
			t.Fatalf("kind %d has no name", k)
		}
	}
}

func TestInitiatorStateErrors(t *testing.T) {
	ic, rc := testPeers(t)
	if _, err := NewInitiator(ic, PublicKey{}, 1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("zero peer: %v", err)
	}
	if _, err := NewResponder(&Config{}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("no identity: %v", err)
	}
	ini, _ := NewInitiator(ic, rc.Identity.Public, 1)
	if _, _, err := ini.HandleResponderHello(make([]byte, 100), t0); !errors.Is(err, ErrState) {
		t.Fatalf("reply before hello: %v", err)
	}
	if err := ini.HandleCookieReply(make([]byte, 100), t0); !errors.Is(err, ErrState) {
		t.Fatalf("cookie before hello: %v", err)
	}
	resp, _ := NewResponder(rc)
	hello := mustHello(t, ini, t0)
	if err := ini.UseTicket(&Ticket{}, nil, t0); !errors.Is(err, ErrState) {
		t.Fatalf("ticket after hello: %v", err)
	}
	// Retransmission returns the same message with the same MACs.
	if again := mustHello(t, ini, t0); string(again) != string(hello) {
		t.Fatal("retransmitted hello differs")
	}
	res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	// A reply for another connection ID is refused.
	other, _ := NewInitiator(ic, rc.Identity.Public, 2)
	other.Hello(t0)
	if _, _, err := other.HandleResponderHello(res.Reply, t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("foreign conn ID: %v", err)
	}
	is, fin, err := ini.HandleResponderHello(res.Reply, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ini.Hello(t0); !errors.Is(err, ErrState) {
		t.Fatalf("hello after completion: %v", err)
	}
	if err := is.HandleInitiatorFinish(fin); !errors.Is(err, ErrState) {
		t.Fatalf("finish on initiator: %v", err)
	}
	if _, err := res.Session.HandleNewTicket([]byte{5, 1}, t0); !errors.Is(err, ErrState) {
		t.Fatalf("ticket on responder: %v", err)
	}
	if _, err := is.HandleNewTicket([]byte{5, 1, 0}, t0); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short NewTicket: %v", err)
	}
	if _, err := res.Session.NewTicket(t0); !errors.Is(err, ErrState) {
		t.Fatalf("ticket without TicketKeys: %v", err)
	}
	if typ, err := HandshakeType(fin); err != nil || typ != MsgInitiatorFinish {
		t.Fatal(typ, err)
	}
	if _, err := HandshakeType(make([]byte, 10)); !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
	if !is.IsInitiator() || res.Session.IsInitiator() || is.NextPacketNumber() != 0 || is.ConnID() != 1 {
		t.Fatal("accessors")
	}
}

func TestTicketKeysRotateAutomatically(t *testing.T) {
	ic, rc := testPeers(t)
	tk, _ := NewTicketKeys(newDetRand(60), t0, time.Hour)
	rc.TicketKeys, rc.Strike = tk, NewStrikeRegister(4)
	resp, _ := NewResponder(rc)
	_, rs, _ := handshakeWith(t, ic, resp, rc.Identity.Public, 1)
	first := tk.cur.id
	if _, err := rs.NewTicket(t0.Add(30 * time.Minute)); err != nil || tk.cur.id != first {
		t.Fatal("rotated too early")
	}
	if _, err := rs.NewTicket(t0.Add(61 * time.Minute)); err != nil || tk.cur.id == first || tk.prev.id != first {
		t.Fatal("no automatic rotation after the period")
	}
	// The strike register forgets expired entries when it needs room.
	r := NewStrikeRegister(2)
	if !r.Use([16]byte{1}, t0.Add(time.Minute), t0) || !r.Use([16]byte{2}, t0.Add(time.Hour), t0) {
		t.Fatal("first uses")
	}
	if r.Use([16]byte{3}, t0.Add(time.Hour), t0) {
		t.Fatal("full register accepted")
	}
	if !r.Use([16]byte{3}, t0.Add(time.Hour), t0.Add(2*time.Minute)) || r.Len() != 2 {
		t.Fatal("expired entry not reclaimed")
	}
	if r.Use([16]byte{2}, t0.Add(time.Hour), t0.Add(3*time.Minute)) {
		t.Fatal("replay accepted")
	}
}

// The shards of a host share one TicketKeys and one StrikeRegister: tickets
// sealed, opened and struck from several goroutines while the keys rotate
// (run with -race; the key ring's reader is a plain deterministic one, not
// safe for concurrent use, so only the ring's lock keeps its reads apart)
// all open under the current or previous key, and each ticket ID is taken
// exactly once.
func TestTicketKeysAndStrikeShared(t *testing.T) {
	tk, err := NewTicketKeys(newDetRand(61), t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	strike := NewStrikeRegister(0)
	const workers, each = 4, 200
	var wg sync.WaitGroup
	var taken atomic.Int64
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				c := ticketContents{suite: SuiteAES256GCM, issued: t0.Unix(), lifetime: 3600}
				if err := tk.newID(&c.id); err != nil { // as Session.NewTicket draws it
					errs <- err
					return
				}
				c.id[0], c.id[1], c.id[2] = byte(w), byte(i), byte(i>>8)
				blob, err := tk.seal(&c, t0)
				if err == nil {
					_, err = tk.open(blob, t0)
				}
				if err != nil {
					errs <- err
					return
				}
				for range 2 { // the second Use of an ID must fail
					if strike.Use(c.id, c.expires(), t0) {
						taken.Add(1)
					}
				}
				if i == each/2 && w == 0 {
					tk.Rotate(t0) // once: every ticket stays under the current or previous key
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := taken.Load(); n != workers*each || strike.Len() != workers*each {
		t.Fatalf("%d first uses, %d remembered; want %d each", n, strike.Len(), workers*each)
	}
}

func TestStaticSecretCacheForget(t *testing.T) {
	c := NewStaticSecretCache(1)
	a, b := mustIdentity(t, 1), mustIdentity(t, 2)
	dh, err := newHandshakeDH(&Config{Identity: a, StaticCache: c}, func() []byte { return b.Public[:] })
	if err != nil {
		t.Fatal(err)
	}
	x, err := dh.DH(a.Private[:], b.Public[:])
	if err != nil {
		t.Fatal(err)
	}
	// Not committed yet: a second computation is another miss.
	dh.DH(a.Private[:], b.Public[:])
	if h, m := c.Stats(); h != 0 || m != 2 {
		t.Fatal("uncommitted value was cached", h, m)
	}
	dh.commit()
	y, _ := dh.DH(a.Private[:], b.Public[:])
	if string(x) != string(y) {
		t.Fatal("cached value differs")
	}
	if h, m := c.Stats(); h != 1 || m != 2 {
		t.Fatal(h, m)
	}
	c.Forget(a.Public, b.Public)
	dh.DH(a.Private[:], b.Public[:])
	if _, m := c.Stats(); m != 3 {
		t.Fatal("forget did not drop the entry")
	}
	// A low-order point is refused, not cached.
	if _, err := dh.DH(a.Private[:], make([]byte, 32)); err == nil {
		t.Fatal("all-zero public key accepted")
	}
}

// TestExpanderMatchesExpand: the reusable expander gives hkdf.Expand's
// bytes for every label and length up to 32, in any order of use.
func TestExpanderMatchesExpand(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	e := newExpander(secret)
	labels := []string{labelKey, labelIV, labelHP, labelKeyUpdate, labelI2R, labelR2I, labelFinished, labelResumption, labelKey}
	for _, n := range []int{32, 12, 1, 31} {
		for _, l := range labels {
			got := make([]byte, n)
			e.expandTo(got, l)
			if want := expand(secret, l, nil, n); !bytes.Equal(got, want) {
				t.Fatalf("label %q, %d bytes: expander disagrees with HKDF-Expand", l, n)
			}
		}
	}
}

// Key generation and Diffie-Hellman (CIRCL) agree with crypto/ecdh on
// random keys, and with the RFC 7748 §6.1 example.
func TestX25519MatchesStdlib(t *testing.T) {
	for i := range 200 {
		a, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		want, err := a.ECDH(b.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		ka, err := newX25519Key(a.Bytes())
		if err != nil || !bytes.Equal(ka.pub[:], a.PublicKey().Bytes()) {
			t.Fatalf("key %d: public key %x (%v), crypto/ecdh gives %x", i, ka.pub, err, a.PublicKey().Bytes())
		}
		got, err := x25519DH(ka, b.PublicKey().Bytes())
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("key %d: %x (%v), crypto/ecdh gives %x", i, got, err, want)
		}
	}
	// RFC 7748 §6.1: Alice's private key, Bob's public key, their shared secret.
	alicePriv, _ := hex.DecodeString("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
	bobPub, _ := hex.DecodeString("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
	want, _ := hex.DecodeString("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
	k, err := newX25519Key(alicePriv)
	if err != nil {
		t.Fatal(err)
	}
	if alicePub, _ := hex.DecodeString("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"); !bytes.Equal(k.pub[:], alicePub) {
		t.Fatalf("RFC 7748 example: Alice's public key %x", k.pub)
	}
	if got, err := x25519DH(k, bobPub); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("RFC 7748 example: %x %v, want %x", got, err, want)
	}
	// A low-order point is refused.
	if _, err := x25519DH(k, make([]byte, 32)); err == nil {
		t.Fatal("all-zero public key accepted")
	}

}
