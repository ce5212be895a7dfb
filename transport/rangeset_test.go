package transport

import (
	"testing"

	"pgregory.net/rapid"
)

// The range set behaves as a plain set of small integers.
func TestRangeSetModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var s rangeSet
		model := map[uint64]bool{}
		for range rapid.IntRange(1, 60).Draw(t, "ops") {
			a := rapid.Uint64Range(0, 200).Draw(t, "a")
			b := a + rapid.Uint64Range(0, 30).Draw(t, "len")
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0, 1:
				newVals := uint64(0)
				for v := a; v < b; v++ {
					if !model[v] {
						newVals++
					}
					model[v] = true
				}
				if got := s.add(a, b); got != newVals {
					t.Fatalf("add(%d,%d) = %d new, want %d", a, b, got, newVals)
				}
			case 2:
				for v := a; v < b; v++ {
					delete(model, v)
				}
				s.remove(a, b)
			case 3:
				for v := range model {
					if v < a {
						delete(model, v)
					}
				}
				s.removeBelow(a)
			}
			for i, iv := range s.r {
				if iv.start >= iv.end || (i > 0 && s.r[i-1].end >= iv.start) {
					t.Fatalf("not canonical: %v", s.r)
				}
			}
			for v := uint64(0); v < 240; v++ {
				if s.contains(v) != model[v] {
					t.Fatalf("contains(%d) = %v, model %v; set %v", v, s.contains(v), model[v], s.r)
				}
			}
			from := rapid.Uint64Range(0, 240).Draw(t, "from")
			want := from
			for model[want] {
				want++
			}
			if got := s.prefixEnd(from); got != want {
				t.Fatalf("prefixEnd(%d) = %d, want %d; set %v", from, got, want, s.r)
			}
		}
	})
}
