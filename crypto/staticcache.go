package crypto

import "sync"

// StaticSecretCache remembers the static-static Diffie-Hellman result
// DH(own static, peer static) per pair of keys, as WireGuard precomputes it
// per peer. With it, a repeat handshake with the same peer costs 4 X25519
// operations per side instead of 5. The cached values are as sensitive as
// the static private key; the cache is bounded (when full, new pairs are
// simply not cached). It is safe for concurrent use, so one cache can serve
// every Initiator and the Responder of an endpoint.
type StaticSecretCache struct {
	mu     sync.Mutex
	max    int
	m      map[[2 * KeySize]byte][KeySize]byte
	hits   uint64
	misses uint64
}

// NewStaticSecretCache makes a cache of at most max pairs (4096 if max <= 0).
func NewStaticSecretCache(max int) *StaticSecretCache {
	if max <= 0 {
		max = 4096
	}
	return &StaticSecretCache{max: max, m: make(map[[2 * KeySize]byte][KeySize]byte)}
}

// Stats returns the number of cache hits and misses so far.
func (c *StaticSecretCache) Stats() (hits, misses uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits, c.misses
}

// Forget drops the entry for a peer (e.g. when it leaves the allow-list).
func (c *StaticSecretCache) Forget(own, peer PublicKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, pairKey(own, peer))
}

func pairKey(own, peer PublicKey) (k [2 * KeySize]byte) {
	copy(k[:KeySize], own[:])
	copy(k[KeySize:], peer[:])
	return k
}
