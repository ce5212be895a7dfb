package transport

import (
	"testing"

	"github.com/mxp-dataplane/mxp/crypto"
)

// With UseHandshakeCaches on both endpoints, repeat handshakes between them
// take their ephemerals from the pools and their static-static DH from the
// caches, and still connect; the callers' crypto configs are untouched.
func TestUseHandshakeCaches(t *testing.T) {
	tn := newTestNet(t, 7, clean, clean, nil)
	orig := tn.a.ep.cfg.Crypto
	var caches [2]*crypto.StaticSecretCache
	var pools [2]*crypto.EphemeralPool
	for i, n := range []*node{tn.a, tn.b} {
		caches[i], pools[i] = crypto.NewStaticSecretCache(0), crypto.NewEphemeralPool(4, newSeeded(uint64(50+i)))
		if _, err := pools[i].Fill(); err != nil {
			t.Fatal(err)
		}
		if err := n.ep.UseHandshakeCaches(caches[i], pools[i]); err != nil {
			t.Fatal(err)
		}
	}
	if orig.StaticCache != nil || orig.Ephemerals != nil {
		t.Fatal("the caller's crypto config was modified")
	}
	for range 3 {
		ca, cb := tn.dial()
		if ca.PeerKey() != tn.b.id.Public || cb.PeerKey() != tn.a.id.Public {
			t.Fatal("peers not authenticated")
		}
	}
	for i := range 2 {
		if h, m := caches[i].Stats(); h != 2 || m != 1 {
			t.Errorf("endpoint %d: static cache hits %d, misses %d; want 2, 1", i, h, m)
		}
		if h, m := pools[i].Stats(); h != 3 || m != 0 {
			t.Errorf("endpoint %d: pool hits %d, misses %d; want 3, 0", i, h, m)
		}
	}
}
