package transport

import (
	"bytes"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/transport/netsim"
	"github.com/mxp-dataplane/mxp/wire"
)

// pattern returns n bytes that depend on the stream and the offset, so
// misplaced bytes are caught.
func pattern(stream uint64, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(uint64(i)*131 + stream*7 + uint64(i>>8))
	}
	return b
}

// TestStreamsSurviveBadNetworks: for random workloads under up to 10% loss,
// 5% duplication, reordering and jitter, every stream byte arrives once and
// in order, no flow-control limit is exceeded (the receiver would close the
// connection), nothing deadlocks, and the connection's memory drains once
// everything is acknowledged.
func TestStreamsSurviveBadNetworks(t *testing.T) {
	seeds := 40
	if s := os.Getenv("MXP_SIM_SEEDS"); s != "" {
		seeds, _ = strconv.Atoi(s)
	}
	if testing.Short() {
		seeds = 8
	}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := mrand.New(mrand.NewPCG(seed, 99))
			link := netsim.LinkConfig{
				Delay:        time.Duration(1+rng.IntN(40)) * time.Millisecond,
				Jitter:       time.Duration(rng.IntN(10)) * time.Millisecond,
				Loss:         rng.Float64() * 0.10,
				Duplicate:    rng.Float64() * 0.05,
				Reorder:      rng.Float64() * 0.2,
				ReorderDelay: 15 * time.Millisecond,
				Bandwidth:    int64(20+rng.IntN(200)) * 1_000_000,
			}
			tn := newTestNet(t, seed, link, link, func(c *Config) {
				c.StreamWindow = uint64(16<<10 + rng.IntN(256<<10)) // small windows exercise flow control
				c.ConnWindow = c.StreamWindow * 3
				c.StreamSendBuffer = 64 << 10
			})
			ca, cb := tn.dial()
			want := map[uint64][]byte{}
			nStreams := 1 + rng.IntN(6)
			for range nStreams {
				s, err := ca.OpenStream(scheduler.Class(rng.IntN(3)), false)
				if err != nil {
					t.Fatal(err)
				}
				data := pattern(s.ID(), rng.IntN(300<<10))
				want[s.ID()] = data
				tn.a.write(s, data, true)
			}
			// Messages ride along, from both sides.
			const msgs = 50
			for i := range msgs {
				m := &wire.Message{Type: wire.TypeEvent, MessageID: uint64(i), Payload: pattern(uint64(i), rng.IntN(3000))}
				for ca.SendMessage(scheduler.Class(i%3), m) == ErrWouldBlock {
					tn.sim.RunFor(10 * time.Millisecond)
				}
			}
			tn.sim.Wake(tn.a.addr)
			done := func() bool {
				if len(tn.b.msgs) != msgs {
					return false
				}
				for id, w := range want {
					if !tn.b.fin[id] || len(tn.b.got[id]) != len(w) {
						return false
					}
				}
				return true
			}
			if !tn.sim.RunUntil(done, 120*time.Second) {
				got := 0
				for id := range want {
					got += len(tn.b.got[id])
				}
				for _, id := range ca.sortedStreamIDs() {
					s := ca.streams[id]
					t.Logf("stream %d: buf %d base %d next %d end %d retrans %v peerMax %d ready %v fin %v/%v", id, len(s.buf), s.sendBase, s.sendNext, s.writeEnd(), s.retrans.r, s.peerMax, ca.sched.IsReady(id), s.finWritten, s.finSent)
				}
				for _, id := range cb.sortedStreamIDs() {
					s := cb.streams[id]
					t.Logf("peer stream %d: readOff %d readable %d recvd %v localMax %d sendMax %v", id, s.readOff, s.Readable(), s.recvd.r, s.localMax, s.sendMax)
				}
				t.Logf("conn: sent %d peerMax %d; peer recv %d localMax %d read %d", ca.connSent, ca.peerConnMax, cb.connRecv, cb.localConnMax, cb.connRead)
				t.Fatalf("stalled: link %+v; %d/%d messages, %d stream bytes; client %+v inflight %d cwnd %d; errs %v %v",
					link, len(tn.b.msgs), msgs, got, ca.Stats(), ca.inFlight, ca.CongestionWindow(), ca.Err(), cb.Err())
			}
			for id, w := range want {
				if !bytes.Equal(tn.b.got[id], w) {
					t.Fatalf("stream %d: bytes differ", id)
				}
			}
			seen := map[uint64]bool{}
			for _, m := range tn.b.msgs {
				if seen[m.MessageID] || !bytes.Equal(m.Payload, pattern(m.MessageID, len(m.Payload))) {
					t.Fatalf("message %d duplicated or corrupt", m.MessageID)
				}
				seen[m.MessageID] = true
			}
			if ca.Err() != nil || cb.Err() != nil {
				t.Fatalf("connection errors: %v / %v", ca.Err(), cb.Err())
			}
			// Let the last ACKs land, then nothing may stay buffered.
			tn.sim.RunFor(2 * time.Second)
			if n := len(ca.sent) - ca.sentHead; n != 0 || ca.inFlight != 0 {
				t.Errorf("%d packets still tracked, %d bytes in flight", n, ca.inFlight)
			}
			for _, s := range ca.streams {
				if len(s.buf) != 0 || !s.retrans.empty() {
					t.Errorf("stream %d keeps %d bytes", s.id, len(s.buf))
				}
			}
		})
	}
}
