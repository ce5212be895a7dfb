package crypto

import (
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
// For peers met recently, the pool also keeps key pairs whose
// Diffie-Hellman with the peer's static key is already computed:
// DH(ephemeral, peer static) depends only on the ephemeral and a key known
// before the handshake, so it can be done ahead, off the critical path. For
// an initiator that is es (the responder's key is known when dialling): its
// InitiatorHello then costs no scalar multiplication at all. For a
// responder it is se (the initiator's key is known once message 1 is
// decrypted): one multiplication fewer between hello and reply. Such a key
// pair is bound to its peer: it is handed out only for a handshake with
// that peer, once, and its precomputed value leaves the pool with it. A
// peer gets a stock from its second handshake on (a peer met once costs
// nothing); the stock grows by one key pair per handshake up to half the
// pool's size. The pool keeps stocks for the 8 peers met most recently; a
// responder registers a peer only once it authenticated it.
//
// The package starts no goroutines: the owner refills the pool off the
// critical path, typically from a goroutine that calls Fill whenever Low
// receives. The pool is safe for concurrent use.
type EphemeralPool struct {
	rng     io.Reader
	max     int
	low     chan struct{}
	mu      sync.Mutex
	keys    []*x25519Key
	stocks  []*peerStock // least recently met first
	hits    uint64
	miss    uint64
	preHits uint64
	preMiss uint64
}

// maxPeerStocks bounds the peers an EphemeralPool precomputes for.
const maxPeerStocks = 8

// peerStock is the key pairs ready for handshakes with one peer.
type peerStock struct {
	peer   PublicKey
	met    int  // handshakes with the peer since its stock was made
	target int  // key pairs to keep ready
	bad    bool // the DH failed (a low-order key): precompute nothing for it
	keys   []precomputedKey
}

// precomputedKey is an ephemeral key pair with dh = DH(k, peer) for the
// peer of its stock.
type precomputedKey struct {
	k  *x25519Key
	dh [KeySize]byte
}

// NewEphemeralPool makes an empty pool of at most size key pairs (16 if
// size <= 0) drawing randomness from rng (crypto/rand when nil), plus at
// most size/2 per peer stock. Call Fill to fill it.
func NewEphemeralPool(size int, rng io.Reader) *EphemeralPool {
	if size <= 0 {
		size = 16
	}
	return &EphemeralPool{rng: randOrDefault(rng), max: size, low: make(chan struct{}, 1)}
}

func (p *EphemeralPool) perPeer() int { return max(p.max/2, 1) }

// Fill generates key pairs until the pool and its peer stocks are full and
// returns how many it added. It is the expensive part (one scalar
// multiplication per key, two with a precomputed DH); run it off the
// critical path. Concurrent Fills may overshoot by nothing: a key
// generated for a pool that filled meanwhile is dropped.
func (p *EphemeralPool) Fill() (int, error) {
	added := 0
	for {
		p.mu.Lock()
		var peer PublicKey
		forPeer := false
		if len(p.keys) >= p.max {
			if st := p.hungryStock(); st != nil {
				peer, forPeer = st.peer, true
			} else {
				p.mu.Unlock()
				return added, nil
			}
		}
		p.mu.Unlock()
		k, err := generateX25519(p.rng)
		if err != nil {
			return added, err
		}
		var dh []byte
		if forPeer {
			if dh, err = x25519DH(k, peer[:]); err != nil {
				p.mu.Lock()
				if st := p.findStock(peer); st != nil {
					st.bad = true
				}
				p.mu.Unlock()
				continue
			}
		}
		p.mu.Lock()
		var st *peerStock
		if forPeer {
			st = p.findStock(peer) // nil when evicted meanwhile
		}
		switch {
		case st != nil && !st.bad && len(st.keys) < st.target:
			st.keys = append(st.keys, precomputedKey{k: k, dh: [KeySize]byte(dh)})
			added++
		case len(p.keys) < p.max:
			p.keys = append(p.keys, k) // no longer wanted for the peer: a plain key
			added++
		default:
			clear(k.priv[:]) // not wanted after all: its private key goes now
		}
		clear(dh)
		p.mu.Unlock()
	}
}

// hungryStock returns a peer stock below its target, or nil.
func (p *EphemeralPool) hungryStock() *peerStock {
	for i := len(p.stocks) - 1; i >= 0; i-- { // most recent first
		if st := p.stocks[i]; !st.bad && len(st.keys) < st.target {
			return st
		}
	}
	return nil
}

func (p *EphemeralPool) findStock(peer PublicKey) *peerStock {
	for _, st := range p.stocks {
		if st.peer == peer {
			return st
		}
	}
	return nil
}

// Low receives (at most one pending signal) when a take left the pool at
// half its size or below, or found it empty, or a handshake with a peer
// found its stock at half its target or below: time to Fill.
func (p *EphemeralPool) Low() <-chan struct{} { return p.low }

// Len returns the number of key pairs ready, peer stocks included.
func (p *EphemeralPool) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.keys)
	for _, st := range p.stocks {
		n += len(st.keys)
	}
	return n
}

// Stats returns how many handshakes took a pooled key (hits) and how many
// found the pool empty (misses).
func (p *EphemeralPool) Stats() (hits, misses uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits, p.miss
}

// PrecomputedStats returns how many handshakes took a key pair with its
// DH with the peer's static key precomputed (hits: es for an initiator, se
// for a responder) and how many did not (misses: computed on the spot).
func (p *EphemeralPool) PrecomputedStats() (hits, misses uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.preHits, p.preMiss
}

// take removes and returns one key pair, or nil when the pool is empty.
func (p *EphemeralPool) take() *x25519Key {
	k, low := p.takeLow()
	if low {
		p.signalLow()
	}
	return k
}

// takeLow is take that leaves the Low signal to the caller: low says the
// pool wants a Fill. A handshake sends it once it is past its critical
// path, so that the refill does not compete with it for a core.
func (p *EphemeralPool) takeLow() (*x25519Key, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.takeLocked()
	return k, len(p.keys) <= p.max/2
}

func (p *EphemeralPool) takeLocked() *x25519Key {
	var k *x25519Key
	if n := len(p.keys); n > 0 {
		k = p.keys[n-1]
		p.keys[n-1] = nil // the pool no longer holds it
		p.keys = p.keys[:n-1]
		p.hits++
	} else {
		p.miss++
	}
	return k
}

func (p *EphemeralPool) signalLow() {
	select {
	case p.low <- struct{}{}:
	default:
	}
}

// takeFor removes and returns a key pair for a handshake with peer, with
// dh = DH(k, peer's static key) when it was precomputed for peer (the pool
// keeps no copy), else dh nil; k is nil when the pool is empty. It records
// the handshake, so that Fill prepares key pairs for peer.
func (p *EphemeralPool) takeFor(peer PublicKey) (k *x25519Key, dh []byte) {
	k, dh, low := p.takeForLow(peer)
	if low {
		p.signalLow()
	}
	return k, dh
}

// takeForLow is takeFor that leaves the Low signal to the caller (takeLow).
func (p *EphemeralPool) takeForLow(peer PublicKey) (k *x25519Key, dh []byte, low bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.met(peer)
	if n := len(st.keys); n > 0 {
		pk := &st.keys[n-1]
		k, dh = pk.k, append(make([]byte, 0, KeySize), pk.dh[:]...)
		clear(pk.dh[:])
		*pk = precomputedKey{} // the pool no longer holds it
		st.keys = st.keys[:n-1]
		p.hits++
		p.preHits++
		return k, dh, len(st.keys) <= st.target/2
	}
	p.preMiss++
	k = p.takeLocked()
	return k, nil, st.target > 0 && !st.bad || len(p.keys) <= p.max/2
}

// met returns peer's stock, made the most recent (created, evicting the
// least recent, when new), its target raised by one handshake from the
// second on.
func (p *EphemeralPool) met(peer PublicKey) *peerStock {
	var st *peerStock
	for i, s := range p.stocks {
		if s.peer == peer {
			st = s
			copy(p.stocks[i:], p.stocks[i+1:])
			p.stocks = p.stocks[:len(p.stocks)-1]
			break
		}
	}
	if st == nil {
		if len(p.stocks) >= maxPeerStocks {
			p.evict(p.stocks[0])
			copy(p.stocks, p.stocks[1:])
			p.stocks[len(p.stocks)-1] = nil
			p.stocks = p.stocks[:len(p.stocks)-1]
		}
		st = &peerStock{peer: peer}
	}
	p.stocks = append(p.stocks, st)
	st.met++
	st.target = min(st.met-1, p.perPeer())
	return st
}

// evict drops a stock: its key pairs, never used, become plain pooled keys
// (their precomputed values are erased) while there is room.
func (p *EphemeralPool) evict(st *peerStock) {
	for i := range st.keys {
		if len(p.keys) < p.max {
			p.keys = append(p.keys, st.keys[i].k)
		} else {
			clear(st.keys[i].k.priv[:])
		}
		clear(st.keys[i].dh[:])
		st.keys[i] = precomputedKey{}
	}
	st.keys = nil
}
