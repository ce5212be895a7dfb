package crypto

import (
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"io"

	"golang.org/x/crypto/hkdf"
)

// labelPrefix starts every HKDF info string of the MXP key schedule.
const labelPrefix = "mxp/1 "

// Key schedule labels (docs/crypto.md lists them with their use).
const (
	labelI2R        = "i2r traffic"
	labelR2I        = "r2i traffic"
	labelFinished   = "finished"
	labelResumption = "resumption"
	labelKey        = "key"
	labelIV         = "iv"
	labelHP         = "hp"
	labelKeyUpdate  = "ku"
	labelTicket     = "ticket"
	label0RTT       = "0rtt"
)

// expand is HKDF-Expand-SHA256(secret, "mxp/1 " || label || context, n).
func expand(secret []byte, label string, context []byte, n int) []byte {
	info := make([]byte, 0, len(labelPrefix)+len(label)+len(context))
	info = append(info, labelPrefix...)
	info = append(info, label...)
	info = append(info, context...)
	out := make([]byte, n)
	if _, err := io.ReadFull(hkdf.Expand(sha256.New, secret, info), out); err != nil {
		panic("mxp/crypto: hkdf expand: " + err.Error()) // only for n > 255*32
	}
	return out
}

func expand32(secret []byte, label string, context []byte) (k [32]byte) {
	copy(k[:], expand(secret, label, context, 32))
	return k
}

// expander computes HKDF-Expand-SHA256(secret, "mxp/1 " || label, n) for
// several labels of one secret and n <= 32: the output is then the first n
// bytes of T(1) = HMAC(secret, info || 0x01), so one keyed HMAC, reset
// between labels, serves them all (hkdf.Expand would key a new one per
// label). Same bytes as expand (TestExpanderMatchesExpand).
type expander struct {
	h   hash.Hash
	buf []byte
}

func newExpander(secret []byte) *expander {
	return &expander{h: hmac.New(sha256.New, secret), buf: make([]byte, 0, 64)}
}

// expandTo writes the first len(out) (<= 32) bytes of the label's output.
func (e *expander) expandTo(out []byte, label string) {
	e.h.Reset()
	info := append(append(append(e.buf[:0], labelPrefix...), label...), 1)
	e.h.Write(info)
	sum := e.h.Sum(e.buf[:0])
	copy(out, sum)
	clear(sum)
}

func (e *expander) expand32(label string) (k [32]byte) {
	e.expandTo(k[:], label)
	return k
}

// wipe forgets the secret's keyed state as far as hash.Hash allows.
func (e *expander) wipe() {
	e.h.Reset()
	clear(e.buf[:cap(e.buf)])
}

// handshakeSecrets is everything the handshake hands to the session.
type handshakeSecrets struct {
	hash       [32]byte // Noise handshake hash h after message two
	i2r, r2i   [32]byte // phase-0 traffic secrets per direction
	finished   [32]byte // MAC key of InitiatorFinish
	resumption [32]byte // resumption master secret (tickets)
}

// deriveHandshakeSecrets: master = HKDF-Extract(salt = h, ikm = k1 || k2),
// where k1, k2 are the two keys of the Noise Split() and h the handshake hash.
func deriveHandshakeSecrets(h []byte, k1, k2 [32]byte) handshakeSecrets {
	var s handshakeSecrets
	copy(s.hash[:], h)
	ikm := make([]byte, 0, 64)
	ikm = append(ikm, k1[:]...)
	ikm = append(ikm, k2[:]...)
	master := hkdf.Extract(sha256.New, ikm, h)
	e := newExpander(master)
	s.i2r = e.expand32(labelI2R)
	s.r2i = e.expand32(labelR2I)
	s.finished = e.expand32(labelFinished)
	s.resumption = e.expand32(labelResumption)
	e.wipe()
	clear(master)
	clear(ikm)
	return s
}
