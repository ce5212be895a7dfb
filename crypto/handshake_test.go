package crypto

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestHandshakeInMemory(t *testing.T) {
	ic, rc := testPeers(t)
	is, rs, _ := handshake(t, ic, rc, 42)
	if is.Suite() != rs.Suite() || !is.Suite().valid() {
		t.Fatalf("suites %v %v", is.Suite(), rs.Suite())
	}
	if is.HandshakeHash() != rs.HandshakeHash() {
		t.Fatal("handshake hashes differ")
	}
	if !is.Peer().Equal(rc.Identity.Public) || !rs.Peer().Equal(ic.Identity.Public) {
		t.Fatal("peers not authenticated as expected")
	}
	if !rs.Confirmed() || !is.Confirmed() {
		t.Fatal("not confirmed")
	}
	// Both directions carry data.
	buf := make([]byte, 2048)
	pkt, pn, err := is.Seal(buf, 0x02, []byte("hello responder"))
	if err != nil || pn != 0 {
		t.Fatal(err, pn)
	}
	o, err := rs.Open(pkt, t0)
	if err != nil || string(o.Payload) != "hello responder" || o.PacketNumber != 0 || o.Flags != 0x02 {
		t.Fatalf("open: %v %+v", err, o)
	}
	pkt, _, err = rs.Seal(buf, 0x04, []byte("hello initiator"))
	if err != nil {
		t.Fatal(err)
	}
	o, err = is.Open(pkt, t0)
	if err != nil || !bytes.Equal(o.Payload, []byte("hello initiator")) {
		t.Fatalf("open: %v %+v", err, o)
	}
}

func TestHandshakeWrongStaticKeyRefused(t *testing.T) {
	ic, rc := testPeers(t)
	resp, err := NewResponder(rc)
	if err != nil {
		t.Fatal(err)
	}
	other := mustIdentity(t, 99)
	ini, err := NewInitiator(ic, other.Public, 7)
	if err != nil {
		t.Fatal(err)
	}
	hello, err := ini.Hello(t0)
	if err != nil {
		t.Fatal(err)
	}
	// mac1 is keyed with the intended responder's key: refused before any DH.
	if _, err := resp.HandleInitiatorHello(hello, testAddr, t0, false); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong responder key: %v", err)
	}
	// Even with a mac1 recomputed for the real responder, Noise refuses.
	m1 := mac(resp.mac1Key[:], hello[:len(hello)-32])
	copy(hello[len(hello)-32:], m1[:])
	if _, err := resp.HandleInitiatorHello(hello, testAddr, t0, false); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("wrong responder key past mac1: %v", err)
	}
}

func TestAllowListRefusesUnknownInitiator(t *testing.T) {
	ic, rc := testPeers(t)
	allowed := mustIdentity(t, 50).Public
	var asked []PublicKey
	rc.Authorize = func(p PublicKey) bool {
		asked = append(asked, p)
		return p.Equal(allowed)
	}
	resp, _ := NewResponder(rc)
	ini, _ := NewInitiator(ic, rc.Identity.Public, 1)
	hello, _ := ini.Hello(t0)
	res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
	if !errors.Is(err, ErrPeerRefused) || res.Reply != nil || res.Session != nil {
		t.Fatalf("unknown initiator: %v %+v", err, res)
	}
	if len(asked) != 1 || !asked[0].Equal(ic.Identity.Public) {
		t.Fatalf("hook saw %v", asked)
	}
	// The allowed key gets through.
	ic.Identity = mustIdentity(t, 50)
	if _, _, res := handshake(t, ic, rc, 2); res.Session == nil {
		t.Fatal("allowed initiator refused")
	}
}

// An active attacker who substitutes its own ephemeral key in either hello is
// detected: the Noise transcript and the DH results no longer match.
func TestMITMSubstitutedEphemeralDetected(t *testing.T) {
	ic, rc := testPeers(t)
	resp, _ := NewResponder(rc)
	mallory := mustIdentity(t, 66) // a valid curve point the attacker controls

	// Message one: replace e (first 32 bytes of the Noise message, at offset
	// 32+4 of the packet) and fix mac1 so the packet reaches Noise.
	ini, _ := NewInitiator(ic, rc.Identity.Public, 9)
	hello, _ := ini.Hello(t0)
	copy(hello[36:68], mallory.Public[:])
	m1 := mac(resp.mac1Key[:], hello[:len(hello)-32])
	copy(hello[len(hello)-32:], m1[:])
	if _, err := resp.HandleInitiatorHello(hello, testAddr, t0, false); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("substituted initiator ephemeral: %v", err)
	}

	// Message two: replace the responder's e.
	ini, _ = NewInitiator(ic, rc.Identity.Public, 10)
	hello, _ = ini.Hello(t0)
	res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	forged := clone(res.Reply)
	copy(forged[36:68], mallory.Public[:])
	if _, _, err := ini.HandleResponderHello(forged, t0); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("substituted responder ephemeral: %v", err)
	}
	// The forgery did not spoil the initiator: the genuine reply completes.
	is, fin, err := ini.HandleResponderHello(res.Reply, t0)
	if err != nil {
		t.Fatalf("genuine reply after forgery: %v", err)
	}
	if err := res.Session.HandleInitiatorFinish(fin); err != nil {
		t.Fatal(err)
	}
	if _, err := res.Session.Open(seal(t, is, "ok"), t0); err != nil {
		t.Fatal(err)
	}

	// A man in the middle with its own static key cannot stand in for the
	// responder: the initiator encrypts to the real responder's key.
	mc := &Config{Identity: mallory, Rand: newDetRand(7)}
	mresp, _ := NewResponder(mc)
	ini, _ = NewInitiator(ic, rc.Identity.Public, 11)
	hello, _ = ini.Hello(t0)
	m1 = mac(mresp.mac1Key[:], hello[:len(hello)-32])
	copy(hello[len(hello)-32:], m1[:])
	if _, err := mresp.HandleInitiatorHello(hello, testAddr, t0, false); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("attacker responder decrypted the hello: %v", err)
	}
}

func TestHandshakeTamperingRejected(t *testing.T) {
	ic, rc := testPeers(t)
	resp, _ := NewResponder(rc)
	ini, _ := NewInitiator(ic, rc.Identity.Public, 12)
	hello, _ := ini.Hello(t0)
	// Any change to the hello breaks mac1 or the layout.
	for _, i := range []int{0, 8, 17, 20, 33, 36, 70, 100, 150, len(hello) - 40, len(hello) - 20} {
		h := clone(hello)
		h[i] ^= 0x40
		if _, err := resp.HandleInitiatorHello(h, testAddr, t0, false); err == nil {
			t.Fatalf("tampered hello byte %d accepted", i)
		}
	}
	// Short hellos are refused (anti-amplification floor).
	if _, err := resp.HandleInitiatorHello(hello[:MinHelloPacket-1], testAddr, t0, false); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short hello: %v", err)
	}
	res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := range res.Reply {
		r := clone(res.Reply)
		r[i] ^= 1
		if _, _, err := ini.HandleResponderHello(r, t0); err == nil {
			t.Fatalf("tampered ResponderHello byte %d accepted", i)
		}
	}
	_, fin, err := ini.HandleResponderHello(res.Reply, t0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range fin {
		f := clone(fin)
		f[i] ^= 1
		if err := res.Session.HandleInitiatorFinish(f); err == nil {
			t.Fatalf("tampered InitiatorFinish byte %d accepted", i)
		}
	}
	if res.Session.Confirmed() {
		t.Fatal("confirmed by a tampered finish")
	}
	if err := res.Session.HandleInitiatorFinish(fin); err != nil || !res.Session.Confirmed() {
		t.Fatalf("genuine finish: %v", err)
	}
}

func TestSuiteNegotiation(t *testing.T) {
	cases := []struct {
		name         string
		iSuites      []Suite
		iAES         AESPolicy
		rSuites      []Suite
		rAES         AESPolicy
		want         Suite
		wantNoCommon bool
	}{
		{"both hardware", nil, AESHardware, nil, AESHardware, SuiteAES256GCM, false},
		{"initiator software", nil, AESSoftware, nil, AESHardware, SuiteChaCha20Poly1305, false},
		{"responder software", nil, AESHardware, nil, AESSoftware, SuiteChaCha20Poly1305, false},
		{"chacha only", []Suite{SuiteChaCha20Poly1305}, AESHardware, nil, AESHardware, SuiteChaCha20Poly1305, false},
		{"aes only, no hw", []Suite{SuiteAES256GCM}, AESSoftware, nil, AESSoftware, SuiteAES256GCM, false},
		{"disjoint", []Suite{SuiteAES256GCM}, AESHardware, []Suite{SuiteChaCha20Poly1305}, AESHardware, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ic, rc := testPeers(t)
			ic.Suites, ic.AES, rc.Suites, rc.AES = c.iSuites, c.iAES, c.rSuites, c.rAES
			if c.wantNoCommon {
				resp, _ := NewResponder(rc)
				ini, _ := NewInitiator(ic, rc.Identity.Public, 1)
				hello, _ := ini.Hello(t0)
				if _, err := resp.HandleInitiatorHello(hello, testAddr, t0, false); !errors.Is(err, ErrNoCommonSuite) {
					t.Fatalf("got %v", err)
				}
				return
			}
			is, rs, _ := handshake(t, ic, rc, 3)
			if is.Suite() != c.want || rs.Suite() != c.want {
				t.Fatalf("negotiated %v/%v, want %v", is.Suite(), rs.Suite(), c.want)
			}
		})
	}
	if _, err := NewInitiator(&Config{Identity: mustIdentity(t, 1), Suites: []Suite{9}}, mustIdentity(t, 2).Public, 1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unknown suite accepted: %v", err)
	}
}

// Before the initiator proves it received the ResponderHello, the responder
// sends at most 3x what it received from the address.
func TestAmplificationLimit(t *testing.T) {
	ic, rc := testPeers(t)
	resp, _ := NewResponder(rc)
	ini, _ := NewInitiator(ic, rc.Identity.Public, 13)
	hello, _ := ini.Hello(t0)
	if len(hello) < MinHelloPacket {
		t.Fatalf("hello not padded: %d", len(hello))
	}
	res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	rs := res.Session
	if len(res.Reply) > AmplificationFactor*len(hello) {
		t.Fatalf("reply %d > 3x hello %d", len(res.Reply), len(hello))
	}
	budget := uint64(AmplificationFactor*len(hello) - len(res.Reply))
	if got := rs.Amplification().Budget(); got != budget {
		t.Fatalf("budget %d want %d", got, budget)
	}
	sent := len(res.Reply)
	var err2 error
	for i := 0; i < 100; i++ {
		var pkt []byte
		pkt, _, err2 = rs.Seal(make([]byte, 0, 1300), 0, make([]byte, 1000))
		if err2 != nil {
			break
		}
		sent += len(pkt)
	}
	if !errors.Is(err2, ErrAmplification) {
		t.Fatalf("limit not enforced: %v", err2)
	}
	if sent > AmplificationFactor*len(hello) {
		t.Fatalf("sent %d > 3x %d", sent, len(hello))
	}
	// Bytes received from the address (even unauthenticated ones) raise the budget.
	rs.Open(make([]byte, 1000), t0)
	if _, _, err := rs.Seal(make([]byte, 0, 1300), 0, make([]byte, 1000)); err != nil {
		t.Fatalf("after receiving more: %v", err)
	}
	// InitiatorFinish validates the address: no limit afterwards.
	_, fin, err := ini.HandleResponderHello(res.Reply, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.HandleInitiatorFinish(fin); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, _, err := rs.Seal(make([]byte, 0, 1300), 0, make([]byte, 1200)); err != nil {
			t.Fatalf("after validation: %v", err)
		}
	}
	// A CookieReply is far below the limit too.
	ini2, _ := NewInitiator(ic, rc.Identity.Public, 14)
	h2, _ := ini2.Hello(t0)
	cr, err := resp.HandleInitiatorHello(h2, testAddr, t0, true)
	if err != nil || !cr.CookieReply || len(cr.Reply) > len(h2) {
		t.Fatalf("cookie reply %v %d", err, len(cr.Reply))
	}
}

func TestCookiePathUnderLoad(t *testing.T) {
	ic, rc := testPeers(t)
	resp, _ := NewResponder(rc)
	ini, _ := NewInitiator(ic, rc.Identity.Public, 15)
	hello, _ := ini.Hello(t0)

	// Under load, a hello without a cookie gets a CookieReply and no state.
	res, err := resp.HandleInitiatorHello(hello, testAddr, t0, true)
	if err != nil || !res.CookieReply || res.Session != nil {
		t.Fatalf("under load: %v %+v", err, res)
	}
	if typ, err := HandshakeType(res.Reply); err != nil || typ != MsgCookieReply {
		t.Fatalf("reply type %d %v", typ, err)
	}
	// A flood of hellos costs no Diffie-Hellman: each is answered from the
	// stateless cookie path (mac1 + one MAC and one small AEAD).
	for i := 0; i < 100; i++ {
		r, err := resp.HandleInitiatorHello(hello, testAddr, t0, true)
		if err != nil || !r.CookieReply {
			t.Fatal("flood not answered with a cookie")
		}
	}
	// A CookieReply for someone else's hello (wrong mac1 AAD) is rejected.
	other, _ := NewInitiator(ic, rc.Identity.Public, 15)
	other.Hello(t0)
	if err := other.HandleCookieReply(res.Reply, t0); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("foreign cookie: %v", err)
	}
	if err := ini.HandleCookieReply(res.Reply, t0); err != nil {
		t.Fatal(err)
	}
	hello2, _ := ini.Hello(t0.Add(time.Second))
	res2, err := resp.HandleInitiatorHello(hello2, testAddr, t0.Add(time.Second), true)
	if err != nil || res2.CookieReply || res2.Session == nil {
		t.Fatalf("with cookie: %v %+v", err, res2)
	}
	if !res2.Session.Amplification().Validated() {
		t.Fatal("a valid cookie should validate the address")
	}
	if _, fin, err := ini.HandleResponderHello(res2.Reply, t0); err != nil {
		t.Fatal(err)
	} else if err := res2.Session.HandleInitiatorFinish(fin); err != nil {
		t.Fatal(err)
	}
	// The cookie is bound to the source address.
	ini3, _ := NewInitiator(ic, rc.Identity.Public, 16)
	ini3.Hello(t0)
	r3, _ := resp.HandleInitiatorHello(mustHello(t, ini3, t0), testAddr, t0, true)
	if err := ini3.HandleCookieReply(r3.Reply, t0); err != nil {
		t.Fatal(err)
	}
	spoofed := netip.MustParseAddrPort("198.51.100.7:40000")
	if r, err := resp.HandleInitiatorHello(mustHello(t, ini3, t0), spoofed, t0, true); err != nil || !r.CookieReply {
		t.Fatalf("cookie accepted from another address: %v", err)
	}
	// The secret rotates: a cookie survives one rotation, not two.
	later := t0.Add(CookieRotation + time.Second)
	if r, err := resp.HandleInitiatorHello(mustHello(t, ini3, t0), testAddr, later, true); err != nil || r.CookieReply {
		t.Fatalf("cookie after one rotation: %v", err)
	}
	muchLater := later.Add(CookieRotation + time.Second)
	if r, err := resp.HandleInitiatorHello(mustHello(t, ini3, t0), testAddr, muchLater, true); err != nil || !r.CookieReply {
		t.Fatalf("cookie after two rotations: %v", err)
	}
	// Not under load, no cookie is needed; a hello without one leaves the
	// address unvalidated, a hello with a valid one validates it.
	ini4, _ := NewInitiator(ic, rc.Identity.Public, 17)
	if r, err := resp.HandleInitiatorHello(mustHello(t, ini4, t0), testAddr, t0, false); err != nil || r.CookieReply || r.Session.Amplification().Validated() {
		t.Fatalf("no load: %v", err)
	}
	if r, err := resp.HandleInitiatorHello(mustHello(t, ini3, muchLater), testAddr, muchLater, false); err != nil || r.CookieReply || r.Session.Amplification().Validated() {
		t.Fatalf("stale cookie, no load: %v", err)
	}
	r5, _ := resp.HandleInitiatorHello(mustHello(t, ini3, muchLater), testAddr, muchLater, true)
	if err := ini3.HandleCookieReply(r5.Reply, muchLater); err != nil {
		t.Fatal(err)
	}
	if r, err := resp.HandleInitiatorHello(mustHello(t, ini3, muchLater), testAddr, muchLater, false); err != nil || !r.Session.Amplification().Validated() {
		t.Fatalf("fresh cookie, no load: %v", err)
	}
}

func mustHello(t *testing.T, i *Initiator, now time.Time) []byte {
	t.Helper()
	h, err := i.Hello(now)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestTicketResumptionWith0RTT(t *testing.T) {
	ic, rc := testPeers(t)
	tk, err := NewTicketKeys(newDetRand(30), t0, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rc.TicketKeys, rc.Strike = tk, NewStrikeRegister(0)
	resp, _ := NewResponder(rc)
	is, rs, _ := handshakeWith(t, ic, resp, rc.Identity.Public, 20)
	msg, err := rs.NewTicket(t0)
	if err != nil {
		t.Fatal(err)
	}
	ticket, err := is.HandleNewTicket(msg, t0)
	if err != nil {
		t.Fatal(err)
	}
	if ticket.Expires != t0.Add(time.Hour) || !ticket.Peer.Equal(rc.Identity.Public) {
		t.Fatalf("ticket %+v", ticket)
	}

	// Resume with 0-RTT data.
	early := []byte("GET /status (idempotent)")
	now := t0.Add(time.Minute)
	ini, _ := NewInitiator(ic, rc.Identity.Public, 21)
	if err := ini.UseTicket(&ticket, early, now); err != nil {
		t.Fatal(err)
	}
	hello := mustHello(t, ini, now)
	res, err := resp.HandleInitiatorHello(clone(hello), testAddr, now, false)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(res.EarlyData, early) || !res.Session.EarlyDataAccepted() {
		t.Fatalf("0-RTT not accepted: %q", res.EarlyData)
	}
	// The resumed session's own ticket may go before the Finish (with the
	// answers to the 0-RTT data); a session without accepted 0-RTT data
	// issues none until confirmed.
	early2, err := res.Session.NewTicket(now)
	if err != nil {
		t.Fatal("ticket of a session that accepted 0-RTT data, before the Finish:", err)
	}
	ini3, _ := NewInitiator(ic, rc.Identity.Public, 22)
	plain, err := resp.HandleInitiatorHello(mustHello(t, ini3, now), testAddr, now, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := plain.Session.NewTicket(now); !errors.Is(err, ErrState) {
		t.Fatalf("ticket of an unconfirmed session without 0-RTT data: %v, want ErrState", err)
	}
	is2, fin, err := ini.HandleResponderHello(res.Reply, now)
	if err != nil || !is2.EarlyDataAccepted() {
		t.Fatalf("initiator: %v accepted=%v", err, is2 != nil && is2.EarlyDataAccepted())
	}
	if _, err := is2.HandleNewTicket(early2, now); err != nil {
		t.Fatal("the early ticket:", err)
	}
	if err := res.Session.HandleInitiatorFinish(fin); err != nil {
		t.Fatal(err)
	}

	// A replay of the whole hello: the handshake may proceed (the attacker
	// cannot finish it) but the 0-RTT data is not delivered again.
	rep, err := resp.HandleInitiatorHello(clone(hello), testAddr, now.Add(time.Second), false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.EarlyData != nil || rep.Session.EarlyDataAccepted() || !rep.EarlyRefused {
		t.Fatalf("replayed 0-RTT data accepted, or not said refused (EarlyRefused %v)", rep.EarlyRefused)
	}
	if res.EarlyRefused || plain.EarlyRefused {
		t.Fatal("EarlyRefused for data taken, or for a hello without any")
	}
	// Same ticket reused in a new hello: also rejected (single use).
	ini2, _ := NewInitiator(ic, rc.Identity.Public, 22)
	ini2.UseTicket(&ticket, early, now)
	r2, err := resp.HandleInitiatorHello(mustHello(t, ini2, now), testAddr, now, false)
	if err != nil || r2.EarlyData != nil {
		t.Fatalf("reused ticket: %v %q", err, r2.EarlyData)
	}
	is3, _, err := ini2.HandleResponderHello(r2.Reply, now)
	if err != nil || is3.EarlyDataAccepted() {
		t.Fatalf("initiator must learn 0-RTT was rejected: %v", err)
	}
}

func TestTicketRejections(t *testing.T) {
	ic, rc := testPeers(t)
	tk, _ := NewTicketKeys(newDetRand(31), t0, time.Hour)
	rc.TicketKeys, rc.Strike = tk, NewStrikeRegister(0)
	resp, _ := NewResponder(rc)
	is, rs, _ := handshakeWith(t, ic, resp, rc.Identity.Public, 30)
	issue := func() Ticket {
		m, err := rs.NewTicket(t0)
		if err != nil {
			t.Fatal(err)
		}
		tkt, err := is.HandleNewTicket(m, t0)
		if err != nil {
			t.Fatal(err)
		}
		return tkt
	}
	try := func(ic *Config, tkt Ticket, now time.Time) []byte {
		t.Helper()
		ini, _ := NewInitiator(ic, rc.Identity.Public, 31)
		tkt.Expires = now.Add(time.Hour) // bypass the initiator's own check
		if err := ini.UseTicket(&tkt, []byte("early"), now); err != nil {
			t.Fatal(err)
		}
		res, err := resp.HandleInitiatorHello(mustHello(t, ini, now), testAddr, now, false)
		if err != nil {
			t.Fatal(err)
		}
		return res.EarlyData
	}
	// Expired (lifetime one hour).
	if try(ic, issue(), t0.Add(61*time.Minute)) != nil {
		t.Fatal("expired ticket accepted")
	}
	// Issued under a key that has since rotated out twice.
	old := issue()
	tk.Rotate(t0)
	tk.Rotate(t0)
	if try(ic, old, t0.Add(time.Minute)) != nil {
		t.Fatal("ticket under a retired key accepted")
	}
	// Under the previous key: still fine.
	prev := issue()
	tk.Rotate(t0)
	if try(ic, prev, t0.Add(time.Minute)) == nil {
		t.Fatal("ticket under the previous key rejected")
	}
	// Presented by another initiator identity.
	thief := &Config{Identity: mustIdentity(t, 77), Rand: newDetRand(78)}
	if try(thief, issue(), t0.Add(time.Minute)) != nil {
		t.Fatal("ticket accepted from a different initiator")
	}
	// Tampered ticket blob.
	bad := issue()
	bad.Blob = clone(bad.Blob)
	bad.Blob[50] ^= 1
	if try(ic, bad, t0.Add(time.Minute)) != nil {
		t.Fatal("tampered ticket accepted")
	}
	// Wrong resumption secret (the blob alone is not enough).
	stolen := issue()
	stolen.Secret[0] ^= 1
	if try(ic, stolen, t0.Add(time.Minute)) != nil {
		t.Fatal("ticket with wrong secret accepted")
	}
	// Full strike register: 0-RTT refused, handshake unaffected.
	rc.Strike = NewStrikeRegister(1)
	if try(ic, issue(), t0.Add(time.Minute)) == nil {
		t.Fatal("first 0-RTT refused")
	}
	if try(ic, issue(), t0.Add(time.Minute)) != nil {
		t.Fatal("0-RTT accepted with a full strike register")
	}
	// No strike register: no 0-RTT at all.
	rc.Strike = nil
	if try(ic, issue(), t0.Add(time.Minute)) != nil {
		t.Fatal("0-RTT accepted without replay protection")
	}
	// Initiator-side checks.
	ini, _ := NewInitiator(ic, rc.Identity.Public, 32)
	exp := issue()
	if err := ini.UseTicket(&exp, nil, t0.Add(2*time.Hour)); !errors.Is(err, ErrTicket) {
		t.Fatalf("expired ticket used: %v", err)
	}
	other := issue()
	other.Peer = mustIdentity(t, 5).Public
	if err := ini.UseTicket(&other, nil, t0); !errors.Is(err, ErrTicket) {
		t.Fatalf("ticket for another responder used: %v", err)
	}
	if _, err := is.NewTicket(t0); !errors.Is(err, ErrState) {
		t.Fatalf("initiator issued a ticket: %v", err)
	}
	big := issue()
	if err := ini.UseTicket(&big, make([]byte, 2000), t0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("oversized 0-RTT: %v", err)
	}
	// The largest 0-RTT data that fits still produces a valid hello.
	// header 32 | type, version | u16 + Noise msg 1 (payload: 2 suites = 4 bytes)
	// | u16 + ticket | u16 + tag | mac1, mac2
	fixed := 32 + 2 + 2 + noiseMsg1Min + 4 + 2 + ticketBlobLen + 2 + tagLen + 2*macLen
	maxEarly := MaxHelloPacket - fixed
	if err := ini.UseTicket(&big, make([]byte, maxEarly+1), t0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("one byte too many: %v", err)
	}
	if err := ini.UseTicket(&big, make([]byte, maxEarly), t0); err != nil {
		t.Fatal(err)
	}
	if h, err := ini.Hello(t0); err != nil || len(h) != MaxHelloPacket {
		t.Fatalf("max 0-RTT hello: %v %d", err, len(h))
	}
}

// With a StaticSecretCache, the second handshake between the same peers
// reuses the static-static DH on both sides.
func TestStaticSecretCache(t *testing.T) {
	ic, rc := testPeers(t)
	ic.StaticCache, rc.StaticCache = NewStaticSecretCache(0), NewStaticSecretCache(0)
	resp, _ := NewResponder(rc)
	a1, b1, _ := handshakeWith(t, ic, resp, rc.Identity.Public, 1)
	a2, b2, _ := handshakeWith(t, ic, resp, rc.Identity.Public, 2)
	for _, c := range []*StaticSecretCache{ic.StaticCache, rc.StaticCache} {
		if h, m := c.Stats(); h != 1 || m != 1 {
			t.Fatalf("cache hits %d misses %d, want 1 and 1", h, m)
		}
	}
	// Sessions still work and differ per connection (fresh ephemerals).
	if a1.HandshakeHash() == a2.HandshakeHash() {
		t.Fatal("two handshakes gave the same transcript")
	}
	if _, err := b2.Open(seal(t, a2, "x"), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := b1.Open(seal(t, a2, "x"), t0); err == nil {
		t.Fatal("keys shared across connections")
	}
	// A different initiator is a different pair.
	other := &Config{Identity: mustIdentity(t, 88), Rand: newDetRand(89), StaticCache: ic.StaticCache}
	handshakeWith(t, other, resp, rc.Identity.Public, 3)
	if h, m := rc.StaticCache.Stats(); h != 1 || m != 2 {
		t.Fatalf("responder cache hits %d misses %d", h, m)
	}
	// A refused initiator never enters the cache.
	rc.Authorize = func(p PublicKey) bool { return !p.Equal(mustIdentity(t, 90).Public) }
	refused := &Config{Identity: mustIdentity(t, 90), Rand: newDetRand(91)}
	for i := 0; i < 2; i++ {
		ini, _ := NewInitiator(refused, rc.Identity.Public, 4)
		if _, err := resp.HandleInitiatorHello(mustHello(t, ini, t0), testAddr, t0, false); !errors.Is(err, ErrPeerRefused) {
			t.Fatal(err)
		}
	}
	if h, m := rc.StaticCache.Stats(); h != 1 || m != 4 {
		t.Fatalf("refused peer cached: hits %d misses %d", h, m)
	}
}
