package crypto

import (
	"bytes"
	"sync"
	"testing"

	"github.com/flynn/noise"
)

// handshakeOps runs one handshake between ic and resp and returns the X25519
// operations each side performed (process-wide counter: the crypto tests do
// not run in parallel).
func handshakeOps(t *testing.T, ic *Config, resp *Responder, rpub PublicKey, connID uint64) (ini, res uint64, is, rs *Session, hello, reply []byte) {
	t.Helper()
	c0 := X25519Operations()
	in, err := NewInitiator(ic, rpub, connID)
	if err != nil {
		t.Fatal(err)
	}
	hello, err = in.Hello(t0)
	if err != nil {
		t.Fatal(err)
	}
	c1 := X25519Operations()
	r, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
	if err != nil {
		t.Fatal(err)
	}
	c2 := X25519Operations()
	is, fin, err := in.HandleResponderHello(r.Reply, t0)
	if err != nil {
		t.Fatal(err)
	}
	c3 := X25519Operations()
	if err := r.Session.HandleInitiatorFinish(fin); err != nil {
		t.Fatal(err)
	}
	return (c1 - c0) + (c3 - c2), c2 - c1, is, r.Session, hello, r.Reply
}

// TestX25519OperationsPerSide pins the handshake's cost: 5 scalar
// multiplications per side (one key generation, four DH; not 10, as
// flynn/noise's own DH25519 would spend), 4 with a warm StaticSecretCache,
// one fewer again with an EphemeralPool that has a key ready.
func TestX25519OperationsPerSide(t *testing.T) {
	cases := []struct {
		name          string
		cache, pool   bool
		wantI, wantR  uint64
		poolKeysTaken uint64
	}{
		{"plain", false, false, 5, 5, 0},
		{"static-cache", true, false, 4, 4, 0},
		{"pool", false, true, 4, 4, 1},
		{"static-cache+pool", true, true, 3, 3, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ic, rc := testPeers(t)
			if tc.cache {
				ic.StaticCache, rc.StaticCache = NewStaticSecretCache(0), NewStaticSecretCache(0)
			}
			if tc.pool {
				ic.Ephemerals, rc.Ephemerals = NewEphemeralPool(4, newDetRand(21)), NewEphemeralPool(4, newDetRand(22))
			}
			resp, err := NewResponder(rc)
			if err != nil {
				t.Fatal(err)
			}
			handshakeOps(t, ic, resp, rc.Identity.Public, 1) // warm: static keys, cache
			for i := range 3 {
				if tc.pool {
					// Refilling happens off the critical path; not counted.
					ic.Ephemerals.Fill()
					rc.Ephemerals.Fill()
				}
				gotI, gotR, is, rs, _, _ := handshakeOps(t, ic, resp, rc.Identity.Public, uint64(10+i))
				if gotI != tc.wantI || gotR != tc.wantR {
					t.Fatalf("X25519 operations: initiator %d, responder %d; want %d, %d", gotI, gotR, tc.wantI, tc.wantR)
				}
				// The sessions agree.
				pkt := seal(t, is, "ping")
				if o, err := rs.Open(pkt, t0); err != nil || string(o.Payload) != "ping" {
					t.Fatalf("open: %v", err)
				}
			}
		})
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
	if h, m := ic.Ephemerals.Stats(); h != 16 || m != 4 {
		t.Fatalf("initiator pool hits %d misses %d", h, m)
	}
	if ic.Ephemerals.Len() != 0 {
		t.Fatal("pool still holds keys it handed out")
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
					got[g] = append(got[g], k.PublicKey().Bytes())
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

func refDH(t *testing.T, priv, pub []byte) ([]byte, error) {
	t.Helper()
	return noise.DH25519.DH(priv, pub)
}
