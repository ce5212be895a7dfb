package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"testing"

	"github.com/mxp-dataplane/mxp/wire"
	"golang.org/x/crypto/chacha20"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

func specExpand(t *testing.T, secret []byte, label string, n int) []byte {
	t.Helper()
	out := make([]byte, n)
	if _, err := io.ReadFull(hkdf.Expand(sha256.New, secret, []byte("mxp/1 "+label)), out); err != nil {
		t.Fatal(err)
	}
	return out
}

// A protected packet can be opened by following docs/crypto.md alone,
// with library primitives: key schedule labels, header protection and
// nonce, for both suites and across a key update.
func TestPacketProtectionMatchesSpec(t *testing.T) {
	for _, s := range suitesUnderTest() {
		a, b := sessionPair(t, s, SessionConfig{})
		s0 := a.send.secret // phase-0 secret of a's sending direction
		hpKey := specExpand(t, s0[:], "hp", 32)
		secret := s0[:]
		for phase := 0; phase < 3; phase++ {
			pkt, pn, err := a.Seal(make([]byte, 0, 128), wire.PacketFlagAckEliciting|wire.PacketFlagProbe, []byte("spec check payload"))
			if err != nil {
				t.Fatal(err)
			}
			// Header protection per spec.
			sample := pkt[32:48]
			var mask [16]byte
			if s == SuiteAES256GCM {
				blk, _ := aes.NewCipher(hpKey)
				blk.Encrypt(mask[:], sample)
			} else {
				c, _ := chacha20.NewUnauthenticatedCipher(hpKey, sample[4:16])
				c.SetCounter(binary.LittleEndian.Uint32(sample[0:4]))
				c.XORKeyStream(mask[:], mask[:])
			}
			hdr := clone(pkt[:32])
			for i := 0; i < 8; i++ {
				hdr[8+i] ^= mask[i]
			}
			hdr[16] ^= mask[8] & 0xfe
			if got := binary.LittleEndian.Uint64(hdr[8:]); got != pn {
				t.Fatalf("%v: spec unmask gives pn %d, want %d", s, got, pn)
			}
			wantFlags := wire.PacketFlagAckEliciting | wire.PacketFlagProbe
			if phase%2 == 1 {
				wantFlags |= wire.PacketFlagKeyPhase
			}
			if hdr[16] != wantFlags {
				t.Fatalf("%v: spec unmask gives flags %#x, want %#x", s, hdr[16], wantFlags)
			}
			// AEAD per spec.
			key := specExpand(t, secret, "key", 32)
			iv := specExpand(t, secret, "iv", 12)
			var aead cipher.AEAD
			if s == SuiteAES256GCM {
				blk, _ := aes.NewCipher(key)
				aead, _ = cipher.NewGCM(blk)
			} else {
				aead, _ = chacha20poly1305.New(key)
			}
			nonce := specNonce([12]byte(iv), pn)
			pt, err := aead.Open(nil, nonce[:], pkt[32:], hdr)
			if err != nil || string(pt) != "spec check payload" {
				t.Fatalf("%v phase %d: spec open failed: %v", s, phase, err)
			}
			if _, err := b.Open(pkt, t0); err != nil {
				t.Fatal(err)
			}
			a.OnPacketAcked(pn)
			if _, err := a.Open(seal(t, b, "ack"), t0); err != nil {
				t.Fatal(err)
			}
			if err := a.UpdateKeys(); err != nil {
				t.Fatal(err)
			}
			secret = specExpand(t, secret, "ku", 32)
		}
	}
}
