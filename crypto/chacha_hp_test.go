package crypto

import (
	"bytes"
	"encoding/binary"
	"testing"

	"golang.org/x/crypto/chacha20"
	"pgregory.net/rapid"
)

// chachaHead agrees with x/crypto's ChaCha20 keystream for any key, counter
// (including 2^32-1) and nonce.
func TestChaChaHeadMatchesXCrypto(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		key := rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "key")
		nonce := rapid.SliceOfN(rapid.Byte(), 12, 12).Draw(t, "nonce")
		counter := rapid.OneOf(rapid.Uint32(), rapid.Just(uint32(0xffffffff)), rapid.Just(uint32(0))).Draw(t, "counter")
		c, err := chacha20.NewUnauthenticatedCipher(key, nonce)
		if err != nil {
			t.Fatal(err)
		}
		c.SetCounter(counter)
		want := make([]byte, 16)
		c.XORKeyStream(want, want)
		var kw [8]uint32
		for i := range kw {
			kw[i] = binary.LittleEndian.Uint32(key[4*i:])
		}
		var got [16]byte
		chachaHead(&got, &kw, counter, binary.LittleEndian.Uint32(nonce[0:]), binary.LittleEndian.Uint32(nonce[4:]), binary.LittleEndian.Uint32(nonce[8:]))
		if !bytes.Equal(got[:], want) {
			t.Fatalf("got %x want %x", got, want)
		}
	})
}

func BenchmarkHeaderProtectionMask(b *testing.B) {
	for _, s := range suitesUnderTest() {
		b.Run(s.String(), func(b *testing.B) {
			hp, _ := newHeaderProtector(s, make([]byte, 32))
			sample := make([]byte, 16)
			var m [16]byte
			for i := 0; i < b.N; i++ {
				sample[0] = byte(i)
				hp.mask(&m, sample)
			}
		})
	}
}
