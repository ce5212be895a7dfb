package crypto

import (
	"encoding/binary"
	"math/bits"
)

// chachaHead computes the first 16 bytes of the ChaCha20 block (RFC 8439
// §2.3) for key, counter and nonce. Header protection needs only these, and
// a dedicated function avoids setting up a full stream cipher per packet.
// It is checked against golang.org/x/crypto/chacha20 and the RFC vectors.
func chachaHead(out *[16]byte, key *[8]uint32, counter, n0, n1, n2 uint32) {
	const (
		c0 = 0x61707865
		c1 = 0x3320646e
		c2 = 0x79622d32
		c3 = 0x6b206574
	)
	x0, x1, x2, x3 := uint32(c0), uint32(c1), uint32(c2), uint32(c3)
	x4, x5, x6, x7 := key[0], key[1], key[2], key[3]
	x8, x9, x10, x11 := key[4], key[5], key[6], key[7]
	x12, x13, x14, x15 := counter, n0, n1, n2
	for i := 0; i < 10; i++ {
		// column round
		x0, x4, x8, x12 = quarterRound(x0, x4, x8, x12)
		x1, x5, x9, x13 = quarterRound(x1, x5, x9, x13)
		x2, x6, x10, x14 = quarterRound(x2, x6, x10, x14)
		x3, x7, x11, x15 = quarterRound(x3, x7, x11, x15)
		// diagonal round
		x0, x5, x10, x15 = quarterRound(x0, x5, x10, x15)
		x1, x6, x11, x12 = quarterRound(x1, x6, x11, x12)
		x2, x7, x8, x13 = quarterRound(x2, x7, x8, x13)
		x3, x4, x9, x14 = quarterRound(x3, x4, x9, x14)
	}
	binary.LittleEndian.PutUint32(out[0:], x0+c0)
	binary.LittleEndian.PutUint32(out[4:], x1+c1)
	binary.LittleEndian.PutUint32(out[8:], x2+c2)
	binary.LittleEndian.PutUint32(out[12:], x3+c3)
}

func quarterRound(a, b, c, d uint32) (uint32, uint32, uint32, uint32) {
	a += b
	d = bits.RotateLeft32(d^a, 16)
	c += d
	b = bits.RotateLeft32(b^c, 12)
	a += b
	d = bits.RotateLeft32(d^a, 8)
	c += d
	b = bits.RotateLeft32(b^c, 7)
	return a, b, c, d
}
