package netsim

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestLinkProperties: for random link configurations and traffic, every
// datagram is accounted for, impairment-free links deliver each datagram
// exactly once in order (a FIFO never reorders), and delivery is never
// earlier than the propagation delay plus serialization.
func TestLinkProperties(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		cfg := LinkConfig{
			Delay:     time.Duration(rapid.Int64Range(0, int64(50*time.Millisecond)).Draw(rt, "delay")),
			Bandwidth: rapid.SampledFrom([]int64{0, 1e6, 10e6, 1e9}).Draw(rt, "bw"),
			MTU:       rapid.SampledFrom([]int{0, 1200, 1500}).Draw(rt, "mtu"),
		}
		impaired := rapid.Bool().Draw(rt, "impaired")
		if impaired {
			cfg.Loss = rapid.Float64Range(0, 0.3).Draw(rt, "loss")
			cfg.Duplicate = rapid.Float64Range(0, 0.2).Draw(rt, "dup")
			cfg.Reorder = rapid.Float64Range(0, 0.3).Draw(rt, "reorder")
			cfg.ReorderDelay = time.Duration(rapid.Int64Range(0, int64(20*time.Millisecond)).Draw(rt, "rdelay"))
			cfg.Jitter = time.Duration(rapid.Int64Range(0, int64(5*time.Millisecond)).Draw(rt, "jitter"))
		}
		if cfg.Bandwidth > 0 {
			cfg.QueueBytes = rapid.IntRange(0, 200000).Draw(rt, "queue")
		}
		n := rapid.IntRange(1, 500).Draw(rt, "n")
		size := rapid.IntRange(8, 1600).Draw(rt, "size")
		interval := time.Duration(rapid.Int64Range(0, int64(2*time.Millisecond)).Draw(rt, "interval"))
		s := New(rapid.Uint64().Draw(rt, "seed"))
		k := &sink{}
		s.Add(addrA, &sender{dst: addrB, size: size, count: n, interval: interval})
		s.Add(addrB, k)
		s.Connect(addrA, addrB, cfg, LinkConfig{})
		s.RunFor(time.Duration(n)*interval + time.Minute)
		st := s.Stats(addrA, addrB)
		if st.Sent != int64(n) {
			rt.Fatalf("sent %d of %d", st.Sent, n)
		}
		if st.Delivered != st.Sent-st.Lost-st.QueueDrops-st.MTUDrops+st.Duplicated {
			rt.Fatalf("accounting: %+v", st)
		}
		if int64(len(k.seqs)) != st.Delivered || s.Pending() != 0 {
			rt.Fatalf("sink %d, delivered %d, pending %d", len(k.seqs), st.Delivered, s.Pending())
		}
		if cfg.MTU > 0 && size > cfg.MTU && st.Delivered != 0 {
			rt.Fatal("oversize delivered")
		}
		for i, q := range k.seqs {
			sentAt := time.Duration(q) * interval
			if k.times[i].Sub(Epoch) < sentAt+cfg.Delay {
				rt.Fatalf("datagram %d arrived before its propagation delay", q)
			}
			if !impaired && i > 0 && q <= k.seqs[i-1] {
				rt.Fatalf("unimpaired link reordered or duplicated: %d after %d", q, k.seqs[i-1])
			}
		}
		if !impaired && st.QueueDrops == 0 && st.MTUDrops == 0 && len(k.seqs) != n {
			rt.Fatalf("lost datagrams on a clean link: %d of %d", len(k.seqs), n)
		}
	})
}
