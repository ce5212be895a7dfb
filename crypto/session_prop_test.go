package crypto

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"pgregory.net/rapid"
)

type inflight struct {
	pkt []byte
	id  uint64
}

// Random traffic in both directions with loss, bounded reordering,
// duplication, acknowledgments, forced and automatic key updates: a packet
// is never accepted twice, never decrypts to another packet's payload, and
// the only rejections are the expected kinds. Packets delivered in order
// and promptly are always accepted.
func TestSessionTrafficProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		suite := rapid.SampledFrom(suitesUnderTest()).Draw(rt, "suite")
		threshold := rapid.Uint64Range(2, 12).Draw(rt, "threshold")
		a, b := sessionPair(t, suite, SessionConfig{KeyUpdateThreshold: threshold, KeyUpdateGrace: time.Hour})
		sides := [2]*Session{a, b}
		var queues [2][]inflight // queues[i]: packets sent by side i
		accepted := [2]map[uint64]bool{{}, {}}
		var nextID uint64
		now := t0
		for step := 0; step < 200; step++ {
			from := rapid.IntRange(0, 1).Draw(rt, "side")
			to := 1 - from
			switch rapid.IntRange(0, 5).Draw(rt, "action") {
			case 0, 1: // send
				nextID++
				var payload [8]byte
				binary.LittleEndian.PutUint64(payload[:], nextID)
				pkt, _, err := sides[from].Seal(make([]byte, 0, 64), 0, payload[:])
				if errors.Is(err, ErrExhausted) {
					continue // peer silent too long; legitimate refusal
				}
				if err != nil {
					rt.Fatalf("seal: %v", err)
				}
				queues[from] = append(queues[from], inflight{pkt, nextID})
			case 2, 3: // deliver one of the oldest few (bounded reordering)
				q := queues[from]
				if len(q) == 0 {
					continue
				}
				k := rapid.IntRange(0, min(len(q), 4)-1).Draw(rt, "pick")
				dup := rapid.IntRange(0, 9).Draw(rt, "dup") == 0
				p := q[k]
				if !dup {
					queues[from] = append(q[:k:k], q[k+1:]...)
				}
				o, err := sides[to].Open(clone(p.pkt), now)
				if err != nil {
					if !errors.Is(err, ErrReplay) && !errors.Is(err, ErrAuthFailed) && !errors.Is(err, ErrKeyPhase) && !errors.Is(err, ErrTooOld) {
						rt.Fatalf("unexpected error %v", err)
					}
					if errors.Is(err, ErrReplay) && !accepted[to][p.id] {
						rt.Fatalf("packet %d reported as replay but never accepted", p.id)
					}
					continue
				}
				if accepted[to][p.id] {
					rt.Fatalf("packet %d accepted twice", p.id)
				}
				if got := binary.LittleEndian.Uint64(o.Payload); got != p.id {
					rt.Fatalf("packet %d decrypted to %d", p.id, got)
				}
				accepted[to][p.id] = true
				if rapid.Bool().Draw(rt, "ack") {
					sides[from].OnPacketAcked(o.PacketNumber)
				}
			case 4: // drop the oldest
				if len(queues[from]) > 0 {
					queues[from] = queues[from][1:]
				}
			case 5:
				_ = sides[from].UpdateKeys()
				now = now.Add(time.Millisecond)
			}
		}
		// Liveness: after the chaos, fresh traffic delivered in order and
		// acknowledged flows in both directions across further key updates.
		for i := 0; i < 4*int(threshold)+4; i++ {
			for from := 0; from < 2; from++ {
				pkt, _, err := sides[from].Seal(make([]byte, 0, 64), 0, []byte("live"))
				if errors.Is(err, ErrExhausted) {
					// Legitimate only when the key is used up and no update is
					// allowed yet (nothing of this phase acknowledged).
					s := sides[from]
					if s.canUpdate() || s.sentInPhase < s.hardLimit {
						rt.Fatalf("ErrExhausted without cause: sent %d, acked %v", s.sentInPhase, s.phaseAcked)
					}
					continue
				}
				if err != nil {
					rt.Fatal(err)
				}
				o, err := sides[1-from].Open(pkt, now)
				if err != nil {
					rt.Fatalf("in-order fresh packet rejected: %v", err)
				}
				sides[from].OnPacketAcked(o.PacketNumber)
			}
		}
	})
}
