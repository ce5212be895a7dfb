package crypto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/wire"
)

func suitesUnderTest() []Suite { return []Suite{SuiteChaCha20Poly1305, SuiteAES256GCM} }

// sessionPair returns established sessions using suite s and session policy sc.
func sessionPair(t testing.TB, s Suite, sc SessionConfig) (*Session, *Session) {
	t.Helper()
	ic, rc := testPeers(t)
	ic.Suites, rc.Suites = []Suite{s}, []Suite{s}
	ic.Session, rc.Session = sc, sc
	is, rs, _ := handshake(t, ic, rc, 0x1122334455667788)
	if is.Suite() != s {
		t.Fatalf("negotiated %v, want %v", is.Suite(), s)
	}
	return is, rs
}

func seal(t testing.TB, s *Session, payload string) []byte {
	t.Helper()
	pkt, _, err := s.Seal(make([]byte, 0, len(payload)+PacketOverhead), wire.PacketFlagAckEliciting, []byte(payload))
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func TestSealOpenBothSuites(t *testing.T) {
	for _, s := range suitesUnderTest() {
		t.Run(s.String(), func(t *testing.T) {
			a, b := sessionPair(t, s, SessionConfig{})
			for i := 0; i < 100; i++ {
				msg := fmt.Sprintf("packet %d %s", i, bytes.Repeat([]byte{'x'}, i))
				pkt := seal(t, a, msg)
				if len(pkt) != len(msg)+PacketOverhead {
					t.Fatalf("len %d", len(pkt))
				}
				o, err := b.Open(pkt, t0)
				if err != nil || string(o.Payload) != msg || o.PacketNumber != uint64(i) {
					t.Fatalf("packet %d: %v %q pn=%d", i, err, o.Payload, o.PacketNumber)
				}
			}
			// Empty payloads are valid (the tag provides the HP sample).
			o, err := b.Open(seal(t, a, ""), t0)
			if err != nil || len(o.Payload) != 0 {
				t.Fatalf("empty: %v", err)
			}
		})
	}
}

func TestSealInPlaceAndArguments(t *testing.T) {
	a, b := sessionPair(t, SuiteChaCha20Poly1305, SessionConfig{})
	buf := make([]byte, 100+PacketOverhead)
	copy(buf[32:], bytes.Repeat([]byte{7}, 100))
	pkt, _, err := a.Seal(buf, 0, buf[32:132])
	if err != nil {
		t.Fatal(err)
	}
	o, err := b.Open(pkt, t0)
	if err != nil || !bytes.Equal(o.Payload, bytes.Repeat([]byte{7}, 100)) {
		t.Fatalf("in-place: %v", err)
	}
	if _, _, err := a.Seal(make([]byte, 0, 10), 0, []byte("too long for buffer")); !errors.Is(err, ErrBufferTooSmall) {
		t.Fatalf("small buffer: %v", err)
	}
	for _, f := range []uint8{wire.PacketFlagHandshake, wire.PacketFlagKeyPhase, 0x80} {
		if _, _, err := a.Seal(buf, f, nil); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("flag %#x: %v", f, err)
		}
	}
	if _, _, err := a.Seal(make([]byte, 0, 70000), 0, make([]byte, MaxPayload+1)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("oversize: %v", err)
	}
}

// Every single-bit change anywhere in a packet (header, ciphertext, tag) is
// rejected.
func TestTamperedPacketRejected(t *testing.T) {
	for _, s := range suitesUnderTest() {
		t.Run(s.String(), func(t *testing.T) {
			a, b := sessionPair(t, s, SessionConfig{})
			orig := seal(t, a, "some payload bytes that matter")
			for i := 0; i < len(orig); i++ {
				for bit := 0; bit < 8; bit++ {
					p := clone(orig)
					p[i] ^= 1 << bit
					if _, err := b.Open(p, t0); err == nil {
						t.Fatalf("flip byte %d bit %d accepted", i, bit)
					} else if !errors.Is(err, ErrAuthFailed) && !errors.Is(err, ErrMalformed) {
						t.Fatalf("flip byte %d bit %d: unexpected error %v", i, bit, err)
					}
				}
			}
			// Truncations and extensions.
			for _, p := range [][]byte{orig[:len(orig)-1], append(clone(orig), 0), orig[:PacketOverhead-1], nil} {
				if _, err := b.Open(clone(p), t0); err == nil {
					t.Fatalf("length %d accepted", len(p))
				}
			}
			// The original still opens: failures did not disturb the session.
			if _, err := b.Open(clone(orig), t0); err != nil {
				t.Fatalf("original after tampering: %v", err)
			}
		})
	}
}

func TestHeaderProtectionHidesPacketNumberAndFlags(t *testing.T) {
	for _, s := range suitesUnderTest() {
		t.Run(s.String(), func(t *testing.T) {
			a, _ := sessionPair(t, s, SessionConfig{})
			clearPN, clearFlags := 0, 0
			const n = 512
			for i := 0; i < n; i++ {
				pkt, pn, err := a.Seal(make([]byte, 0, 64), wire.PacketFlagAckEliciting, []byte("0123456789abcdef"))
				if err != nil {
					t.Fatal(err)
				}
				var h wire.PacketHeader
				if err := wire.ParsePacketHeader(pkt, &h); err != nil {
					t.Fatal(err)
				}
				if h.PacketNumber == pn {
					clearPN++
				}
				if h.Flags&^wire.PacketFlagHandshake == wire.PacketFlagAckEliciting {
					clearFlags++
				}
				if h.Flags&wire.PacketFlagHandshake != 0 {
					t.Fatal("HANDSHAKE bit set on a protected packet")
				}
				if h.ConnID != a.ConnID() || h.PayloadLen != 16 {
					t.Fatal("unprotected fields wrong")
				}
			}
			// A random 64-bit mask leaves the PN readable with negligible
			// probability; the 7 masked flag bits match by chance ~1/128.
			if clearPN != 0 || clearFlags > n/16 {
				t.Fatalf("header protection ineffective: %d clear PNs, %d clear flags of %d", clearPN, clearFlags, n)
			}
		})
	}
}

func TestReplayInsideAndOutsideWindow(t *testing.T) {
	a, b := sessionPair(t, SuiteChaCha20Poly1305, SessionConfig{})
	var pkts [][]byte
	for i := 0; i < ReplayWindowSize+100; i++ {
		pkts = append(pkts, seal(t, a, fmt.Sprint(i)))
	}
	// Deliver 0..9, then replay 5: duplicate inside the window.
	for i := 0; i < 10; i++ {
		if _, err := b.Open(clone(pkts[i]), t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Open(clone(pkts[5]), t0); !errors.Is(err, ErrReplay) {
		t.Fatalf("duplicate inside window: %v", err)
	}
	// Jump ahead to the last packet; 10..99 are now more than 2048 behind.
	last := len(pkts) - 1
	if _, err := b.Open(clone(pkts[last]), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(clone(pkts[20]), t0); !errors.Is(err, ErrTooOld) {
		t.Fatalf("outside window: %v", err)
	}
	if _, err := b.Open(clone(pkts[5]), t0); !errors.Is(err, ErrTooOld) {
		t.Fatalf("old duplicate: %v", err)
	}
	// Just inside the window: accepted once, then a duplicate.
	edge := last - (ReplayWindowSize - 1)
	if _, err := b.Open(clone(pkts[edge]), t0); err != nil {
		t.Fatalf("window edge: %v", err)
	}
	if _, err := b.Open(clone(pkts[edge]), t0); !errors.Is(err, ErrReplay) {
		t.Fatalf("window edge duplicate: %v", err)
	}
	if _, err := b.Open(clone(pkts[edge-1]), t0); !errors.Is(err, ErrTooOld) {
		t.Fatalf("just outside window: %v", err)
	}
	// Replay detection runs only after authentication: a forged packet with
	// a fresh packet number does not advance the window.
	forged := clone(pkts[last-1])
	forged[len(forged)-1] ^= 1
	if _, err := b.Open(forged, t0); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("forged: %v", err)
	}
	if _, err := b.Open(clone(pkts[last-1]), t0); err != nil {
		t.Fatalf("genuine after forgery: %v", err)
	}
}

func TestReorderingAccepted(t *testing.T) {
	for _, s := range suitesUnderTest() {
		a, b := sessionPair(t, s, SessionConfig{})
		const n = 1500
		pkts := make([][]byte, n)
		for i := range pkts {
			pkts[i] = seal(t, a, fmt.Sprint(i))
		}
		r := rand.New(rand.NewPCG(1, 2))
		order := r.Perm(n)
		// Keep the shuffle within the window so every packet is acceptable.
		for _, i := range order {
			o, err := b.Open(clone(pkts[i]), t0)
			if err != nil {
				t.Fatalf("%v: packet %d: %v", s, i, err)
			}
			if o.PacketNumber != uint64(i) || string(o.Payload) != fmt.Sprint(i) {
				t.Fatalf("%v: packet %d decoded as %d %q", s, i, o.PacketNumber, o.Payload)
			}
		}
		for _, i := range order[:50] {
			if _, err := b.Open(clone(pkts[i]), t0); !errors.Is(err, ErrReplay) {
				t.Fatalf("second delivery of %d: %v", i, err)
			}
		}
	}
}

// The full 64-bit packet number is carried under the mask, so the receiver
// recovers it exactly across the 2^32 boundary (where a 32-bit packet
// number would wrap), with reordering, and up to the last packet number.
func TestPacketNumberRecoveryAcrossBoundaries(t *testing.T) {
	for _, start := range []uint64{1<<32 - 5, 1<<40 - 3, MaxPacketNumber - 9} {
		a, b := sessionPair(t, SuiteAES256GCM, SessionConfig{})
		a.nextPN = start
		var pkts [][]byte
		var pns []uint64
		for i := 0; i < 10; i++ {
			pkt, pn, err := a.Seal(make([]byte, 0, 64), 0, []byte{byte(i)})
			if err != nil {
				t.Fatal(err)
			}
			pkts, pns = append(pkts, pkt), append(pns, pn)
		}
		for _, i := range []int{3, 9, 0, 1, 8, 2, 7, 4, 6, 5} {
			o, err := b.Open(clone(pkts[i]), t0)
			if err != nil || o.PacketNumber != pns[i] || o.Payload[0] != byte(i) {
				t.Fatalf("start %d pkt %d: %v pn=%d want %d", start, i, err, o.PacketNumber, pns[i])
			}
		}
		if start == MaxPacketNumber-9 {
			if _, _, err := a.Seal(make([]byte, 0, 64), 0, nil); !errors.Is(err, ErrExhausted) {
				t.Fatalf("past MaxPacketNumber: %v", err)
			}
		}
	}
}

// deliver opens pkt (a copy) at to and reports the acknowledgment back to
// from, as the transport would when the ACK arrives.
func deliver(t testing.TB, from, to *Session, pkt []byte, now time.Time) (Opened, error) {
	t.Helper()
	o, err := to.Open(clone(pkt), now)
	if err == nil {
		from.OnPacketAcked(o.PacketNumber)
	}
	return o, err
}

func TestKeyUpdateBothDirectionsWithPacketsInFlight(t *testing.T) {
	for _, s := range suitesUnderTest() {
		t.Run(s.String(), func(t *testing.T) {
			const threshold = 10
			a, b := sessionPair(t, s, SessionConfig{KeyUpdateThreshold: threshold, KeyUpdateGrace: time.Second})
			now := t0
			var inflightAB, inflightBA [][]byte
			// Phase 0 traffic both ways; keep some packets in flight.
			for i := 0; i < threshold; i++ {
				inflightAB = append(inflightAB, seal(t, a, fmt.Sprint("a", i)))
				inflightBA = append(inflightBA, seal(t, b, fmt.Sprint("b", i)))
			}
			for i := 0; i < 5; i++ {
				if _, err := deliver(t, a, b, inflightAB[i], now); err != nil {
					t.Fatal(err)
				}
				if _, err := deliver(t, b, a, inflightBA[i], now); err != nil {
					t.Fatal(err)
				}
			}
			// Both cross the threshold at the same time: the updates cross.
			pa := seal(t, a, "a phase 1")
			pb := seal(t, b, "b phase 1")
			if sp, _ := a.KeyPhase(); sp != 1 {
				t.Fatalf("a send phase %d", sp)
			}
			if sp, _ := b.KeyPhase(); sp != 1 {
				t.Fatalf("b send phase %d", sp)
			}
			ob, err := deliver(t, a, b, pa, now)
			if err != nil || ob.Flags&wire.PacketFlagKeyPhase == 0 {
				t.Fatalf("b open phase 1: %v flags %#x", err, ob.Flags)
			}
			if _, err := deliver(t, b, a, pb, now); err != nil {
				t.Fatalf("a open phase 1: %v", err)
			}
			// The in-flight phase-0 packets arrive late, inside the grace period.
			now = now.Add(500 * time.Millisecond)
			for _, p := range inflightAB[5:] {
				if _, err := deliver(t, a, b, p, now); err != nil {
					t.Fatalf("late phase-0 packet a->b: %v", err)
				}
			}
			for _, p := range inflightBA[5:7] {
				if _, err := deliver(t, b, a, p, now); err != nil {
					t.Fatalf("late phase-0 packet b->a: %v", err)
				}
			}
			// After the grace period, phase-0 packets are refused.
			now = now.Add(time.Second)
			if _, err := a.Open(clone(inflightBA[7]), now); !errors.Is(err, ErrKeyPhase) {
				t.Fatalf("phase-0 packet after grace: %v", err)
			}

			// One-sided update: a requests, b follows on first receipt.
			if err := a.UpdateKeys(); err != nil {
				t.Fatal(err)
			}
			if err := a.UpdateKeys(); !errors.Is(err, ErrState) {
				t.Fatalf("second update before the peer acknowledged: %v", err)
			}
			p2 := seal(t, a, "a phase 2")
			if _, err := deliver(t, a, b, p2, now); err != nil {
				t.Fatal(err)
			}
			if sp, rp := b.KeyPhase(); sp != 2 || rp != 2 {
				t.Fatalf("b did not follow: send %d recv %d", sp, rp)
			}
			if _, err := deliver(t, b, a, seal(t, b, "b phase 2"), now); err != nil {
				t.Fatal(err)
			}
			if sp, rp := a.KeyPhase(); sp != 2 || rp != 2 {
				t.Fatalf("a phases %d %d", sp, rp)
			}
			// Many more updates driven by the threshold alone, with a packet in
			// flight across each one.
			var held []byte
			for i := 0; i < 10*threshold; i++ {
				p := seal(t, a, "x")
				if held != nil {
					if _, err := deliver(t, a, b, held, now); err != nil {
						t.Fatalf("a->b held %d: %v", i, err)
					}
				}
				held = p
				if _, err := deliver(t, b, a, seal(t, b, "y"), now); err != nil {
					t.Fatalf("b->a %d: %v", i, err)
				}
			}
			if sp, _ := a.KeyPhase(); sp < 8 {
				t.Fatalf("expected many updates, phase %d", sp)
			}
		})
	}
}

// Without acknowledgments from the peer a sender cannot update keys, and it
// never uses a key beyond the hard limit: it stops instead.
func TestKeyUsageHardLimit(t *testing.T) {
	a, _ := sessionPair(t, SuiteChaCha20Poly1305, SessionConfig{KeyUpdateThreshold: 4})
	sent := 0
	var err error
	for ; sent < 100; sent++ {
		if _, _, err = a.Seal(make([]byte, 0, 64), 0, nil); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrExhausted) || sent != 8 {
		t.Fatalf("sent %d then %v", sent, err)
	}
	if err := a.UpdateKeys(); !errors.Is(err, ErrState) {
		t.Fatalf("update without ack: %v", err)
	}
}

// specNonce is the nonce docs/crypto.md specifies, computed independently
// of the implementation: iv XOR (0^32 || pn big-endian).
func specNonce(iv [ivLen]byte, pn uint64) [ivLen]byte {
	var be [8]byte
	binary.BigEndian.PutUint64(be[:], pn)
	for i := 0; i < 8; i++ {
		iv[4+i] ^= be[i]
	}
	return iv
}

// checkSealedWith verifies that pkt was sealed with exactly (key of keys,
// specNonce(iv, pn)) by opening a copy with the raw AEAD.
func checkSealedWith(t *testing.T, s *Session, keys *phaseKeys, pkt []byte, pn uint64) {
	t.Helper()
	p := clone(pkt)
	var m [16]byte
	s.sendHP.mask(&m, p[32:48])
	applyMask(p[:32], &m)
	if got := binary.LittleEndian.Uint64(p[8:16]); got != pn {
		t.Fatalf("unmasked pn %d, want %d", got, pn)
	}
	nonce := specNonce(keys.iv, pn)
	if _, err := keys.aead.Open(nil, nonce[:], p[32:], p[:32]); err != nil {
		t.Fatalf("packet %d was not sealed under the specified nonce", pn)
	}
}

// Every (key, nonce) pair used is recorded; the nonce is checked against
// the specification by decrypting with it, so the test does not trust the
// implementation's own nonce function.
func TestNonceNeverReused(t *testing.T) {
	for _, s := range suitesUnderTest() {
		type use struct {
			key   [32]byte
			nonce [ivLen]byte
		}
		seen := map[use]uint64{}
		record := func(a *Session, pkt []byte, pn uint64) {
			t.Helper()
			checkSealedWith(t, a, &a.send, pkt, pn)
			u := use{key: a.send.secret, nonce: specNonce(a.send.iv, pn)}
			if prev, dup := seen[u]; dup {
				t.Fatalf("%v: (key, nonce) reused by packets %d and %d", s, prev, pn)
			}
			seen[u] = pn
		}
		// Many key updates, random loss and peer-initiated updates, starting
		// at a high packet number so every nonce byte is exercised.
		a, b := sessionPair(t, s, SessionConfig{KeyUpdateThreshold: 7})
		a.nextPN = 1<<40 - 1000
		r := rand.New(rand.NewPCG(3, 4))
		for i := 0; i < 3000; i++ {
			pkt, pn, err := a.Seal(make([]byte, 0, 64), 0, []byte{1, 2, 3})
			if err != nil {
				t.Fatal(err)
			}
			record(a, pkt, pn)
			if r.IntN(3) > 0 { // sometimes drop packets; updates still proceed
				if _, err := deliver(t, a, b, pkt, t0); err != nil {
					t.Fatal(err)
				}
			}
			if r.IntN(50) == 0 {
				_ = b.UpdateKeys()
			}
			if r.IntN(2) == 0 {
				if _, err := deliver(t, b, a, seal(t, b, "ack"), t0); err != nil {
					t.Fatal(err)
				}
			}
		}
		if sp, _ := a.KeyPhase(); sp < 100 {
			t.Fatalf("%v: too few key updates exercised: %d", s, sp)
		}
		// One key for more than 2^16 packets: nonces differ in the high bytes too.
		a, _ = sessionPair(t, s, SessionConfig{KeyUpdateThreshold: 1 << 20})
		buf := make([]byte, 0, 64)
		for i := 0; i < 1<<16+100; i++ {
			pkt, pn, err := a.Seal(buf, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			record(a, pkt, pn)
		}
	}
}

func TestIntegrityLimit(t *testing.T) {
	a, b := sessionPair(t, SuiteChaCha20Poly1305, SessionConfig{})
	b.integrityLim = 3
	good := seal(t, a, "x")
	for i := 0; i < 3; i++ {
		p := clone(good)
		p[40] ^= 1
		if _, err := b.Open(p, t0); !errors.Is(err, ErrAuthFailed) {
			t.Fatal(err)
		}
	}
	if _, err := b.Open(good, t0); !errors.Is(err, ErrIntegrityLimit) {
		t.Fatalf("after limit: %v", err)
	}
}

func makeBatch(n, size int) []BatchPacket {
	pkts := make([]BatchPacket, n)
	for i := range pkts {
		pkts[i].Buf = make([]byte, size+PacketOverhead)
		pkts[i].Len = size
		pkts[i].Flags = wire.PacketFlagAckEliciting
		for j := 0; j < size; j++ {
			pkts[i].Buf[32+j] = byte(i + j)
		}
	}
	return pkts
}

func TestBatchRoundTripAndZeroAlloc(t *testing.T) {
	for _, s := range suitesUnderTest() {
		t.Run(s.String(), func(t *testing.T) {
			a, b := sessionPair(t, s, SessionConfig{})
			pkts := makeBatch(64, 1200)
			n, err := a.SealBatch(pkts)
			if err != nil || n != 64 {
				t.Fatal(n, err)
			}
			if ok := b.OpenBatch(pkts, t0); ok != 64 {
				t.Fatalf("opened %d", ok)
			}
			for i := range pkts {
				if pkts[i].Err != nil || pkts[i].PN != uint64(i) || len(pkts[i].Payload) != 1200 || pkts[i].Payload[5] != byte(i+5) {
					t.Fatalf("packet %d: %+v", i, pkts[i].Err)
				}
			}
			// Replaying the batch: every packet fails with ErrReplay... but the
			// buffers were decrypted in place, so reseal fresh ones first.
			sealAllocs := testing.AllocsPerRun(20, func() {
				for i := range pkts {
					pkts[i].Buf = pkts[i].Buf[:cap(pkts[i].Buf)]
				}
				if _, err := a.SealBatch(pkts); err != nil {
					t.Fatal(err)
				}
			})
			openAllocs := testing.AllocsPerRun(20, func() {
				for i := range pkts {
					pkts[i].Buf = pkts[i].Buf[:cap(pkts[i].Buf)]
				}
				if _, err := a.SealBatch(pkts); err != nil {
					t.Fatal(err)
				}
				if ok := b.OpenBatch(pkts, t0); ok != len(pkts) {
					t.Fatalf("opened %d", ok)
				}
			})
			if sealAllocs != 0 || openAllocs != 0 {
				t.Fatalf("allocations: seal %v, seal+open %v", sealAllocs, openAllocs)
			}
			// Failure paths do not allocate either.
			bad := makeBatch(4, 100)
			if _, err := a.SealBatch(bad); err != nil {
				t.Fatal(err)
			}
			for i := range bad {
				bad[i].Buf[40] ^= 1
			}
			failAllocs := testing.AllocsPerRun(20, func() {
				if ok := b.OpenBatch(bad, t0); ok != 0 {
					t.Fatal("forged packet accepted")
				}
			})
			if failAllocs != 0 {
				t.Fatalf("failing open allocates %v", failAllocs)
			}
		})
	}
}

func TestSessionClose(t *testing.T) {
	a, b := sessionPair(t, SuiteAES256GCM, SessionConfig{})
	p := seal(t, a, "x")
	a.Close()
	b.Close()
	if _, _, err := a.Seal(make([]byte, 0, 64), 0, nil); !errors.Is(err, ErrState) {
		t.Fatalf("seal after close: %v", err)
	}
	if _, err := b.Open(p, t0); !errors.Is(err, ErrState) {
		t.Fatalf("open after close: %v", err)
	}
	if a.send.secret != [32]byte{} || b.recvCur.secret != [32]byte{} {
		t.Fatal("secrets not wiped")
	}
}
