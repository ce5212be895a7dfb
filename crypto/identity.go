package crypto

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// KeySize is the size of X25519 private and public keys.
const KeySize = 32

// PublicKeyPrefix starts the text form of a public key; PrivateKeyPrefix the
// text form of a private key (as stored in key files).
const (
	PublicKeyPrefix  = "mxpk_"
	PrivateKeyPrefix = "mxpsk_"
)

// PublicKey is an X25519 public key (a long-term static identity).
type PublicKey [KeySize]byte

// PrivateKey is an X25519 private key.
type PrivateKey [KeySize]byte

// String redacts the key, so that printing an Identity or a config with
// fmt never leaks it. Use Identity.MarshalPrivateText to serialise it.
func (PrivateKey) String() string { return PrivateKeyPrefix + "<redacted>" }

// Format redacts the key for every fmt verb (%x, %d, %#v ...).
func (k PrivateKey) Format(f fmt.State, _ rune) { io.WriteString(f, k.String()) }

// Identity is a long-term static X25519 key pair.
type Identity struct {
	Private PrivateKey
	Public  PublicKey
}

var b64 = base64.RawURLEncoding.Strict()

// keyChecksum is the 2-byte checksum of the text forms: the first two bytes
// of SHA-256(prefix || key). It catches typos and truncation.
func keyChecksum(prefix string, key []byte) [2]byte {
	h := sha256.New()
	h.Write([]byte(prefix))
	h.Write(key)
	var sum [32]byte
	h.Sum(sum[:0])
	return [2]byte{sum[0], sum[1]}
}

func encodeKeyText(prefix string, key []byte) string {
	c := keyChecksum(prefix, key)
	raw := make([]byte, 0, KeySize+2)
	raw = append(raw, key...)
	raw = append(raw, c[:]...)
	return prefix + b64.EncodeToString(raw)
}

func decodeKeyText(prefix, s string) ([KeySize]byte, error) {
	var k [KeySize]byte
	if !strings.HasPrefix(s, prefix) {
		return k, newError(KindMalformed, "key text must start with "+prefix, nil)
	}
	raw, err := b64.DecodeString(s[len(prefix):])
	if err != nil || len(raw) != KeySize+2 {
		return k, newError(KindMalformed, "key text is not 34 base64url bytes", err)
	}
	c := keyChecksum(prefix, raw[:KeySize])
	if subtle.ConstantTimeCompare(c[:], raw[KeySize:]) != 1 {
		return k, newError(KindMalformed, "key text checksum mismatch", nil)
	}
	copy(k[:], raw)
	return k, nil
}

// String renders the public key in its short text form: "mxpk_" followed by
// 46 base64url characters (the key and a 2-byte checksum). The form is safe
// in config files and in mxp:// URLs.
func (k PublicKey) String() string { return encodeKeyText(PublicKeyPrefix, k[:]) }

// MarshalText implements encoding.TextMarshaler.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *PublicKey) UnmarshalText(b []byte) error {
	p, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParsePublicKey parses the text form produced by PublicKey.String.
func ParsePublicKey(s string) (PublicKey, error) {
	k, err := decodeKeyText(PublicKeyPrefix, strings.TrimSpace(s))
	return PublicKey(k), err
}

// IsZero reports whether k is all zeros (unset).
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// Equal compares two public keys in constant time.
func (k PublicKey) Equal(o PublicKey) bool { return subtle.ConstantTimeCompare(k[:], o[:]) == 1 }

// GenerateIdentity creates a fresh key pair from rng (crypto/rand if nil).
func GenerateIdentity(rng io.Reader) (Identity, error) {
	if rng == nil {
		rng = rand.Reader
	}
	var priv PrivateKey
	if _, err := io.ReadFull(rng, priv[:]); err != nil {
		return Identity{}, newError(KindInvalidArgument, "reading randomness", err)
	}
	return IdentityFromPrivate(priv)
}

// IdentityFromPrivate derives the public key of priv.
func IdentityFromPrivate(priv PrivateKey) (Identity, error) {
	pub, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		return Identity{}, newError(KindInvalidArgument, "bad private key", err)
	}
	id := Identity{Private: priv}
	copy(id.Public[:], pub)
	return id, nil
}

// MarshalPrivateText renders the private key as "mxpsk_" + base64url with
// checksum, the content of a key file.
func (id *Identity) MarshalPrivateText() string {
	return encodeKeyText(PrivateKeyPrefix, id.Private[:])
}

// ParsePrivateText parses MarshalPrivateText's output.
func ParsePrivateText(s string) (Identity, error) {
	k, err := decodeKeyText(PrivateKeyPrefix, strings.TrimSpace(s))
	if err != nil {
		return Identity{}, err
	}
	return IdentityFromPrivate(PrivateKey(k))
}

// SaveIdentity writes id's private key to path with mode 0600. It refuses
// to overwrite an existing file. The write goes to a temporary file in the
// same directory that is renamed into place, so a crash never leaves a
// half-written key.
func SaveIdentity(path string, id *Identity) error {
	if _, err := os.Lstat(path); err == nil {
		return newError(KindKeyFile, path+" already exists", nil)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".mxpkey-*")
	if err != nil {
		return newError(KindKeyFile, "create", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return newError(KindKeyFile, "chmod", err)
	}
	if _, err := f.WriteString(id.MarshalPrivateText() + "\n"); err != nil {
		f.Close()
		return newError(KindKeyFile, "write", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return newError(KindKeyFile, "sync", err)
	}
	if err := f.Close(); err != nil {
		return newError(KindKeyFile, "close", err)
	}
	if err := os.Link(tmp, path); err != nil { // fails if path appeared meanwhile
		return newError(KindKeyFile, "install", err)
	}
	return nil
}

// LoadIdentity reads a key file written by SaveIdentity. It refuses files
// that group or others can read or write (mode & 0077 != 0).
func LoadIdentity(path string) (Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return Identity{}, newError(KindKeyFile, "open", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Identity{}, newError(KindKeyFile, "stat", err)
	}
	if !st.Mode().IsRegular() {
		return Identity{}, newError(KindKeyFile, path+" is not a regular file", nil)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return Identity{}, newError(KindKeyFile, path+" is accessible by group or others (want 0600)", nil)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return Identity{}, newError(KindKeyFile, "read", err)
	}
	id, err := ParsePrivateText(string(b))
	clear(b)
	if err != nil {
		return Identity{}, newError(KindKeyFile, "parse "+path, err)
	}
	return id, nil
}
