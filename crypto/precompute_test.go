package crypto

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
)

// transcript is everything one handshake put on the wire, plus a packet
// sealed by each session (same keys <=> same packet).
type transcript struct {
	hello, reply, fin, i2r, r2i []byte
}

func runTranscript(t *testing.T, ic *Config, resp *Responder, rpub PublicKey, connID uint64) transcript {
	t.Helper()
	pairLate.Store(0) // with ParallelDH, try the helper (not the adaptive fallback)
	r := runHandshake(t, ic, resp, rpub, connID, true)
	return transcript{r.hello, r.res.Reply, r.fin, seal(t, r.is, "i2r"), seal(t, r.res.Session, "r2i")}
}

func (a transcript) equal(b transcript) bool {
	return bytes.Equal(a.hello, b.hello) && bytes.Equal(a.reply, b.reply) && bytes.Equal(a.fin, b.fin) &&
		bytes.Equal(a.i2r, b.i2r) && bytes.Equal(a.r2i, b.r2i)
}

// TestParallelDHSameBytes: with the same randomness, handshakes whose DHs
// run in parallel (and, with a pool, take es precomputed) put the same bytes
// on the wire and derive the same keys as handshakes computing every DH in
// sequence, on first contact and on repeat contacts, with and without the
// caches.
func TestParallelDHSameBytes(t *testing.T) {
	for _, tc := range []struct {
		name        string
		cache, pool bool
	}{{"plain", false, false}, {"static-cache", true, false}, {"pool", false, true}, {"static-cache+pool", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			run := func(sequential bool) []transcript {
				ic, rc := testPeers(t)
				ic.ParallelDH, rc.ParallelDH = !sequential, !sequential
				if tc.cache {
					ic.StaticCache, rc.StaticCache = NewStaticSecretCache(0), NewStaticSecretCache(0)
				}
				if tc.pool {
					ic.Ephemerals, rc.Ephemerals = NewEphemeralPool(4, newDetRand(31)), NewEphemeralPool(4, newDetRand(32))
				}
				resp, err := NewResponder(rc)
				if err != nil {
					t.Fatal(err)
				}
				var out []transcript
				for i := range 6 {
					if tc.pool && i%2 == 1 {
						ic.Ephemerals.Fill()
						rc.Ephemerals.Fill()
					}
					out = append(out, runTranscript(t, ic, resp, rc.Identity.Public, uint64(100+i)))
				}
				return out
			}
			seq, par := run(true), run(false)
			for i := range seq {
				if !seq[i].equal(par[i]) {
					t.Fatalf("handshake %d: parallel DH gave different bytes", i)
				}
			}
			for i := 1; i < len(seq); i++ {
				if bytes.Equal(seq[i].hello, seq[i-1].hello) {
					t.Fatal("two handshakes sent the same hello") // the comparison would prove nothing
				}
			}
		})
	}
}

// TestPrecomputedESSameBytes: a hello built with es precomputed by the pool
// is byte for byte the hello built by computing es on the spot with the
// same ephemeral key.
func TestPrecomputedESSameBytes(t *testing.T) {
	ic, rc := testPeers(t)
	pool := NewEphemeralPool(4, newDetRand(41))
	ic.Ephemerals = pool
	peer := rc.Identity.Public
	pool.mu.Lock()
	pool.met(peer) // as a first dial would: a stock, nothing to keep yet
	pool.met(peer) // the second: the stock's target is 1
	pool.mu.Unlock()
	if _, err := pool.Fill(); err != nil {
		t.Fatal(err)
	}
	pool.mu.Lock()
	st := pool.findStock(peer)
	if st == nil || len(st.keys) != 1 {
		pool.mu.Unlock()
		t.Fatal("no key pair precomputed for the responder")
	}
	priv := st.keys[0].k.Bytes()
	pool.keys = nil // only the precomputed key pair can be taken
	pool.mu.Unlock()

	ini, err := NewInitiator(ic, peer, 7)
	if err != nil {
		t.Fatal(err)
	}
	x0 := X25519Operations()
	hello, err := ini.Hello(t0)
	if err != nil {
		t.Fatal(err)
	}
	if n := X25519Operations() - x0; n != 1 { // ss only: the ephemeral and es were ready
		t.Fatalf("hello with a precomputed es took %d X25519 operations, want 1", n)
	}
	if h, _ := pool.PrecomputedStats(); h != 1 {
		t.Fatal("the hello did not use the precomputed es")
	}
	// The same ephemeral key, generated and used on the spot.
	ref := &Config{Identity: ic.Identity, Rand: bytes.NewReader(priv)}
	rini, err := NewInitiator(ref, peer, 7)
	if err != nil {
		t.Fatal(err)
	}
	want, err := rini.Hello(t0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(hello, want) {
		t.Fatal("hello with a precomputed es differs from the one computed on the spot")
	}
	resp, _ := NewResponder(rc)
	res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ini.HandleResponderHello(res.Reply, t0); err != nil {
		t.Fatal(err)
	}
}

// TestPrecomputedESBoundToPeerAndKey: the pool hands a precomputed es only
// for its responder, with the key pair it was computed for, once; other
// responders get none of it; evicting a stock erases its es values.
func TestPrecomputedESBoundToPeerAndKey(t *testing.T) {
	pool := NewEphemeralPool(8, newDetRand(51))
	peers := make([]PublicKey, maxPeerStocks+1)
	for i := range peers {
		peers[i] = mustIdentity(t, byte(60+i)).Public
	}
	a, b := peers[0], peers[1]
	// Dial a and b a few times each (empty pool: no es yet) to grow their
	// stocks' targets to 4 (one per dial after the first, at most 8/2).
	for range 5 {
		for _, p := range []PublicKey{a, b} {
			if k, es := pool.takeFor(p); k != nil || es != nil {
				t.Fatal("an empty pool handed out a key")
			}
		}
	}
	if _, err := pool.Fill(); err != nil {
		t.Fatal(err)
	}
	if n := pool.Len(); n != 8+4+4 {
		t.Fatalf("pool holds %d key pairs, want 16 (8 plain, 4 per responder)", n)
	}
	seen := map[string]bool{}
	for _, p := range []PublicKey{a, b} {
		for range 4 {
			k, es := pool.takeFor(p)
			if k == nil || es == nil {
				t.Fatal("no precomputed key pair for a dialled responder")
			}
			if seen[string(k.Bytes())] {
				t.Fatal("a key pair was handed out twice")
			}
			seen[string(k.Bytes())] = true
			want, err := refDH(t, k.Bytes(), p[:])
			if err != nil || !bytes.Equal(es, want) {
				t.Fatal("precomputed es is not DH(ephemeral, this responder)")
			}
		}
	}
	// Their stocks are empty now: the next dial gets a plain key, no es.
	if k, es := pool.takeFor(a); k == nil || es != nil || seen[string(k.Bytes())] {
		t.Fatal("a dial with an empty stock must get a fresh plain key and no es")
	}
	// A responder never dialled gets no es.
	if k, es := pool.takeFor(peers[2]); es != nil || k == nil {
		t.Fatal("es handed out for a responder with no stock")
	}
	// Met once, a peer costs no precomputation.
	pool.Fill()
	pool.mu.Lock()
	once := len(pool.findStock(peers[2]).keys)
	pool.mu.Unlock()
	if once != 0 {
		t.Fatalf("%d key pairs precomputed for a peer met once", once)
	}

	// Eviction: fill stocks for all, then dial a ninth responder.
	pool = NewEphemeralPool(8, newDetRand(52))
	for _, p := range peers[:maxPeerStocks] {
		pool.takeFor(p)
		pool.takeFor(p)
	}
	pool.Fill()
	pool.mu.Lock()
	first := pool.findStock(peers[0])
	stocked := first.keys // the stock's own entries, to see them erased
	evicted := append([]precomputedKey(nil), first.keys...)
	pool.mu.Unlock()
	if len(evicted) != 1 || evicted[0].dh == ([KeySize]byte{}) {
		t.Fatalf("first responder's stock holds %d, want 1 with its es", len(evicted))
	}
	pool.takeFor(peers[maxPeerStocks]) // evicts peers[0]'s stock
	pool.mu.Lock()
	gone := pool.findStock(peers[0]) == nil
	erased := len(first.keys) == 0
	pool.mu.Unlock()
	if !gone || !erased {
		t.Fatal("the least recently dialled responder's stock was not evicted")
	}
	for i := range stocked { // the evicted stock's es values are wiped, not just dropped
		if stocked[i].dh != ([KeySize]byte{}) || stocked[i].k != nil {
			t.Fatal("an evicted stock's precomputed es is still in memory")
		}
	}
	if k, es := pool.takeFor(peers[0]); es != nil || k == nil {
		t.Fatal("es handed out from an evicted stock")
	}
}

// TestHandshakeDHPrecomputedSlots: a value computed ahead is used only for
// the exact key object and public key it was computed for, once.
func TestHandshakeDHPrecomputedSlots(t *testing.T) {
	me, x, y := mustIdentity(t, 1), mustIdentity(t, 2), mustIdentity(t, 3)
	d, err := newHandshakeDH(&Config{Identity: me}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := d.GenerateKeypair(newDetRand(9))
	if err != nil {
		t.Fatal(err)
	}
	marker := bytes.Repeat([]byte{0xA5}, KeySize) // not a real DH value: shows where it is used
	d.setPre(0, d.eph, x.Public[:], marker)
	count := func(f func() []byte) ([]byte, uint64) {
		x0 := X25519Operations()
		out := f()
		return out, X25519Operations() - x0
	}
	// Another peer key: computed, not the marker.
	out, n := count(func() []byte { o, _ := d.DH(e.Private, y.Public[:]); return o })
	if bytes.Equal(out, marker) || n != 1 {
		t.Fatal("a value computed ahead was used for another public key")
	}
	// Our static key with the same public key: computed, not the marker.
	out, n = count(func() []byte { o, _ := d.DH(me.Private[:], x.Public[:]); return o })
	if bytes.Equal(out, marker) || n != 1 {
		t.Fatal("a value computed ahead for the ephemeral was used for the static key")
	}
	// The right pair: the marker, no multiplication; then it is gone.
	out, n = count(func() []byte { o, _ := d.DH(e.Private, x.Public[:]); return o })
	if !bytes.Equal(out, marker) || n != 0 {
		t.Fatal("the value computed ahead was not used")
	}
	out, n = count(func() []byte { o, _ := d.DH(e.Private, x.Public[:]); return o })
	want, _ := refDH(t, e.Private, x.Public[:])
	if !bytes.Equal(out, want) || n != 1 {
		t.Fatal("a value computed ahead was used twice")
	}
	// A new ephemeral never sees the old one's values.
	d.setPre(0, d.eph, x.Public[:], marker)
	e2, _ := d.GenerateKeypair(newDetRand(10))
	if out, _ := d.DH(e2.Private, x.Public[:]); bytes.Equal(out, marker) {
		t.Fatal("a value computed ahead for one ephemeral was used for another")
	}
}

// TestForgedReplyValuesNotReused: after a forged ResponderHello (another
// ephemeral) the genuine one completes with the keys of an undisturbed
// handshake. Two things keep the values computed ahead for the forged one
// out of it (prepareFinish recomputes both slots; usePre binds each value
// to its key): this end-to-end test fails only when both break;
// TestHandshakeDHPrecomputedSlots checks the binding alone.
func TestForgedReplyValuesNotReused(t *testing.T) {
	mallory := mustIdentity(t, 66)
	run := func(forge bool) transcript {
		ic, rc := testPeers(t)
		resp, _ := NewResponder(rc)
		ini, _ := NewInitiator(ic, rc.Identity.Public, 12)
		hello, _ := ini.Hello(t0)
		res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
		if err != nil {
			t.Fatal(err)
		}
		if forge {
			forged := clone(res.Reply)
			copy(forged[36:68], mallory.Public[:])
			if _, _, err := ini.HandleResponderHello(forged, t0); err == nil {
				t.Fatal("forged reply accepted")
			}
		}
		is, fin, err := ini.HandleResponderHello(res.Reply, t0)
		if err != nil {
			t.Fatalf("genuine reply: %v", err)
		}
		if err := res.Session.HandleInitiatorFinish(fin); err != nil {
			t.Fatal(err)
		}
		return transcript{hello, res.Reply, fin, seal(t, is, "i2r"), seal(t, res.Session, "r2i")}
	}
	if !run(true).equal(run(false)) {
		t.Fatal("a forged reply changed the genuine handshake's result")
	}
}

// TestConcurrentHandshakesSharedCaches: many handshakes at once on shared
// pools and caches with parallel DH, a refiller racing them (run with
// -race): all complete, every ephemeral key is used once.
func TestConcurrentHandshakesSharedCaches(t *testing.T) {
	ic, rc := testPeers(t)
	ic.Rand, rc.Rand = nil, nil // crypto/rand: safe for concurrent use
	ic.ParallelDH, rc.ParallelDH = true, true
	ic.StaticCache, rc.StaticCache = NewStaticSecretCache(0), NewStaticSecretCache(0)
	ic.Ephemerals, rc.Ephemerals = NewEphemeralPool(8, nil), NewEphemeralPool(8, nil)
	ic.Ephemerals.Fill()
	rc.Ephemerals.Fill()
	stop := make(chan struct{})
	var refill sync.WaitGroup
	for _, p := range []*EphemeralPool{ic.Ephemerals, rc.Ephemerals} {
		refill.Add(1)
		go func() {
			defer refill.Done()
			for {
				select {
				case <-stop:
					return
				case <-p.Low():
					p.Fill()
				}
			}
		}()
	}
	const workers, each = 4, 12
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := NewResponder(rc) // a Responder is per goroutine
			if err != nil {
				errs <- err
				return
			}
			for i := range each {
				ini, err := NewInitiator(ic, rc.Identity.Public, uint64(w*1000+i))
				if err != nil {
					errs <- err
					return
				}
				hello, err := ini.Hello(t0)
				if err != nil {
					errs <- err
					return
				}
				res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
				if err != nil {
					errs <- err
					return
				}
				is, fin, err := ini.HandleResponderHello(res.Reply, t0)
				if err != nil {
					errs <- err
					return
				}
				if err := res.Session.HandleInitiatorFinish(fin); err != nil {
					errs <- err
					return
				}
				pkt, _, err := is.Seal(make([]byte, 0, 1+PacketOverhead), 0, []byte("x"))
				if err != nil {
					errs <- err
					return
				}
				if _, err := res.Session.Open(pkt, t0); err != nil {
					errs <- err
					return
				}
				mh, _ := parseInitiatorHello(hello)
				mr, _ := parseResponderHello(res.Reply)
				mu.Lock()
				for _, e := range [][]byte{mh.noise[:KeySize], mr.noise[:KeySize]} {
					if seen[string(e)] {
						mu.Unlock()
						errs <- fmt.Errorf("ephemeral key used twice")
						return
					}
					seen[string(e)] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	refill.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(seen) != 2*workers*each {
		t.Fatalf("%d distinct ephemerals, want %d", len(seen), 2*workers*each)
	}
	if h, _ := ic.Ephemerals.PrecomputedStats(); h == 0 {
		t.Log("no handshake took a precomputed es (refills lost every race)")
	}
}

// TestRunPairConcurrent: pairs computed from many goroutines at once (with
// -race) give the reference results, whether the helper or the caller
// computes the second DH.
func TestRunPairConcurrent(t *testing.T) {
	id, p1, p2 := mustIdentity(t, 1), mustIdentity(t, 2), mustIdentity(t, 3)
	k := staticKey(&id)
	w1, _ := refDH(t, id.Private[:], p1.Public[:])
	w2, _ := refDH(t, id.Private[:], p2.Public[:])
	var wg sync.WaitGroup
	bad := make(chan string, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				a, b := dhJob{k: k, pub: p1.Public[:]}, dhJob{k: k, pub: p2.Public[:]}
				pairLate.Store(0) // try the helper every time (not the adaptive fallback)
				runPair(&a, &b, true)
				if a.err != nil || b.err != nil || !bytes.Equal(a.out, w1) || !bytes.Equal(b.out, w2) {
					bad <- "wrong pair result"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(bad)
	for s := range bad {
		t.Fatal(s)
	}
}

// TestResponderStocksOnlyAuthenticatedPeers: a responder keeps precomputed
// key pairs only for initiators it authenticated and allowed: refused or
// forged hellos leave no stock (and take no key pair).
func TestResponderStocksOnlyAuthenticatedPeers(t *testing.T) {
	ic, rc := testPeers(t)
	rc.Ephemerals = NewEphemeralPool(4, newDetRand(71))
	rc.Ephemerals.Fill()
	rc.Authorize = func(PublicKey) bool { return false }
	resp, _ := NewResponder(rc)
	ini, _ := NewInitiator(ic, rc.Identity.Public, 1)
	hello, _ := ini.Hello(t0)
	if _, err := resp.HandleInitiatorHello(hello, testAddr, t0, false); err == nil {
		t.Fatal("refused initiator accepted")
	}
	// A hello whose encrypted static key was tampered with fails to decrypt.
	ini, _ = NewInitiator(ic, rc.Identity.Public, 2)
	hello, _ = ini.Hello(t0)
	hello[36+KeySize+3] ^= 1
	m1 := mac(resp.mac1Key[:], hello[:len(hello)-32])
	copy(hello[len(hello)-32:], m1[:])
	if _, err := resp.HandleInitiatorHello(hello, testAddr, t0, false); err == nil {
		t.Fatal("tampered hello accepted")
	}
	p := rc.Ephemerals
	p.mu.Lock()
	stocks, keys := len(p.stocks), len(p.keys)
	p.mu.Unlock()
	if stocks != 0 || keys != 4 {
		t.Fatalf("after refused and forged hellos: %d stocks, %d keys (want 0, 4)", stocks, keys)
	}
	// Allowed: the initiator's stock appears (met once: nothing precomputed).
	rc.Authorize = nil
	resp, _ = NewResponder(rc)
	handshakeWith(t, ic, resp, rc.Identity.Public, 3)
	p.mu.Lock()
	st := p.findStock(ic.Identity.Public)
	p.mu.Unlock()
	if st == nil {
		t.Fatal("no stock for an authenticated initiator")
	}
}

// TestRefillSignalAfterCriticalPath: a handshake that leaves the pool low
// asks for a refill only once past its critical path — the initiator when
// the ResponderHello is processed, the responder when the initiator
// confirmed — so the refill does not compete with its DHs; a pool found
// empty asks at once.
func TestRefillSignalAfterCriticalPath(t *testing.T) {
	ic, rc := testPeers(t)
	ic.Ephemerals, rc.Ephemerals = NewEphemeralPool(2, newDetRand(81)), NewEphemeralPool(2, newDetRand(82))
	ic.Ephemerals.Fill()
	rc.Ephemerals.Fill()
	signalled := func(p *EphemeralPool) bool {
		select {
		case <-p.Low():
			return true
		default:
			return false
		}
	}
	resp, _ := NewResponder(rc)
	ini, _ := NewInitiator(ic, rc.Identity.Public, 1)
	hello, _ := ini.Hello(t0) // 1 key left of 2: low
	if signalled(ic.Ephemerals) {
		t.Fatal("initiator's pool signalled before the handshake's critical path ended")
	}
	res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	if signalled(rc.Ephemerals) {
		t.Fatal("responder's pool signalled before the initiator confirmed")
	}
	_, fin, err := ini.HandleResponderHello(res.Reply, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !signalled(ic.Ephemerals) {
		t.Fatal("initiator's pool not signalled after the handshake")
	}
	if err := res.Session.HandleInitiatorFinish(fin); err != nil {
		t.Fatal(err)
	}
	if !signalled(rc.Ephemerals) {
		t.Fatal("responder's pool not signalled after confirmation")
	}
	// Confirmation by a 1-RTT packet instead of the Finish signals too.
	r := runHandshake(t, ic, resp, rc.Identity.Public, 2, false) // no Finish
	is, rs := r.is, r.res.Session
	signalled(rc.Ephemerals)
	if _, err := rs.Open(seal(t, is, "x"), t0); err != nil {
		t.Fatal(err)
	}
	if !signalled(rc.Ephemerals) {
		t.Fatal("responder's pool not signalled after confirmation by data")
	}
	// An empty pool asks at once.
	p := NewEphemeralPool(2, nil)
	ic.Ephemerals = p
	ini, _ = NewInitiator(ic, rc.Identity.Public, 3)
	ini.Hello(t0)
	if !signalled(p) {
		t.Fatal("an empty pool did not ask for a refill at once")
	}
}
