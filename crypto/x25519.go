package crypto

import (
	"bytes"
	"crypto/subtle"
	"errors"
	circlx25519 "github.com/cloudflare/circl/dh/x25519"
	"io"
	"runtime"
	"sync/atomic"

	"github.com/flynn/noise"
)

// X25519 cost. flynn/noise's DH25519 goes through x/crypto's curve25519.X25519,
// which builds a crypto/ecdh private key (computing its public key, one
// scalar multiplication) before the actual Diffie-Hellman (a second one):
// every DH costs two scalar multiplications, a key generation too. The
// handshakes here use handshakeDH instead, which keeps key pairs (the
// static key's taken from the Identity, the ephemeral's made at
// generation), so that each DH is one scalar multiplication and a key
// generation is one.

// x25519Ops counts the X25519 scalar multiplications this package performed.
var x25519Ops atomic.Uint64

// X25519Operations returns the number of X25519 scalar multiplications the
// handshakes of this process have performed so far (key generations,
// including an EphemeralPool's, and Diffie-Hellman computations). It is for
// measurements: per handshake, difference it around the handshake.
func X25519Operations() uint64 { return x25519Ops.Load() }

// x25519Key is an X25519 key pair: the private scalar's 32 bytes (as
// given, clamped when used) and the public key.
type x25519Key struct {
	priv, pub circlx25519.Key
}

// Bytes returns a copy of the private key's bytes.
func (k *x25519Key) Bytes() []byte { return append([]byte(nil), k.priv[:]...) }

// newX25519Key makes a key pair from 32 private bytes: one scalar
// multiplication (the public key), on CIRCL's fixed-base X25519.
func newX25519Key(priv []byte) (*x25519Key, error) {
	if len(priv) != KeySize {
		return nil, newError(KindInvalidArgument, "X25519 key", errors.New("not 32 bytes"))
	}
	x25519Ops.Add(1)
	k := &x25519Key{}
	copy(k.priv[:], priv)
	circlx25519.KeyGen(&k.pub, &k.priv)
	return k, nil
}

// generateX25519 makes a fresh key pair from rng (read directly, so a
// deterministic test source stays deterministic).
func generateX25519(rng io.Reader) (*x25519Key, error) {
	var b [KeySize]byte
	if _, err := io.ReadFull(rng, b[:]); err != nil {
		return nil, newError(KindInvalidArgument, "ephemeral key randomness", err)
	}
	k, err := newX25519Key(b[:])
	clear(b[:])
	return k, err
}

// x25519Rounds counts the X25519 steps the handshakes of this process took
// one after the other while a peer waited: a DH or key generation computed
// on the spot is one step, a pair computed in parallel (runPair) one step.
// Pool refills are not counted. x25519PairsInline counts the pairs whose
// helper goroutine did not start before the first DH was done, so that both
// ran in sequence after all (each such pair also counts a second step).
var x25519Rounds, x25519PairsInline atomic.Uint64

// x25519DH is one Diffie-Hellman computation: one scalar multiplication.
// An all-zero result (a low-order peer key) is an error.
//
// It runs on CIRCL's X25519 (constant-time assembly with MULX/ADX where the
// CPU has them); BenchmarkX25519 compares it with x/crypto's
// curve25519.X25519, which flynn/noise would use. The results are those of
// crypto/ecdh (RFC 7748; TestX25519MatchesStdlib).
func x25519DH(k *x25519Key, peer []byte) ([]byte, error) {
	if len(peer) != KeySize {
		return nil, newError(KindInvalidArgument, "X25519 public key", errors.New("not 32 bytes"))
	}
	var pk, shared circlx25519.Key
	copy(pk[:], peer)
	x25519Ops.Add(1)
	ok := circlx25519.Shared(&shared, &k.priv, &pk)
	if !ok {
		return nil, newError(KindInvalidArgument, "X25519", errors.New("low-order public key (all-zero shared secret)"))
	}
	out := make([]byte, KeySize)
	copy(out, shared[:])
	clear(shared[:])
	return out, nil
}

// dhJob is one Diffie-Hellman computation of a handshake, for runPair.
type dhJob struct {
	k   *x25519Key
	pub []byte
	out []byte
	err error
}

func (j *dhJob) run() { j.out, j.err = x25519DH(j.k, j.pub) }

// runPair computes two independent DHs. In parallel, a helper goroutine
// takes b while this one computes a; if the helper has not started by then
// (no idle core), this goroutine computes b itself rather than wait for the
// scheduler. Either way the goroutine that claims b is the only one to
// touch it, and runPair returns only once both are done: the helper never
// outlives it with work to do.
//
// A helper that starts late costs CPU (a goroutine, a thread woken to spin)
// and saves nothing, so runPair keeps score: while recent helpers mostly
// started late (every core busy, as on a shared machine under load) it
// computes the pairs in sequence, trying the helper again every
// pairProbeEvery pairs to notice when a core is free again.
func runPair(a, b *dhJob, parallel bool) {
	x25519Rounds.Add(1)
	if parallel && pairLate.Load() >= pairLateOff && pairProbe.Add(1)%pairProbeEvery != 0 {
		parallel = false
		x25519PairsInline.Add(1)
	}
	if !parallel {
		x25519Rounds.Add(1)
		a.run()
		b.run()
		return
	}
	var claimed atomic.Bool
	done := make(chan struct{})
	go func() {
		if claimed.CompareAndSwap(false, true) {
			b.run()
		}
		close(done)
	}()
	// The helper sits in this P's runnext slot, which idle Ps are slow to
	// steal from (they wait for the running goroutine to yield); a second
	// goroutine pushes it into the local run queue, where they take it at
	// once, so the helper starts in time more often (BenchmarkDHPair).
	go func() {}()
	a.run()
	if claimed.CompareAndSwap(false, true) {
		x25519Rounds.Add(1)
		x25519PairsInline.Add(1)
		scorePair(true)
		b.run()
		return
	}
	scorePair(false)
	<-done
}

// pairLate is runPair's score of recent helpers: +1 for one that started
// late, -1 for one on time, within [0, pairLateMax]. From pairLateOff up,
// pairs run in sequence but for a probe every pairProbeEvery pairs.
var (
	pairLate  atomic.Int32
	pairProbe atomic.Uint32
)

const (
	pairLateMax    = 8
	pairLateOff    = 4
	pairProbeEvery = 8
)

func scorePair(late bool) {
	for {
		v := pairLate.Load()
		n := v - 1
		if late {
			n = v + 1
		}
		n = min(max(n, 0), pairLateMax)
		if n == v || pairLate.CompareAndSwap(v, n) {
			return
		}
	}
}

// staticKey returns id as a key pair, as given: a DH reads only the private
// key, so nothing is computed (Noise sends the configured public key).
func staticKey(id *Identity) *x25519Key {
	return &x25519Key{priv: circlx25519.Key(id.Private), pub: circlx25519.Key(id.Public)}
}

// handshakeDH is the noise.DHFunc of one handshake (a handshake has one, so
// it can remember its keys): X25519 with one scalar multiplication per DH;
// the ephemeral key comes from the EphemeralPool when there is one; with a
// StaticSecretCache the static-static result is cached per peer.
//
// Before each Noise message, the handshake asks handshakeDH to prepare the
// DHs that message will need (prepareHello, prepareReply, prepareFinish):
// they are computed ahead, the independent ones in parallel, and kept in
// pre, each bound to the key object and the exact public key it was
// computed for; Noise's DH calls then take them from there (once: a slot is
// cleared when used, and all are cleared before the next message). The
// bytes Noise computes with are the same either way.
type handshakeDH struct {
	id       *Identity
	static   *x25519Key     // id as a key pair
	eph      *x25519Key     // our ephemeral, once generated
	ready    *x25519Key     // an ephemeral taken ahead, for GenerateKeypair
	pool     *EphemeralPool // nil: generate ephemerals on the spot
	cache    *StaticSecretCache
	peer     func() []byte // the peer's static key once known
	parallel bool          // compute independent DHs on two goroutines
	pre      [2]preDH
	refill   bool // the pool asked for a Fill: tell it after the critical path

	// A freshly computed static-static value is only held as pending;
	// the handshake commits it to the cache once the peer is
	// authenticated and authorised, so unauthenticated hellos cannot fill
	// the cache.
	pending    [KeySize]byte
	pendingKey [2 * KeySize]byte
	hasPending bool
}

func newHandshakeDH(cfg *Config, peer func() []byte) (*handshakeDH, error) {
	return &handshakeDH{id: &cfg.Identity, static: staticKey(&cfg.Identity), pool: cfg.Ephemerals, cache: cfg.StaticCache, peer: peer,
		parallel: cfg.ParallelDH && runtime.GOMAXPROCS(0) > 1}, nil
}

// fromPool takes the handshake's ephemeral from the pool (with its DH with
// peer precomputed, when the pool has one; peer nil: a plain key). The Low
// signal waits for signalRefill unless the pool is empty (nothing to save:
// this handshake pays for its key itself).
func (d *handshakeDH) fromPool(peer []byte) (k *x25519Key, dh []byte) {
	var low bool
	if len(peer) == KeySize {
		k, dh, low = d.pool.takeForLow(PublicKey(peer))
	} else {
		k, low = d.pool.takeLow()
	}
	if low && k == nil {
		d.pool.signalLow()
	} else if low {
		d.refill = true
	}
	return k, dh
}

// ephemeral takes the handshake's ephemeral key pair from the pool, with
// its DH with peer precomputed when the pool has one (peer nil: a plain
// key), or generates one.
func (d *handshakeDH) ephemeral(peer []byte, rng io.Reader) (k *x25519Key, dh []byte, err error) {
	if d.pool != nil {
		k, dh = d.fromPool(peer)
	}
	if k == nil {
		x25519Rounds.Add(1)
		k, err = generateX25519(rng)
	}
	return k, dh, err
}

// signalRefill sends the pool's Low signal the handshake's take held back.
// Call it once past the critical path: the refill then runs while the
// peer works or the connection carries its first data, not while a DH
// this side waits for is being computed.
func (d *handshakeDH) signalRefill() {
	if d != nil && d.refill {
		d.refill = false
		d.pool.signalLow()
	}
}

// preDH is a DH result computed ahead: DH(k, pub).
type preDH struct {
	k   *x25519Key // nil: empty slot
	pub [KeySize]byte
	out [KeySize]byte
}

func (d *handshakeDH) clearPre() {
	for i := range d.pre {
		clear(d.pre[i].out[:])
		d.pre[i] = preDH{}
	}
}

func (d *handshakeDH) setPre(i int, k *x25519Key, pub, out []byte) {
	d.pre[i] = preDH{k: k, pub: [KeySize]byte(pub), out: [KeySize]byte(out)}
}

// usePre returns and forgets the result computed ahead for DH(k, pub).
func (d *handshakeDH) usePre(k *x25519Key, pub []byte) ([]byte, bool) {
	for i := range d.pre {
		p := &d.pre[i]
		if p.k != nil && p.k == k && len(pub) == KeySize && [KeySize]byte(pub) == p.pub {
			out := append(make([]byte, 0, KeySize), p.out[:]...)
			clear(p.out[:])
			*p = preDH{}
			return out, true
		}
	}
	return nil, false
}

// compute runs the jobs (at most two; a failed one stays unset, so that
// Noise's own DH call fails the same way) and stores the results, jobs[i]
// in pre[slot[i]].
func (d *handshakeDH) compute(jobs []dhJob, slot []int) {
	switch len(jobs) {
	case 0:
		return
	case 1:
		x25519Rounds.Add(1)
		jobs[0].run()
	default:
		runPair(&jobs[0], &jobs[1], d.parallel)
	}
	for i := range jobs {
		if jobs[i].err == nil {
			d.setPre(slot[i], jobs[i].k, jobs[i].pub, jobs[i].out)
		}
		clear(jobs[i].out)
	}
}

// prepareHello readies Noise message 1 of an initiator (tokens e, es, s,
// ss): it takes the ephemeral (from the pool, with es = DH(e, peer) when
// the pool precomputed it for this responder) and computes what is missing
// of es and ss, the two in parallel when both are (a first contact).
func (d *handshakeDH) prepareHello(peer PublicKey, rng io.Reader) error {
	d.clearPre()
	k, es, err := d.ephemeral(peer[:], rng)
	if err != nil {
		return err
	}
	d.ready = k
	var jobs [2]dhJob
	var slots [2]int
	n := 0
	if es != nil {
		d.setPre(0, k, peer[:], es)
		clear(es)
	} else {
		jobs[n], slots[n] = dhJob{k: k, pub: peer[:]}, 0
		n++
	}
	ssFresh := false
	if v, ok := d.cachedStaticStatic(peer); ok {
		d.setPre(1, d.static, peer[:], v[:])
		clear(v[:])
	} else {
		jobs[n], slots[n] = dhJob{k: d.static, pub: peer[:]}, 1
		ssFresh = d.cache != nil
		n++
	}
	d.compute(jobs[:n], slots[:n])
	if ssFresh && d.pre[1].k != nil {
		// Committed to the cache once the responder is authenticated.
		d.pending, d.pendingKey, d.hasPending = d.pre[1].out, pairKey(d.id.Public, peer), true
	}
	return nil
}

// prepareReply readies Noise message 2 of a responder (tokens e, ee, se)
// once message 1 revealed the initiator's ephemeral re and authenticated
// its static key rs: it takes the ephemeral — from the pool, with se =
// DH(e, rs) when the pool precomputed it for this initiator — and computes
// what is missing: ee = DH(e, re), and se in parallel with it.
func (d *handshakeDH) prepareReply(re, rs []byte, rng io.Reader) error {
	d.clearPre()
	peerOK := len(rs) == KeySize
	k, se, err := d.ephemeral(rs, rng)
	if err != nil {
		return err
	}
	d.ready = k
	if len(re) != KeySize || !peerOK {
		return nil // Noise fails on its own
	}
	if se != nil {
		d.setPre(1, k, rs, se)
		clear(se)
		d.compute([]dhJob{{k: k, pub: re}}, []int{0})
		return nil
	}
	jobs := [2]dhJob{{k: k, pub: re}, {k: k, pub: rs}}
	d.compute(jobs[:], []int{0, 1})
	return nil
}

// prepareFinish readies the initiator's read of Noise message 2 (tokens e,
// ee, se), whose first 32 bytes are the responder's ephemeral re: ee =
// DH(e, re) and se = DH(s, re), in parallel. A forged message's values are
// never used for another: they are bound to its re and cleared before the
// next message.
func (d *handshakeDH) prepareFinish(msg []byte) {
	d.clearPre()
	if d.eph == nil || len(msg) < KeySize {
		return
	}
	re := msg[:KeySize:KeySize]
	jobs := [2]dhJob{{k: d.eph, pub: re}, {k: d.static, pub: re}}
	d.compute(jobs[:], []int{0, 1})
}

// cachedStaticStatic looks the static-static value for peer up in the
// cache (counting a hit or a miss).
func (d *handshakeDH) cachedStaticStatic(peer PublicKey) ([KeySize]byte, bool) {
	if d.cache == nil {
		return [KeySize]byte{}, false
	}
	c := d.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[pairKey(d.id.Public, peer)]
	if ok {
		c.hits++
	} else {
		c.misses++
	}
	return v, ok
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
	k := d.ready
	d.ready = nil
	if k == nil {
		var err error
		if k, _, err = d.ephemeral(nil, rng); err != nil {
			return noise.DHKey{}, err
		}
	}
	d.eph = k
	return noise.DHKey{Private: k.Bytes(), Public: k.pub[:]}, nil
}

func (d *handshakeDH) DHLen() int     { return noise.DH25519.DHLen() }
func (d *handshakeDH) DHName() string { return noise.DH25519.DHName() }

// DH implements noise.DHFunc.
func (d *handshakeDH) DH(priv, pub []byte) ([]byte, error) {
	var k *x25519Key
	switch {
	case d.eph != nil && subtle.ConstantTimeCompare(priv, d.eph.priv[:]) == 1:
		k = d.eph
		if out, ok := d.usePre(k, pub); ok {
			return out, nil
		}
	case subtle.ConstantTimeCompare(priv, d.id.Private[:]) == 1:
		k = d.static
		if out, ok := d.usePre(k, pub); ok {
			return out, nil
		}
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
	x25519Rounds.Add(1)
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
	v, ok := d.cachedStaticStatic(PublicKey(peer))
	if ok {
		out := make([]byte, KeySize)
		copy(out, v[:])
		return out, nil
	}
	x25519Rounds.Add(1)
	out, err := x25519DH(d.static, peer)
	if err != nil {
		return nil, err
	}
	d.pending, d.pendingKey, d.hasPending = [KeySize]byte(out), pairKey(d.id.Public, PublicKey(peer)), true
	return out, nil
}
