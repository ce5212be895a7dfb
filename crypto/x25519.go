package crypto

import (
	"bytes"
	"crypto/ecdh"
	"crypto/subtle"
	"io"
	"sync"
	"sync/atomic"

	"github.com/flynn/noise"
)

// X25519 cost. flynn/noise's DH25519 goes through x/crypto's curve25519.X25519,
// which builds a crypto/ecdh private key (computing its public key, one
// scalar multiplication) before the actual Diffie-Hellman (a second one):
// every DH costs two scalar multiplications, a key generation too. The
// handshakes here use handshakeDH instead, which keeps crypto/ecdh key
// objects (the static key's made once, the ephemeral's at generation), so
// that each DH is one scalar multiplication and a key generation is one.

// x25519Ops counts the X25519 scalar multiplications this package performed.
var x25519Ops atomic.Uint64

// X25519Operations returns the number of X25519 scalar multiplications the
// handshakes of this process have performed so far (key generations,
// including an EphemeralPool's, and Diffie-Hellman computations). It is for
// measurements: per handshake, difference it around the handshake.
func X25519Operations() uint64 { return x25519Ops.Load() }

// newX25519Key makes a crypto/ecdh key from 32 private bytes: one scalar
// multiplication (the public key).
func newX25519Key(priv []byte) (*ecdh.PrivateKey, error) {
	x25519Ops.Add(1)
	k, err := ecdh.X25519().NewPrivateKey(priv)
	if err != nil {
		return nil, newError(KindInvalidArgument, "X25519 key", err)
	}
	return k, nil
}

// generateX25519 makes a fresh key pair from rng (read directly, so a
// deterministic test source stays deterministic).
func generateX25519(rng io.Reader) (*ecdh.PrivateKey, error) {
	var b [KeySize]byte
	if _, err := io.ReadFull(rng, b[:]); err != nil {
		return nil, newError(KindInvalidArgument, "ephemeral key randomness", err)
	}
	k, err := newX25519Key(b[:])
	clear(b[:])
	return k, err
}

// x25519DH is one Diffie-Hellman computation: one scalar multiplication.
// An all-zero result (a low-order peer key) is an error.
func x25519DH(k *ecdh.PrivateKey, peer []byte) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, err
	}
	x25519Ops.Add(1)
	return k.ECDH(pub)
}

// staticKeys holds the crypto/ecdh form of the static keys in use, so that
// a handshake does not pay a scalar multiplication to rebuild it. It is
// bounded: beyond staticKeysMax identities, keys are rebuilt per handshake
// (one extra scalar multiplication, still correct).
var staticKeys struct {
	sync.Mutex
	m map[PublicKey]*ecdh.PrivateKey
}

const staticKeysMax = 256

// staticKey returns the crypto/ecdh key of id.
func staticKey(id *Identity) (*ecdh.PrivateKey, error) {
	staticKeys.Lock()
	k := staticKeys.m[id.Public]
	staticKeys.Unlock()
	if k != nil && subtle.ConstantTimeCompare(k.Bytes(), id.Private[:]) == 1 {
		return k, nil
	}
	k, err := newX25519Key(id.Private[:])
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(k.PublicKey().Bytes(), id.Public[:]) {
		// An inconsistent identity: use it as given (noise sends the
		// configured public key), but do not cache it under that key.
		return k, nil
	}
	staticKeys.Lock()
	if staticKeys.m == nil {
		staticKeys.m = map[PublicKey]*ecdh.PrivateKey{}
	}
	if len(staticKeys.m) < staticKeysMax {
		staticKeys.m[id.Public] = k
	}
	staticKeys.Unlock()
	return k, nil
}

// handshakeDH is the noise.DHFunc of one handshake (a handshake has one, so
// it can remember its keys): X25519 with one scalar multiplication per DH;
// the ephemeral key comes from the EphemeralPool when there is one; with a
// StaticSecretCache the static-static result is cached per peer.
type handshakeDH struct {
	id     *Identity
	static *ecdh.PrivateKey // id.Private as a crypto/ecdh key
	eph    *ecdh.PrivateKey // our ephemeral, once generated
	pool   *EphemeralPool   // nil: generate ephemerals on the spot
	cache  *StaticSecretCache
	peer   func() []byte // the peer's static key once known

	// A freshly computed static-static value is only held as pending;
	// the handshake commits it to the cache once the peer is
	// authenticated and authorised, so unauthenticated hellos cannot fill
	// the cache.
	pending    [KeySize]byte
	pendingKey [2 * KeySize]byte
	hasPending bool
}

func newHandshakeDH(cfg *Config, peer func() []byte) (*handshakeDH, error) {
	k, err := staticKey(&cfg.Identity)
	if err != nil {
		return nil, err
	}
	return &handshakeDH{id: &cfg.Identity, static: k, pool: cfg.Ephemerals, cache: cfg.StaticCache, peer: peer}, nil
}

// suite is the Noise cipher suite of the handshake, with d as its DH.
func (d *handshakeDH) suite() noise.CipherSuite {
	return noise.NewCipherSuite(d, noise.CipherChaChaPoly, noise.HashSHA256)
}

// commit stores the pending static-static value, if any, in the cache.
func (d *handshakeDH) commit() {
	if d == nil || !d.hasPending {
		return
	}
	c := d.cache
	c.mu.Lock()
	if len(c.m) < c.max {
		c.m[d.pendingKey] = d.pending
	}
	c.mu.Unlock()
	clear(d.pending[:])
	d.hasPending = false
}

// GenerateKeypair implements noise.DHFunc: a pooled key pair, else a new one.
func (d *handshakeDH) GenerateKeypair(rng io.Reader) (noise.DHKey, error) {
	var k *ecdh.PrivateKey
	if d.pool != nil {
		k = d.pool.take()
	}
	if k == nil {
		var err error
		if k, err = generateX25519(rng); err != nil {
			return noise.DHKey{}, err
		}
	}
	d.eph = k
	return noise.DHKey{Private: k.Bytes(), Public: k.PublicKey().Bytes()}, nil
}

func (d *handshakeDH) DHLen() int     { return noise.DH25519.DHLen() }
func (d *handshakeDH) DHName() string { return noise.DH25519.DHName() }

// DH implements noise.DHFunc.
func (d *handshakeDH) DH(priv, pub []byte) ([]byte, error) {
	var k *ecdh.PrivateKey
	switch {
	case d.eph != nil && subtle.ConstantTimeCompare(priv, d.eph.Bytes()) == 1:
		k = d.eph
	case subtle.ConstantTimeCompare(priv, d.id.Private[:]) == 1:
		k = d.static
		if d.cache != nil {
			if peer := d.peerKey(); peer != nil && bytes.Equal(pub, peer) {
				return d.staticStatic(peer)
			}
		}
	default: // not expected: Noise IK only uses our static and ephemeral keys
		var err error
		if k, err = newX25519Key(priv); err != nil {
			return nil, err
		}
	}
	return x25519DH(k, pub)
}

func (d *handshakeDH) peerKey() []byte {
	if d.peer == nil {
		return nil
	}
	if p := d.peer(); len(p) == KeySize {
		return p
	}
	return nil
}

// staticStatic is DH(own static, peer static) through the cache.
func (d *handshakeDH) staticStatic(peer []byte) ([]byte, error) {
	k := pairKey(d.id.Public, PublicKey(peer))
	c := d.cache
	c.mu.Lock()
	v, ok := c.m[k]
	if ok {
		c.hits++
	} else {
		c.misses++
	}
	c.mu.Unlock()
	if ok {
		out := make([]byte, KeySize)
		copy(out, v[:])
		return out, nil
	}
	out, err := x25519DH(d.static, peer)
	if err != nil {
		return nil, err
	}
	d.pending, d.pendingKey, d.hasPending = [KeySize]byte(out), k, true
	return out, nil
}
