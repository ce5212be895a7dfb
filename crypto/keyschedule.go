package crypto

import (
	"crypto/sha256"
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
	s.i2r = expand32(master, labelI2R, nil)
	s.r2i = expand32(master, labelR2I, nil)
	s.finished = expand32(master, labelFinished, nil)
	s.resumption = expand32(master, labelResumption, nil)
	clear(master)
	clear(ikm)
	return s
}
