package transport

import (
	"slices"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/wire"
)

// While a Bulk stream saturates the path, Control and Interactive messages
// keep a latency close to the path's own (propagation plus the bottleneck
// queue), instead of waiting behind the Bulk send buffer; Bulk keeps most of
// the bandwidth.
func TestPriorityUnderBulkLoad(t *testing.T) {
	tn := newTestNet(t, 9, bottleneck, bottleneck, nil)
	ca, _ := tn.dial()
	bulk := bulkSource(tn, ca)
	tn.sim.RunFor(2 * time.Second) // bulk at full speed, buffers full

	sentAt := map[uint64]time.Time{}
	var lat []time.Duration
	tn.b.onMsg = func(c *Conn, m *wire.Message) {
		lat = append(lat, tn.sim.Now().Sub(sentAt[m.MessageID]))
	}
	before := tn.b.count[[2]uint64{ca.cid, bulk.id}]
	start := tn.sim.Now()
	for i := range 100 {
		class := scheduler.Interactive
		if i%4 == 0 {
			class = scheduler.Control
		}
		sentAt[uint64(i)] = tn.sim.Now()
		if err := ca.SendMessage(class, &wire.Message{Type: wire.TypeCall, MessageID: uint64(i), Payload: make([]byte, 200)}); err != nil {
			t.Fatal(err)
		}
		tn.sim.Wake(tn.a.addr)
		tn.sim.RunFor(20 * time.Millisecond)
	}
	tn.sim.RunFor(200 * time.Millisecond)
	elapsed := tn.sim.Now().Sub(start)
	bulkRate := float64(tn.b.count[[2]uint64{ca.cid, bulk.id}]-before) * 8 / elapsed.Seconds()
	if len(lat) != 100 {
		t.Fatalf("%d of 100 messages arrived", len(lat))
	}
	slices.Sort(lat)
	p50, p99 := lat[50], lat[98]
	t.Logf("messages under bulk load: p50 %v, p99 %v; bulk %.1f Mbit/s; bulk buffered %d B; srtt %v",
		p50, p99, bulkRate/1e6, bulk.Buffered(), ca.RTT().Smoothed)
	// A FIFO would put each message behind the ~1 MiB bulk buffer: ~85 ms at 100 Mbit/s.
	if p99 > 2*ca.RTT().Smoothed+10*time.Millisecond {
		t.Errorf("p99 latency %v under bulk load, want ≤ 2 RTT + 10 ms", p99)
	}
	if bulkRate < 70e6 {
		t.Errorf("bulk starved: %.1f Mbit/s", bulkRate/1e6)
	}
}

// With Interactive saturating too, Bulk still gets its weighted share.
func TestBulkNotStarved(t *testing.T) {
	tn := newTestNet(t, 10, bottleneck, bottleneck, nil)
	ca, _ := tn.dial()
	bulk := bulkSource(tn, ca)
	inter, err := ca.OpenStream(scheduler.Interactive, false)
	if err != nil {
		t.Fatal(err)
	}
	tn.a.source[inter] = 1 << 40
	tn.sim.RunFor(2 * time.Second)
	r := tn.rates(3*time.Second, bulk, inter)
	share := r[0] / (r[0] + r[1])
	w := scheduler.DefaultWeights
	want := float64(w[scheduler.Bulk]) / float64(w[scheduler.Bulk]+w[scheduler.Interactive])
	t.Logf("bulk %.1f Mbit/s, interactive %.1f Mbit/s: bulk share %.3f (weights say %.3f)", r[0]/1e6, r[1]/1e6, share, want)
	if share < want*0.7 || share > want*1.3 {
		t.Errorf("bulk share %.3f, want about %.3f", share, want)
	}
}
