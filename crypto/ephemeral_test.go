package crypto

import (
	"bytes"
	"runtime"
	"sync"
	"testing"

	"github.com/flynn/noise"
)

// handshakeOps runs one handshake between ic and resp and returns the X25519
// operations each side performed (process-wide counter: the crypto tests do
// not run in parallel).
func handshakeOps(t *testing.T, ic *Config, resp *Responder, rpub PublicKey, connID uint64) (ini, res uint64, is, rs *Session, hello, reply []byte) {
	t.Helper()
	ini, res, is, rs, hello, reply, _, _ = handshakeOpsRounds(t, ic, resp, rpub, connID)
	return
}

// handshakeOpsRounds is handshakeOps that also returns each side's X25519
// steps on the critical path (x25519Rounds, not counting the pairs whose
// helper goroutine started late: the scheduler's doing, not the plan's).
func handshakeOpsRounds(t *testing.T, ic *Config, resp *Responder, rpub PublicKey, connID uint64) (ini, res uint64, is, rs *Session, hello, reply []byte, roundI, roundR uint64) {
	t.Helper()
	rounds := func() uint64 { return x25519Rounds.Load() - x25519PairsInline.Load() }
	q0 := rounds()
	c0 := X25519Operations()
	in, err := NewInitiator(ic, rpub, connID)
	if err != nil {
		t.Fatal(err)
	}
	hello, err = in.Hello(t0)
	if err != nil {
		t.Fatal(err)
	}
	c1, q1 := X25519Operations(), rounds()
	r, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	c2, q2 := X25519Operations(), rounds()
	is, fin, err := in.HandleResponderHello(r.Reply, t0)
	if err != nil {
		t.Fatal(err)
	}
	c3, q3 := X25519Operations(), rounds()
	if err := r.Session.HandleInitiatorFinish(fin); err != nil {
		t.Fatal(err)
	}
	return (c1 - c0) + (c3 - c2), c2 - c1, is, r.Session, hello, r.Reply, (q1 - q0) + (q3 - q2), q2 - q1
}

// TestX25519OperationsPerSide pins the handshake's cost: 5 scalar
// multiplications per side (one key generation, four DH; not 10, as
// flynn/noise's own DH25519 would spend), 4 with a warm StaticSecretCache,
// and with an EphemeralPool that knows the peer two fewer: the key pair was
// generated ahead, with its DH with the peer's static key (the initiator's
// es, the responder's se).
//
// It also pins the steps on the critical path (rounds: multiplications
// done one after the other while the peer waits): with parallel DH the
// pairs ee and se (and es and ss of a first-contact initiator) count once.
// With both caches: initiator 1 (ee ∥ se), responder 2 (es, then ee).
func TestX25519OperationsPerSide(t *testing.T) {
	cases := []struct {
		name                 string
		cache, pool          bool
		wantI, wantR         uint64
		parRoundI, parRoundR uint64 // critical-path steps with parallel DH
	}{
		{"plain", false, false, 5, 5, 3, 4},
		{"static-cache", true, false, 4, 4, 3, 3},
		{"pool", false, true, 3, 3, 2, 3},
		{"static-cache+pool", true, true, 2, 2, 1, 2},
	}
	for _, tc := range cases {
		for _, seq := range []bool{true, false} {
			name := tc.name + "/parallel"
			if seq {
				name = tc.name + "/sequential"
			}
			t.Run(name, func(t *testing.T) {
				testOpsPerSide(t, tc.cache, tc.pool, seq, tc.wantI, tc.wantR, tc.parRoundI, tc.parRoundR)
			})
		}
	}
}

func testOpsPerSide(t *testing.T, cache, pool, seq bool, wantI, wantR, parRoundI, parRoundR uint64) {
	ic, rc := testPeers(t)
	ic.ParallelDH, rc.ParallelDH = !seq, !seq
	// Sequentially every multiplication is on the critical path.
	wantRoundI, wantRoundR := wantI, wantR
	if !seq && runtime.GOMAXPROCS(0) > 1 {
		wantRoundI, wantRoundR = parRoundI, parRoundR
	}
	if cache {
		ic.StaticCache, rc.StaticCache = NewStaticSecretCache(0), NewStaticSecretCache(0)
	}
	if pool {
		ic.Ephemerals, rc.Ephemerals = NewEphemeralPool(4, newDetRand(21)), NewEphemeralPool(4, newDetRand(22))
	}
	resp, err := NewResponder(rc)
	if err != nil {
		t.Fatal(err)
	}
	// Warm up: static keys, the cache; with a pool, two handshakes make each
	// side keep a stock for the other (from its second handshake on).
	handshakeOps(t, ic, resp, rc.Identity.Public, 1)
	handshakeOps(t, ic, resp, rc.Identity.Public, 2)
	for i := range 3 {
		if pool {
			// Refilling happens off the critical path; not counted.
			ic.Ephemerals.Fill()
			rc.Ephemerals.Fill()
		}
		gotI, gotR, is, rs, _, _, roundI, roundR := handshakeOpsRounds(t, ic, resp, rc.Identity.Public, uint64(10+i))
		if gotI != wantI || gotR != wantR {
			t.Fatalf("X25519 operations: initiator %d, responder %d; want %d, %d", gotI, gotR, wantI, wantR)
		}
		if roundI != wantRoundI || roundR != wantRoundR {
			t.Fatalf("X25519 steps on the critical path: initiator %d, responder %d; want %d, %d", roundI, roundR, wantRoundI, wantRoundR)
		}
		// The sessions agree.
		pkt := seal(t, is, "ping")
		if o, err := rs.Open(pkt, t0); err != nil || string(o.Payload) != "ping" {
			t.Fatalf("open: %v", err)
		}
	}
}

// TestEphemeralPoolKeysUsedOnce: every handshake drawing from a pool (and
// those that find it empty) uses a distinct ephemeral key, the pool hands a
// key out once, and handshakes complete with pooled keys on both sides.
func TestEphemeralPoolKeysUsedOnce(t *testing.T) {
	ic, rc := testPeers(t)
	ic.Ephemerals, rc.Ephemerals = NewEphemeralPool(8, nil), NewEphemeralPool(8, nil)
	if n, err := ic.Ephemerals.Fill(); err != nil || n != 8 || ic.Ephemerals.Len() != 8 {
		t.Fatalf("fill: %d %v", n, err)
	}
	if n, _ := ic.Ephemerals.Fill(); n != 0 {
		t.Fatal("a full pool grew")
	}
	rc.Ephemerals.Fill()
	resp, err := NewResponder(rc)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	note := func(e []byte, who string) {
		if prev, dup := seen[string(e)]; dup {
			t.Fatalf("ephemeral key used twice (%s, then %s)", prev, who)
		}
		seen[string(e)] = who
	}
	const n = 20
	for i := range n {
		if i == 12 {
			ic.Ephemerals.Fill() // refill after running dry
		}
		_, _, is, rs, hello, reply := handshakeOps(t, ic, resp, rc.Identity.Public, uint64(i))
		mh, err := parseInitiatorHello(hello)
		if err != nil {
			t.Fatal(err)
		}
		mr, err := parseResponderHello(reply)
		if err != nil {
			t.Fatal(err)
		}
		note(mh.noise[:KeySize], "initiator")
		note(mr.noise[:KeySize], "responder")
		pkt := seal(t, rs, "pong")
		if o, err := is.Open(pkt, t0); err != nil || string(o.Payload) != "pong" {
			t.Fatalf("open: %v", err)
		}
	}
	// Initiator: 8 from the first fill, 4 misses (i = 8..11), 8 from the
	// refill (i = 12..19).
	// The refill also made the responder's stock: its target grew by one
	// per dial up to 4 (half the pool), so i = 12..15 took key pairs with
	// es precomputed, i = 16..19 plain ones, and 4 plain ones are left.
	if h, m := ic.Ephemerals.Stats(); h != 16 || m != 4 {
		t.Fatalf("initiator pool hits %d misses %d", h, m)
	}
	if h, m := ic.Ephemerals.PrecomputedStats(); h != 4 || m != n-4 {
		t.Fatalf("initiator pool precomputed hits %d misses %d", h, m)
	}
	if ic.Ephemerals.Len() != 4 {
		t.Fatalf("pool holds %d keys, want 4", ic.Ephemerals.Len())
	}
	for _, k := range poolKeys(ic.Ephemerals) {
		if _, used := seen[string(k)]; used {
			t.Fatal("pool still holds a key it handed out")
		}
	}
	if h, m := rc.Ephemerals.Stats(); h != 8 || m != n-8 {
		t.Fatalf("responder pool hits %d misses %d", h, m)
	}
	select {
	case <-ic.Ephemerals.Low():
	default:
		t.Fatal("an empty pool did not ask for a refill")
	}
}

// TestEphemeralPoolConcurrent: takers racing a refiller never get the same
// key pair twice (run with -race).
func TestEphemeralPoolConcurrent(t *testing.T) {
	p := NewEphemeralPool(16, nil)
	p.Fill()
	stop := make(chan struct{})
	var fillers sync.WaitGroup
	fillers.Add(1)
	go func() {
		defer fillers.Done()
		for {
			select {
			case <-stop:
				return
			case <-p.Low():
				if _, err := p.Fill(); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	const takers, each = 4, 40
	got := make([][][]byte, takers)
	var wg sync.WaitGroup
	for g := range takers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if k := p.take(); k != nil {
					got[g] = append(got[g], append([]byte(nil), k.pub[:]...))
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	fillers.Wait()
	seen := map[string]bool{}
	total := 0
	for _, keys := range got {
		for _, k := range keys {
			if seen[string(k)] {
				t.Fatal("a pooled key pair was handed out twice")
			}
			seen[string(k)] = true
			total++
		}
	}
	if h, _ := p.Stats(); h != uint64(total) || total < 16 {
		t.Fatalf("hits %d, keys received %d", h, total)
	}
}

// TestHandshakeDHOneMultiplication: the DH of handshakeDH agrees with
// flynn/noise's DH25519 (two multiplications) for the static key and for
// a generated ephemeral.
func TestHandshakeDHOneMultiplication(t *testing.T) {
	a, b := mustIdentity(t, 1), mustIdentity(t, 2)
	d, err := newHandshakeDH(&Config{Identity: a}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c0 := X25519Operations()
	x, err := d.DH(a.Private[:], b.Public[:])
	if err != nil || X25519Operations()-c0 != 1 {
		t.Fatalf("static DH: %v, %d operations", err, X25519Operations()-c0)
	}
	y, _ := refDH(t, b.Private[:], a.Public[:])
	if !bytes.Equal(x, y) {
		t.Fatal("static DH disagrees with the reference")
	}
	c0 = X25519Operations()
	e, err := d.GenerateKeypair(newDetRand(5))
	if err != nil || X25519Operations()-c0 != 1 {
		t.Fatalf("keygen: %v, %d operations", err, X25519Operations()-c0)
	}
	x, _ = d.DH(e.Private, b.Public[:])
	y, _ = refDH(t, b.Private[:], e.Public)
	if !bytes.Equal(x, y) {
		t.Fatal("ephemeral DH disagrees with the reference")
	}
	if _, err := d.DH(e.Private, make([]byte, KeySize)); err == nil {
		t.Fatal("all-zero (low-order) public key accepted")
	}
}

// poolKeys lists the public keys of the key pairs a pool holds.
func poolKeys(p *EphemeralPool) [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out [][]byte
	for _, k := range p.keys {
		out = append(out, append([]byte(nil), k.pub[:]...))
	}
	for _, st := range p.stocks {
		for _, pk := range st.keys {
			out = append(out, append([]byte(nil), pk.k.pub[:]...))
		}
	}
	return out
}

func refDH(t *testing.T, priv, pub []byte) ([]byte, error) {
	t.Helper()
	return noise.DH25519.DH(priv, pub)
}
