package crypto

import (
	"crypto/subtle"
	"io"
	"net/netip"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
)

// CookieRotation is how often the responder's cookie secret changes. A
// cookie is accepted under the current and the previous secret, so it lives
// between one and two rotations; initiators use one for at most
// CookieLifetime.
const (
	CookieRotation = 2 * time.Minute
	CookieLifetime = 2 * time.Minute
)

// mac computes keyed BLAKE2s-128 of the concatenated inputs.
func mac(key []byte, parts ...[]byte) (out [macLen]byte) {
	h, err := blake2s.New128(key)
	if err != nil {
		panic("mxp/crypto: blake2s: " + err.Error()) // keys are 16 or 32 bytes
	}
	for _, p := range parts {
		h.Write(p)
	}
	h.Sum(out[:0])
	return out
}

// hashKey is BLAKE2s-256(label || pub): the mac1 and cookie keys, which
// anyone who knows the responder's public key can compute.
func hashKey(label string, pub PublicKey) [32]byte {
	h, _ := blake2s.New256(nil)
	h.Write([]byte(label))
	h.Write(pub[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

const (
	labelMAC1   = "mxp/1 mac1"
	labelCookie = "mxp/1 cookie"
)

// addrBytes is the canonical 18-byte form of an address: IPv6 (IPv4-mapped
// for IPv4) then the port, little-endian.
func addrBytes(a netip.AddrPort) [18]byte {
	var b [18]byte
	ip := a.Addr().As16()
	copy(b[:16], ip[:])
	b[16] = byte(a.Port())
	b[17] = byte(a.Port() >> 8)
	return b
}

// cookieJar holds the responder's rotating cookie secret. A cookie is
// MAC(secret, source address), so checking one needs no per-initiator state.
// It is not safe for concurrent use.
type cookieJar struct {
	rng       io.Reader
	secret    [32]byte
	prev      [32]byte
	havePrev  bool
	rotatedAt time.Time
	started   bool
}

// newCookieJar makes a jar drawing secrets from rng (crypto/rand if nil).
func newCookieJar(rng io.Reader) *cookieJar {
	return &cookieJar{rng: randOrDefault(rng)}
}

func (j *cookieJar) rotate(now time.Time) error {
	if j.started && now.Sub(j.rotatedAt) < CookieRotation {
		return nil
	}
	var fresh [32]byte
	if _, err := io.ReadFull(j.rng, fresh[:]); err != nil {
		return newError(KindInvalidArgument, "cookie secret randomness", err)
	}
	// A rotation that skipped a whole period also retires the previous one.
	j.havePrev = j.started && now.Sub(j.rotatedAt) < 2*CookieRotation
	j.prev = j.secret
	j.secret = fresh
	j.rotatedAt = now
	j.started = true
	return nil
}

func (j *cookieJar) cookie(addr netip.AddrPort, now time.Time) ([cookieLen]byte, error) {
	if err := j.rotate(now); err != nil {
		return [cookieLen]byte{}, err
	}
	a := addrBytes(addr)
	return mac(j.secret[:], a[:]), nil
}

// validMAC2 checks mac2 against cookies of the current and previous secret.
func (j *cookieJar) validMAC2(addr netip.AddrPort, input, mac2 []byte, now time.Time) bool {
	if err := j.rotate(now); err != nil {
		return false
	}
	a := addrBytes(addr)
	c := mac(j.secret[:], a[:])
	m := mac(c[:], input)
	if subtle.ConstantTimeCompare(m[:], mac2) == 1 {
		return true
	}
	if j.havePrev {
		c = mac(j.prev[:], a[:])
		m = mac(c[:], input)
		return subtle.ConstantTimeCompare(m[:], mac2) == 1
	}
	return false
}

// sealCookie encrypts a cookie for the initiator: XChaCha20-Poly1305 under
// key, AAD = the mac1 of the InitiatorHello being answered.
func sealCookie(dst []byte, key [32]byte, nonce []byte, cookie [cookieLen]byte, mac1 []byte) []byte {
	a, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		panic(err)
	}
	return a.Seal(dst, nonce, cookie[:], mac1)
}

func openCookie(key [32]byte, nonce, sealed, mac1 []byte) ([cookieLen]byte, error) {
	var c [cookieLen]byte
	a, err := chacha20poly1305.NewX(key[:])
	if err != nil {
		panic(err)
	}
	out, err := a.Open(c[:0], nonce, sealed, mac1)
	if err != nil || len(out) != cookieLen {
		return c, ErrAuthFailed
	}
	return c, nil
}
