package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mxp-dataplane/mxp/wire"
)

// fuzzFixture is a deterministic set of genuine handshake messages used to
// seed the fuzzers and to give stateful targets something to talk to.
type fuzzFixture struct {
	ic, rc      *Config
	resp        *Responder
	hello       []byte
	reply       []byte
	finish      []byte
	cookieReply []byte
	newTicket   []byte
	ticketBlob  []byte
	helloEarly  []byte
	protected   []byte
}

func newFuzzFixture(t testing.TB) *fuzzFixture {
	t.Helper()
	f := &fuzzFixture{}
	f.ic, f.rc = testPeers(t)
	tk, err := NewTicketKeys(newDetRand(40), t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.rc.TicketKeys, f.rc.Strike = tk, NewStrikeRegister(0)
	f.resp, _ = NewResponder(f.rc)
	ini, _ := NewInitiator(f.ic, f.rc.Identity.Public, 77)
	f.hello = mustHelloTB(t, ini)
	res, err := f.resp.HandleInitiatorHello(clone(f.hello), testAddr, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	f.reply = res.Reply
	is, fin, err := ini.HandleResponderHello(res.Reply, t0)
	if err != nil {
		t.Fatal(err)
	}
	f.finish = fin
	res.Session.HandleInitiatorFinish(fin)
	f.newTicket, _ = res.Session.NewTicket(t0)
	tkt, err := is.HandleNewTicket(f.newTicket, t0)
	if err != nil {
		t.Fatal(err)
	}
	f.ticketBlob = tkt.Blob
	ini2, _ := NewInitiator(f.ic, f.rc.Identity.Public, 78)
	ini2.UseTicket(&tkt, []byte("early data"), t0)
	f.helloEarly = mustHelloTB(t, ini2)
	ini3, _ := NewInitiator(f.ic, f.rc.Identity.Public, 79)
	cr, err := f.resp.HandleInitiatorHello(mustHelloTB(t, ini3), testAddr, t0, true)
	if err != nil {
		t.Fatal(err)
	}
	f.cookieReply = cr.Reply
	f.protected, _, _ = is.Seal(make([]byte, 0, 100), wire.PacketFlagAckEliciting, []byte("payload"))
	return f
}

func mustHelloTB(t testing.TB, i *Initiator) []byte {
	h, err := i.Hello(t0)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// checkTypedErr fails unless err is nil or one of ours.
func checkTypedErr(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if _, ok := err.(*Error); !ok {
		t.Fatalf("untyped error %T %v", err, err)
	}
}

// within reports whether sub is a subslice of b (or empty), using only
// lengths and capacities (sub's backing array ends where b's does).
func within(b, sub []byte) bool {
	if len(sub) == 0 {
		return true
	}
	off := cap(b) - cap(sub)
	return off >= 0 && off+len(sub) <= len(b) && &b[off] == &sub[0]
}

// compactHello strips the zero padding of an InitiatorHello, and
// expandHello puts it back (fixing the length field). The fuzz targets work
// on compact hellos: Go's fuzzer slows to a crawl on inputs that must stay
// above 1200 bytes, and padding carries no information.
func compactHello(t testing.TB, pkt []byte) []byte {
	m, err := parseInitiatorHello(pkt)
	if err != nil {
		t.Fatal(err)
	}
	end := len(m.earlyAAD) + 2 + len(m.early)
	return append(clone(pkt[:end]), pkt[len(pkt)-2*macLen:]...)
}

func expandHello(b []byte) []byte {
	if len(b) < wire.PacketHeaderLen+2*macLen || len(b) >= MinHelloPacket {
		return b
	}
	out := make([]byte, MinHelloPacket)
	copy(out, b[:len(b)-2*macLen])
	copy(out[MinHelloPacket-2*macLen:], b[len(b)-2*macLen:])
	binary.LittleEndian.PutUint16(out[wire.PacketOffsetPayloadLen:], MinHelloPacket-wire.PacketHeaderLen)
	return out
}

func TestCompactHelloRoundTrip(t *testing.T) {
	fx := newFuzzFixture(t)
	for _, h := range [][]byte{fx.hello, fx.helloEarly} {
		c := compactHello(t, h)
		if len(c) >= MinHelloPacket || !bytes.Equal(expandHello(c), h) {
			t.Fatal("compact/expand mismatch")
		}
	}
}

func FuzzParseInitiatorHello(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(compactHello(f, fx.hello))
	f.Add(compactHello(f, fx.helloEarly))
	f.Fuzz(func(t *testing.T, b []byte) {
		b = expandHello(b)
		m, err := parseInitiatorHello(b)
		checkTypedErr(t, err)
		if err != nil {
			return
		}
		if len(b) < MinHelloPacket || len(b) > MaxHelloPacket || len(m.noise) < noiseMsg1Min {
			t.Fatal("size rules not enforced")
		}
		for _, s := range [][]byte{m.noise, m.ticket, m.early, m.mac1, m.mac2, m.earlyAAD, m.mac1Input, m.mac2Input} {
			if !within(b, s) {
				t.Fatal("field outside packet")
			}
		}
		if len(m.mac1) != macLen || len(m.mac2) != macLen || len(m.mac1Input) != len(b)-32 {
			t.Fatal("mac fields")
		}
	})
}

func FuzzParseResponderHello(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.reply)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseResponderHello(b)
		checkTypedErr(t, err)
		if err == nil && (len(m.noise) < noiseMsg2Min || len(b) != wire.PacketHeaderLen+4+len(m.noise)) {
			t.Fatal("length rules")
		}
	})
}

func FuzzParseInitiatorFinish(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.finish)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseInitiatorFinish(b)
		checkTypedErr(t, err)
		if err == nil && len(m.confirm) != 32 {
			t.Fatal("confirm length")
		}
	})
}

func FuzzParseCookieReply(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.cookieReply)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseCookieReply(b)
		checkTypedErr(t, err)
		if err == nil && (len(m.nonce) != cookieNonce || len(m.sealed) != cookieLen+tagLen) {
			t.Fatal("cookie reply fields")
		}
	})
}

func FuzzParseNewTicket(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.newTicket)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseNewTicket(b)
		checkTypedErr(t, err)
		if err == nil && len(m.ticket) != ticketBlobLen {
			t.Fatal("ticket length")
		}
	})
}

func FuzzParseHandshakePayloads(f *testing.F) {
	f.Add(appendHelloPayload(nil, []Suite{SuiteAES256GCM, SuiteChaCha20Poly1305}, true))
	f.Add([]byte{byte(SuiteChaCha20Poly1305), 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parseHelloPayload(b)
		checkTypedErr(t, err)
		if err == nil {
			if p.n > maxSuites {
				t.Fatal("too many suites")
			}
			for _, s := range p.list() {
				if !s.valid() {
					t.Fatal("unknown suite kept")
				}
			}
		}
		r, err := parseResponderPayload(b)
		checkTypedErr(t, err)
		if err == nil && len(b) != 2 {
			t.Fatal("responder payload length")
		}
		_ = r
	})
}

// FuzzResponderHandleHello drives the whole responder path. fixMAC1 lets
// the fuzzer reach the Noise and ticket code behind the mac1 check.
func FuzzResponderHandleHello(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(compactHello(f, fx.hello), false, false)
	f.Add(compactHello(f, fx.helloEarly), true, false)
	f.Add(compactHello(f, fx.hello), true, true)
	f.Fuzz(func(t *testing.T, b []byte, fixMAC1, underLoad bool) {
		b = expandHello(b)
		if fixMAC1 && len(b) >= 32 {
			m := mac(fx.resp.mac1Key[:], b[:len(b)-32])
			copy(b[len(b)-32:], m[:])
		}
		res, err := fx.resp.HandleInitiatorHello(b, testAddr, t0, underLoad)
		checkTypedErr(t, err)
		if err != nil {
			return
		}
		if res.CookieReply != (res.Session == nil) {
			t.Fatal("result shape")
		}
		if len(res.Reply) > AmplificationFactor*len(b) {
			t.Fatal("reply exceeds amplification limit")
		}
	})
}

func FuzzInitiatorHandleResponderHello(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.reply)
	f.Add(fx.cookieReply)
	f.Fuzz(func(t *testing.T, b []byte) {
		ini, _ := NewInitiator(fx.ic, fx.rc.Identity.Public, 77)
		if _, err := ini.Hello(t0); err != nil {
			t.Fatal(err)
		}
		err := ini.HandleCookieReply(clone(b), t0)
		checkTypedErr(t, err)
		s, fin, err := ini.HandleResponderHello(b, t0)
		checkTypedErr(t, err)
		if err == nil && (s == nil || len(fin) != wire.PacketHeaderLen+finishLen) {
			t.Fatal("success without session")
		}
	})
}

// FuzzSessionOpen feeds arbitrary packets to an established session. With
// fixLayout the conn ID and length fields are made consistent so the input
// reaches header protection and the AEAD.
func FuzzSessionOpen(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.protected, false)
	f.Add(fx.protected, true)
	f.Add(make([]byte, 48), true)
	_, s := sessionPair(f, SuiteChaCha20Poly1305, SessionConfig{KeyUpdateThreshold: 2})
	f.Fuzz(func(t *testing.T, b []byte, fixLayout bool) {
		if fixLayout && len(b) >= PacketOverhead && len(b)-PacketOverhead <= MaxPayload {
			binary.LittleEndian.PutUint64(b, s.ConnID())
			b[wire.PacketOffsetFlags] &^= wire.PacketFlagHandshake
			b[wire.PacketOffsetReserved] = 0
			binary.LittleEndian.PutUint16(b[wire.PacketOffsetPayloadLen:], uint16(len(b)-PacketOverhead))
		}
		o, err := s.Open(b, t0)
		checkTypedErr(t, err)
		if err == nil {
			// Forging a packet should be infeasible; any success is a bug.
			t.Fatalf("forged packet accepted: %+v", o)
		}
	})
}

func FuzzTicketOpen(f *testing.F) {
	fx := newFuzzFixture(f)
	f.Add(fx.ticketBlob)
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := fx.rc.TicketKeys.open(b, t0)
		checkTypedErr(t, err)
		if err == nil && !bytes.Equal(b, fx.ticketBlob) {
			t.Fatal("forged ticket accepted")
		}
	})
}

func FuzzParsePublicKey(f *testing.F) {
	id := mustIdentity(f, 1)
	f.Add(id.Public.String())
	f.Add(id.MarshalPrivateText())
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParsePublicKey(s)
		checkTypedErr(t, err)
		if err == nil {
			k2, err := ParsePublicKey(k.String())
			if err != nil || k2 != k {
				t.Fatal("round trip")
			}
		}
		_, err = ParsePrivateText(s)
		checkTypedErr(t, err)
	})
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/<Target>/ seed files from
// the fixture. Run with MXP_WRITE_CORPUS=1; the files are committed.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("MXP_WRITE_CORPUS") == "" {
		t.Skip("set MXP_WRITE_CORPUS=1 to regenerate the committed seed corpora")
	}
	fx := newFuzzFixture(t)
	b := func(v []byte) string { return fmt.Sprintf("[]byte(%q)", v) }
	bo := func(v bool) string { return fmt.Sprintf("bool(%v)", v) }
	truncated := func(v []byte) []byte { return v[:len(v)/2] }
	corpus := map[string][][]string{
		"FuzzParseInitiatorHello":           {{b(compactHello(t, fx.hello))}, {b(compactHello(t, fx.helloEarly))}, {b(truncated(fx.hello))}},
		"FuzzParseResponderHello":           {{b(fx.reply)}, {b(truncated(fx.reply))}},
		"FuzzParseInitiatorFinish":          {{b(fx.finish)}},
		"FuzzParseCookieReply":              {{b(fx.cookieReply)}},
		"FuzzParseNewTicket":                {{b(fx.newTicket)}},
		"FuzzParseHandshakePayloads":        {{b(appendHelloPayload(nil, []Suite{1, 2}, true))}, {b([]byte{2, 1})}},
		"FuzzResponderHandleHello":          {{b(compactHello(t, fx.hello)), bo(false), bo(false)}, {b(compactHello(t, fx.helloEarly)), bo(true), bo(false)}, {b(compactHello(t, fx.hello)), bo(true), bo(true)}},
		"FuzzInitiatorHandleResponderHello": {{b(fx.reply)}, {b(fx.cookieReply)}},
		"FuzzSessionOpen":                   {{b(fx.protected), bo(false)}, {b(fx.protected), bo(true)}},
		"FuzzTicketOpen":                    {{b(fx.ticketBlob)}},
		"FuzzParsePublicKey":                {{fmt.Sprintf("string(%q)", fx.rc.Identity.Public.String())}},
	}
	for name, entries := range corpus {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			content := "go test fuzz v1\n"
			for _, line := range e {
				content += line + "\n"
			}
			sum := sha256.Sum256([]byte(content))
			file := filepath.Join(dir, fmt.Sprintf("seed-%x", sum[:8]))
			if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
