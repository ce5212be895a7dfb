package crypto

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"runtime"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/cpu"
)

// Suite is a packet protection cipher suite. Its numeric value is the code
// carried in the handshake.
type Suite uint8

const (
	// SuiteChaCha20Poly1305: RFC 8439 AEAD, ChaCha20 header protection.
	SuiteChaCha20Poly1305 Suite = 0x01
	// SuiteAES256GCM: AES-256-GCM AEAD, AES-256-ECB header protection.
	SuiteAES256GCM Suite = 0x02
)

func (s Suite) String() string {
	switch s {
	case SuiteChaCha20Poly1305:
		return "ChaCha20-Poly1305"
	case SuiteAES256GCM:
		return "AES-256-GCM"
	}
	return "Suite(" + itoa(uint64(s)) + ")"
}

func (s Suite) valid() bool { return s == SuiteChaCha20Poly1305 || s == SuiteAES256GCM }

const (
	keyLen = 32 // both suites use 256-bit keys
	ivLen  = 12
	tagLen = 16
	// sampleLen is the ciphertext sample used for header protection.
	sampleLen = 16
)

// HardwareAES reports whether this CPU has AES and carry-less multiply
// instructions, so that AES-GCM is both fast and constant-time.
func HardwareAES() bool {
	switch runtime.GOARCH {
	case "amd64", "386":
		return cpu.X86.HasAES && cpu.X86.HasPCLMULQDQ
	case "arm64":
		return cpu.ARM64.HasAES && cpu.ARM64.HasPMULL
	case "s390x":
		return cpu.S390X.HasAES && cpu.S390X.HasGHASH
	case "ppc64le", "ppc64":
		return true // POWER8+ (Go's minimum) has vcipher and vpmsum
	}
	return false
}

// AESPolicy says how an endpoint describes its AES hardware support in the
// handshake.
type AESPolicy uint8

const (
	// AESAuto detects hardware AES with golang.org/x/sys/cpu.
	AESAuto AESPolicy = iota
	// AESHardware claims hardware AES (for tests and deployments that know).
	AESHardware
	// AESSoftware claims no hardware AES, so ChaCha20-Poly1305 is preferred.
	AESSoftware
)

func (p AESPolicy) hardware() bool {
	switch p {
	case AESHardware:
		return true
	case AESSoftware:
		return false
	}
	return HardwareAES()
}

// negotiateSuite is the responder's choice: AES-256-GCM when both ends offer
// it and both have hardware AES, otherwise ChaCha20-Poly1305 when both offer
// it, otherwise whatever single suite they share.
func negotiateSuite(offered []Suite, peerHWAES bool, local []Suite, localHWAES bool) (Suite, bool) {
	has := func(list []Suite, s Suite) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	bothAES := has(offered, SuiteAES256GCM) && has(local, SuiteAES256GCM)
	bothChaCha := has(offered, SuiteChaCha20Poly1305) && has(local, SuiteChaCha20Poly1305)
	switch {
	case bothAES && peerHWAES && localHWAES:
		return SuiteAES256GCM, true
	case bothChaCha:
		return SuiteChaCha20Poly1305, true
	case bothAES:
		return SuiteAES256GCM, true
	}
	return 0, false
}

// newAEAD returns the packet AEAD of suite s under key.
func newAEAD(s Suite, key []byte) (cipher.AEAD, error) {
	switch s {
	case SuiteAES256GCM:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(b)
	case SuiteChaCha20Poly1305:
		return chacha20poly1305.New(key)
	}
	return nil, ErrNoCommonSuite
}

// headerProtector computes the header protection mask from a 16-byte
// ciphertext sample: AES-256 of the sample (AES suite) or the first ChaCha20
// keystream block with counter = sample[0:4] LE and nonce = sample[4:16]
// (ChaCha suite), as QUIC does (RFC 9001 §5.4).
type headerProtector struct {
	suite Suite
	block cipher.Block
	key   [8]uint32 // ChaCha20 key words
}

func newHeaderProtector(s Suite, key []byte) (headerProtector, error) {
	h := headerProtector{suite: s}
	for i := range h.key {
		h.key[i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	if s == SuiteAES256GCM {
		b, err := aes.NewCipher(key)
		if err != nil {
			return h, err
		}
		h.block = b
	}
	return h, nil
}

// mask writes 16 mask bytes for sample into out. It does not allocate.
func (h *headerProtector) mask(out *[16]byte, sample []byte) {
	if h.suite == SuiteAES256GCM {
		h.block.Encrypt(out[:], sample[:16])
		return
	}
	_ = sample[15]
	chachaHead(out, &h.key,
		binary.LittleEndian.Uint32(sample[0:]),
		binary.LittleEndian.Uint32(sample[4:]),
		binary.LittleEndian.Uint32(sample[8:]),
		binary.LittleEndian.Uint32(sample[12:]))
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return string(b[i:])
}
