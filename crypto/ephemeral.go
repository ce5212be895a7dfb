package crypto

import (
	"crypto/ecdh"
	"io"
	"sync"
)

// EphemeralPool holds X25519 ephemeral key pairs generated ahead of time, so
// that a handshake takes its ephemeral key instead of spending a scalar
// multiplication on it while a peer waits. Set it as Config.Ephemerals.
//
// Each key pair is handed to exactly one handshake: take removes it from the
// pool, and the handshake that took it is the only holder (forward secrecy
// is unchanged: the key is as fresh and as secret as one generated on the
// spot, it was only generated a little earlier). A handshake that finds the
// pool empty generates its key itself.
//
// The package starts no goroutines: the owner refills the pool off the
// critical path, typically from a goroutine that calls Fill whenever Low
// receives. The pool is safe for concurrent use.
type EphemeralPool struct {
	rng  io.Reader
	max  int
	low  chan struct{}
	mu   sync.Mutex
	keys []*ecdh.PrivateKey
	hits uint64
	miss uint64
}

// NewEphemeralPool makes an empty pool of at most size key pairs (16 if
// size <= 0) drawing randomness from rng (crypto/rand when nil). Call Fill
// to fill it.
func NewEphemeralPool(size int, rng io.Reader) *EphemeralPool {
	if size <= 0 {
		size = 16
	}
	return &EphemeralPool{rng: randOrDefault(rng), max: size, low: make(chan struct{}, 1)}
}

// Fill generates key pairs until the pool is full and returns how many it
// added. It is the expensive part (one scalar multiplication per key); run
// it off the critical path. Concurrent Fills may overshoot by nothing: a
// key generated for a pool that filled meanwhile is dropped.
func (p *EphemeralPool) Fill() (int, error) {
	added := 0
	for {
		p.mu.Lock()
		full := len(p.keys) >= p.max
		p.mu.Unlock()
		if full {
			return added, nil
		}
		k, err := generateX25519(p.rng)
		if err != nil {
			return added, err
		}
		p.mu.Lock()
		if len(p.keys) < p.max {
			p.keys = append(p.keys, k)
			added++
		}
		p.mu.Unlock()
	}
}

// Low receives (at most one pending signal) when a take left the pool at
// half its size or below, or found it empty: time to Fill.
func (p *EphemeralPool) Low() <-chan struct{} { return p.low }

// Len returns the number of key pairs ready.
func (p *EphemeralPool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.keys)
}

// Stats returns how many handshakes took a pooled key (hits) and how many
// found the pool empty (misses).
func (p *EphemeralPool) Stats() (hits, misses uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits, p.miss
}

// take removes and returns one key pair, or nil when the pool is empty.
func (p *EphemeralPool) take() *ecdh.PrivateKey {
	p.mu.Lock()
	var k *ecdh.PrivateKey
	if n := len(p.keys); n > 0 {
		k = p.keys[n-1]
		p.keys[n-1] = nil // the pool no longer holds it
		p.keys = p.keys[:n-1]
		p.hits++
	} else {
		p.miss++
	}
	low := len(p.keys) <= p.max/2
	p.mu.Unlock()
	if low {
		select {
		case p.low <- struct{}{}:
		default:
		}
	}
	return k
}
