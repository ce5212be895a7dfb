package transport

import (
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/transport/netsim"
)

// bottleneck: 100 Mbit/s, 20 ms round trip, a queue of about one BDP.
var bottleneck = netsim.LinkConfig{Delay: 10 * time.Millisecond, Bandwidth: 100_000_000}

func bulkSource(tn *testNet, c *Conn) *Stream {
	s, err := c.OpenStream(scheduler.Bulk, false)
	if err != nil {
		tn.t.Fatal(err)
	}
	if tn.a.source == nil {
		tn.a.source = map[*Stream]int64{}
	}
	tn.a.source[s] = 1 << 40
	tn.b.discard = true
	tn.a.app()
	tn.sim.Wake(tn.a.addr)
	return s
}

// rate returns the stream's received bit rate over the next d of virtual time.
func (tn *testNet) rates(d time.Duration, ss ...*Stream) []float64 {
	ids := make([][2]uint64, len(ss))
	for i, s := range ss {
		ids[i] = [2]uint64{s.conn.cid, s.id}
	}
	before := make([]int64, len(ids))
	for i, id := range ids {
		before[i] = tn.b.count[id]
	}
	tn.sim.RunFor(d)
	out := make([]float64, len(ids))
	for i, id := range ids {
		out[i] = float64(tn.b.count[id]-before[i]) * 8 / d.Seconds()
	}
	return out
}

// One connection fills ≥ 85% of a 100 Mbit/s, 20 ms path within 3 s.
func TestCongestionFillsBottleneck(t *testing.T) {
	tn := newTestNet(t, 7, bottleneck, bottleneck, nil)
	ca, _ := tn.dial()
	start := tn.sim.Now()
	s := bulkSource(tn, ca)
	tn.sim.RunFor(2 * time.Second)
	r := tn.rates(time.Second, s)[0]
	t.Logf("second 3 after start: %.1f Mbit/s (cwnd %d B, srtt %v, lost %d of %d packets)",
		r/1e6, ca.CongestionWindow(), ca.RTT().Smoothed, ca.Stats().PacketsLost, ca.Stats().PacketsSent)
	if r < 0.85*100e6 {
		t.Errorf("%.1f Mbit/s in [2s, 3s], want ≥ 85", r/1e6)
	}
	if tn.sim.Now().Sub(start) > 3*time.Second+time.Millisecond {
		t.Fatal("measured past 3 s")
	}
}

// Two connections over one bottleneck share it fairly: Jain's index ≥ 0.9
// over 20 s, once the late one (1 s behind) has had 10 s to converge.
func TestCongestionFairness(t *testing.T) {
	tn := newTestNet(t, 8, bottleneck, bottleneck, nil)
	c1, _ := tn.dial()
	s1 := bulkSource(tn, c1)
	tn.sim.RunFor(time.Second) // the second arrives late
	c2, _ := tn.dial()
	s2 := bulkSource(tn, c2)
	tn.sim.RunFor(9 * time.Second) // CUBIC converges over seconds (docs/congestion.md)
	r := tn.rates(20*time.Second, s1, s2)
	sum, sq := r[0]+r[1], r[0]*r[0]+r[1]*r[1]
	jain := sum * sum / (2 * sq)
	t.Logf("rates %.1f and %.1f Mbit/s, total %.1f, Jain %.3f", r[0]/1e6, r[1]/1e6, sum/1e6, jain)
	for _, c := range []*Conn{c1, c2} {
		t.Logf("conn %x: cwnd %d slowstart %v rtt %+v inflight %d stats %+v", c.cid, c.CongestionWindow(), c.cong.InSlowStart(), c.RTT(), c.inFlight, c.Stats())
	}
	if jain < 0.9 {
		t.Errorf("Jain index %.3f, want ≥ 0.9", jain)
	}
	if sum < 0.85*100e6 {
		t.Errorf("together %.1f Mbit/s, want ≥ 85", sum/1e6)
	}
}
