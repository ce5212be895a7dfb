package crypto

import (
	"crypto/cipher"
	"encoding/binary"
	"runtime"
	"testing"
	"time"

	"golang.org/x/crypto/curve25519"
)

const (
	benchBatch = 64
	benchSize  = 1200
)

// BenchmarkHandshake is one complete handshake, both sides: InitiatorHello,
// ResponderHello, InitiatorFinish, in memory. Compare with BenchmarkX25519/op:
// each side performs 5 X25519 operations (one key generation, four DH).
func BenchmarkHandshake(b *testing.B) {
	b.Run("uncached", func(b *testing.B) { benchHandshake(b, false, false) })
	// With StaticSecretCache on both sides: 4 X25519 operations per side.
	b.Run("static-cache", func(b *testing.B) { benchHandshake(b, true, false) })
	// And an EphemeralPool, refilled outside the timed region: 3 on the
	// responder, 2 on the initiator (the pool precomputes es for the
	// responder it dials).
	b.Run("static-cache+pool", func(b *testing.B) { benchHandshake(b, true, true) })
	// The same with Config.ParallelDH: ee and se at once on each side.
	b.Run("static-cache+pool/parallel", func(b *testing.B) { benchHandshake(b, true, true, true) })
}

func benchHandshake(b *testing.B, cached, pooled bool, parallel ...bool) {
	ic, rc := testPeers(b)
	if len(parallel) > 0 {
		ic.ParallelDH, rc.ParallelDH = parallel[0], parallel[0]
	}
	inline0 := x25519PairsInline.Load()
	defer func() {
		b.ReportMetric(float64(x25519PairsInline.Load()-inline0)/float64(b.N), "pairs-inline/op")
	}()
	if cached {
		ic.StaticCache, rc.StaticCache = NewStaticSecretCache(0), NewStaticSecretCache(0)
	}
	if pooled {
		ic.Ephemerals, rc.Ephemerals = NewEphemeralPool(64, nil), NewEphemeralPool(64, nil)
	}
	resp, err := NewResponder(rc)
	if err != nil {
		b.Fatal(err)
	}
	if cached { // first contact pays the static-static DH
		handshakeWith(b, ic, resp, rc.Identity.Public, 1<<40)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	defer func() { reportCPU(b, cpu0) }()
	for i := 0; i < b.N; i++ {
		if pooled && i%64 == 0 {
			b.StopTimer()
			ic.Ephemerals.Fill()
			rc.Ephemerals.Fill()
			b.StartTimer()
		}
		ini, err := NewInitiator(ic, rc.Identity.Public, uint64(i))
		if err != nil {
			b.Fatal(err)
		}
		hello, err := ini.Hello(t0)
		if err != nil {
			b.Fatal(err)
		}
		res, err := resp.HandleInitiatorHello(hello, testAddr, t0, false)
		if err != nil {
			b.Fatal(err)
		}
		_, fin, err := ini.HandleResponderHello(res.Reply, t0)
		if err != nil {
			b.Fatal(err)
		}
		if err := res.Session.HandleInitiatorFinish(fin); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHandshakeResponder is the responder's share of a handshake:
// HandleInitiatorHello (2 DH, key generation, 2 DH) and HandleInitiatorFinish.
// Hellos are prepared outside the timed region. The initiator's share is
// BenchmarkHandshake minus this.
func BenchmarkHandshakeResponder(b *testing.B) {
	for _, cached := range []bool{false, true} {
		name := "uncached"
		if cached {
			name = "static-cache"
		}
		b.Run(name, func(b *testing.B) {
			ic, rc := testPeers(b)
			if cached {
				ic.StaticCache, rc.StaticCache = NewStaticSecretCache(0), NewStaticSecretCache(0)
			}
			resp, _ := NewResponder(rc)
			// Warm the caches (first contact pays the static-static DH).
			handshakeWith(b, ic, resp, rc.Identity.Public, 0)
			const pool = 64
			inis := make([]*Initiator, pool)
			hellos := make([][]byte, pool)
			prepare := func() {
				for j := range inis {
					inis[j], _ = NewInitiator(ic, rc.Identity.Public, uint64(j))
					hellos[j], _ = inis[j].Hello(t0)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				j := i % pool
				if j == 0 {
					b.StopTimer()
					prepare()
					b.StartTimer()
				}
				res, err := resp.HandleInitiatorHello(hellos[j], testAddr, t0, false)
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				_, fin, err := inis[j].HandleResponderHello(res.Reply, t0)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if err := res.Session.HandleInitiatorFinish(fin); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkX25519 is one X25519 scalar multiplication, the unit of
// handshake cost ("op"), and ("x-crypto") x/crypto's curve25519.X25519,
// which flynn/noise's DH25519 calls: it costs two (it rebuilds the private
// key's public key first).
func BenchmarkX25519(b *testing.B) {
	id := mustIdentity(b, 1)
	peer := mustIdentity(b, 2)
	b.Run("op", func(b *testing.B) {
		k := staticKey(&id)
		cpu0 := processCPU()
		defer func() { reportCPU(b, cpu0) }()
		for i := 0; i < b.N; i++ {
			if _, err := x25519DH(k, peer.Public[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x-crypto", func(b *testing.B) {
		cpu0 := processCPU()
		defer func() { reportCPU(b, cpu0) }()
		for i := 0; i < b.N; i++ {
			if _, err := curve25519.X25519(id.Private[:], peer.Public[:]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// reportCPU adds a "cpu-ns/op" metric: process CPU time per operation,
// which unlike ns/op is not inflated when the machine is shared.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkCookieReply is the responder's cost per hello under load
// (stateless path: mac1 check, cookie MAC, sealed reply).
func BenchmarkCookieReply(b *testing.B) {
	ic, rc := testPeers(b)
	resp, _ := NewResponder(rc)
	ini, _ := NewInitiator(ic, rc.Identity.Public, 1)
	hello, _ := ini.Hello(t0)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		res, err := resp.HandleInitiatorHello(hello, testAddr, t0, true)
		if err != nil || !res.CookieReply {
			b.Fatal(err)
		}
	}
}

func benchSuites(b *testing.B, fn func(b *testing.B, s Suite)) {
	for _, s := range suitesUnderTest() {
		b.Run(s.String(), func(b *testing.B) { fn(b, s) })
	}
}

// BenchmarkSealBatch seals 64 packets of 1200 bytes per op: AEAD, header
// and header protection.
func BenchmarkSealBatch(b *testing.B) {
	benchSuites(b, func(b *testing.B, s Suite) {
		a, _ := sessionPair(b, s, SessionConfig{KeyUpdateThreshold: 1 << 40})
		pkts := makeBatch(benchBatch, benchSize)
		b.SetBytes(benchBatch * benchSize)
		b.ReportAllocs()
		b.ResetTimer()
		cpu0 := processCPU()
		defer func() { reportCPU(b, cpu0) }()
		for i := 0; i < b.N; i++ {
			for j := range pkts {
				pkts[j].Buf = pkts[j].Buf[:cap(pkts[j].Buf)]
			}
			if _, err := a.SealBatch(pkts); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkOpenBatch opens 64 packets of 1200 bytes per op (header
// protection, AEAD, replay window). Restoring the sealed packets between
// iterations is excluded from the timing.
func BenchmarkOpenBatch(b *testing.B) {
	benchSuites(b, func(b *testing.B, s Suite) {
		a, r := sessionPair(b, s, SessionConfig{KeyUpdateThreshold: 1 << 40})
		pristine := makeBatch(benchBatch, benchSize)
		if _, err := a.SealBatch(pristine); err != nil {
			b.Fatal(err)
		}
		work := makeBatch(benchBatch, benchSize)
		var cpu time.Duration
		b.SetBytes(benchBatch * benchSize)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			for j := range work {
				work[j].Buf = work[j].Buf[:len(pristine[j].Buf)]
				copy(work[j].Buf, pristine[j].Buf)
			}
			r.window = ReplayWindow{}
			b.StartTimer()
			c0 := processCPU()
			if ok := r.OpenBatch(work, t0); ok != benchBatch {
				b.Fatalf("opened %d", ok)
			}
			cpu += processCPU() - c0
		}
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	})
}

// BenchmarkRawAEADSeal is the baseline: the bare AEAD (x/crypto
// chacha20poly1305 or crypto/cipher GCM) sealing the same 64 x 1200 bytes
// in place with a 32-byte AAD, nothing else.
func BenchmarkRawAEADSeal(b *testing.B) {
	benchSuites(b, func(b *testing.B, s Suite) {
		aead, pkts := rawSetup(b, s)
		var nonce [12]byte
		var n uint64
		b.SetBytes(benchBatch * benchSize)
		b.ReportAllocs()
		b.ResetTimer()
		cpu0 := processCPU()
		defer func() { reportCPU(b, cpu0) }()
		for i := 0; i < b.N; i++ {
			for j := range pkts {
				p := pkts[j][:32+benchSize]
				n++
				binary.BigEndian.PutUint64(nonce[4:], n)
				aead.Seal(p[32:32], nonce[:], p[32:], p[:32])
			}
		}
	})
}

// BenchmarkRawAEADOpen is the open-side baseline (tag check + decrypt).
func BenchmarkRawAEADOpen(b *testing.B) {
	benchSuites(b, func(b *testing.B, s Suite) {
		aead, pkts := rawSetup(b, s)
		var nonce [12]byte
		sealed := make([][]byte, len(pkts))
		for j := range pkts {
			binary.BigEndian.PutUint64(nonce[4:], uint64(j))
			sealed[j] = aead.Seal(append([]byte(nil), pkts[j][:32]...), nonce[:], pkts[j][32:32+benchSize], pkts[j][:32])
		}
		var cpu time.Duration
		b.SetBytes(benchBatch * benchSize)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			for j := range pkts {
				copy(pkts[j], sealed[j])
			}
			b.StartTimer()
			c0 := processCPU()
			for j := range pkts {
				binary.BigEndian.PutUint64(nonce[4:], uint64(j))
				p := pkts[j]
				if _, err := aead.Open(p[32:32], nonce[:], p[32:], p[:32]); err != nil {
					b.Fatal(err)
				}
			}
			cpu += processCPU() - c0
		}
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	})
}

func rawSetup(b *testing.B, s Suite) (cipher.AEAD, [][]byte) {
	key := make([]byte, 32)
	aead, err := newAEAD(s, key)
	if err != nil {
		b.Fatal(err)
	}
	pkts := make([][]byte, benchBatch)
	for j := range pkts {
		pkts[j] = make([]byte, 32+benchSize+16)
	}
	return aead, pkts
}

// BenchmarkOverheadRatio interleaves SealBatch and the raw AEAD (and
// OpenBatch and the raw AEAD open) on the same 64 x 1200-byte batch,
// measuring the CPU time of the benchmark's own thread around each half, so
// machine load affects neither side. It reports protected/raw CPU time as
// "seal-x" and "open-x" (the target for seal: <= 1.15).
func BenchmarkOverheadRatio(b *testing.B) {
	benchSuites(b, func(b *testing.B, s Suite) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		a, r := sessionPair(b, s, SessionConfig{KeyUpdateThreshold: 1 << 40})
		pkts := makeBatch(benchBatch, benchSize)
		aead, raw := rawSetup(b, s)
		rawSealed := make([][]byte, benchBatch)
		var nonce [12]byte
		var sealOurs, sealBase, openOurs, openBase time.Duration
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for j := range pkts {
				pkts[j].Buf = pkts[j].Buf[:cap(pkts[j].Buf)]
			}
			c0 := threadCPU()
			if _, err := a.SealBatch(pkts); err != nil {
				b.Fatal(err)
			}
			c1 := threadCPU()
			for j := range raw {
				p := raw[j][:32+benchSize]
				binary.BigEndian.PutUint64(nonce[4:], uint64(j))
				rawSealed[j] = aead.Seal(p[32:32], nonce[:], p[32:], p[:32])
			}
			c2 := threadCPU()
			if ok := r.OpenBatch(pkts, t0); ok != benchBatch {
				b.Fatalf("opened %d", ok)
			}
			c3 := threadCPU()
			for j := range raw {
				binary.BigEndian.PutUint64(nonce[4:], uint64(j))
				if _, err := aead.Open(rawSealed[j][:0], nonce[:], rawSealed[j], raw[j][:32]); err != nil {
					b.Fatal(err)
				}
			}
			c4 := threadCPU()
			sealOurs += c1 - c0
			sealBase += c2 - c1
			openOurs += c3 - c2
			openBase += c4 - c3
		}
		b.ReportMetric(float64(sealOurs)/float64(sealBase), "seal-x")
		b.ReportMetric(float64(openOurs)/float64(openBase), "open-x")
	})
}

// BenchmarkDHPair is two independent DHs (ee and se of a handshake step):
// in sequence, and with runPair's helper goroutine. pairs-inline/op is how
// often the helper had not started before the first DH was done (no idle
// core), so that both ran in sequence after all.
func BenchmarkDHPair(b *testing.B) {
	id, peer := mustIdentity(b, 1), mustIdentity(b, 2)
	k := staticKey(&id)
	for _, parallel := range []bool{false, true} {
		name := "sequential"
		if parallel {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			inline0 := x25519PairsInline.Load()
			cpu0 := processCPU()
			for i := 0; i < b.N; i++ {
				x, y := dhJob{k: k, pub: peer.Public[:]}, dhJob{k: k, pub: peer.Public[:]}
				runPair(&x, &y, parallel)
				if x.err != nil || y.err != nil {
					b.Fatal(x.err, y.err)
				}
			}
			reportCPU(b, cpu0)
			b.ReportMetric(float64(x25519PairsInline.Load()-inline0)/float64(b.N), "pairs-inline/op")
		})
	}
}

// BenchmarkStrikeRegisterFull is a resumption's strike check against a
// full register (65536 unexpired tickets): the 0-RTT data is refused, at
// the cost of one look at a set, not a scan of every entry.
func BenchmarkStrikeRegisterFull(b *testing.B) {
	r := NewStrikeRegister(0)
	exp := t0.Add(12 * time.Hour)
	var id [16]byte
	for i := 0; r.Use(id, exp.Add(time.Duration(i)*time.Second/8), t0); i++ {
		binary.LittleEndian.PutUint64(id[:], uint64(i+1))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		binary.LittleEndian.PutUint64(id[8:], uint64(i+1))
		if r.Use(id, exp, t0.Add(time.Minute)) {
			b.Fatal("a full register took an entry")
		}
	}
}
