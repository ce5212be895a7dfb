package transport

import (
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// The timer heap pops in time order whatever the pushes and pops between.
func TestTimerHeapOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var h timerHeap
		var model []int64
		base := time.Unix(1000, 0)
		for _, op := range rapid.SliceOfN(rapid.Int64Range(-1, 50), 1, 200).Draw(t, "ops") {
			if op < 0 {
				if len(model) == 0 {
					continue
				}
				got := h.pop().at.Sub(base).Nanoseconds()
				slices.Sort(model)
				if got != model[0] {
					t.Fatalf("popped %d, want the earliest %d of %v", got, model[0], model)
				}
				model = model[1:]
				continue
			}
			h.push(timerEntry{at: base.Add(time.Duration(op))})
			model = append(model, op)
		}
		if len(h) != len(model) {
			t.Fatalf("heap holds %d, model %d", len(h), len(model))
		}
	})
}

func TestTimerHeapNoAllocs(t *testing.T) {
	h := make(timerHeap, 0, 64)
	now := time.Now()
	if n := testing.AllocsPerRun(100, func() {
		for i := range 32 {
			h.push(timerEntry{at: now.Add(time.Duration(i*7919%32) * time.Millisecond)})
		}
		for len(h) > 0 {
			h.pop()
		}
	}); n != 0 {
		t.Fatalf("%v allocations per 32 pushes and pops", n)
	}
}
