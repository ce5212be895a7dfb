package crypto

import (
	"errors"
	"testing"

	"pgregory.net/rapid"
)

// The bitmap window behaves exactly like a naive model that remembers every
// accepted packet number.
func TestReplayWindowMatchesModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var w ReplayWindow
		seen := map[uint64]bool{}
		var top uint64
		any := false
		base := rapid.Uint64Range(0, 1<<40).Draw(t, "base")
		for i := 0; i < 300; i++ {
			var pn uint64
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0: // near the top, forwards or backwards
				pn = top + rapid.Uint64Range(0, 70).Draw(t, "fwd")
			case 1:
				back := rapid.Uint64Range(0, 2*ReplayWindowSize).Draw(t, "back")
				if back > top {
					back = top
				}
				pn = top - back
			case 2: // big jump
				pn = top + rapid.Uint64Range(0, 10*ReplayWindowSize).Draw(t, "jump")
			default:
				pn = base + rapid.Uint64Range(0, 5000).Draw(t, "any")
			}
			var want error
			switch {
			case !any || pn > top:
			case top-pn >= ReplayWindowSize:
				want = ErrTooOld
			case seen[pn]:
				want = ErrReplay
			}
			if got := w.Check(pn); !errors.Is(got, want) && !(got == nil && want == nil) {
				t.Fatalf("Check(%d) top=%d: got %v want %v", pn, top, got, want)
			}
			got := w.Accept(pn)
			if (got == nil) != (want == nil) || (want != nil && !errors.Is(got, want)) {
				t.Fatalf("Accept(%d) top=%d: got %v want %v", pn, top, got, want)
			}
			if want == nil {
				seen[pn] = true
				if !any || pn > top {
					top = pn
				}
				any = true
			}
		}
	})
}

func TestReplayWindowEdges(t *testing.T) {
	var w ReplayWindow
	if err := w.Accept(5000); err != nil {
		t.Fatal(err)
	}
	// A first packet far from zero opens the window below it.
	if err := w.Accept(5000 - ReplayWindowSize + 1); err != nil {
		t.Fatal(err)
	}
	if err := w.Accept(5000 - ReplayWindowSize); !errors.Is(err, ErrTooOld) {
		t.Fatal(err)
	}
	// Jump a whole ring: old bits must not survive and alias new numbers.
	if err := w.Accept(5000 + 64*replayBlocks); err != nil {
		t.Fatal(err)
	}
	// 7049 shares its ring word and bit with the accepted 2953 (= 7049 - 4096)
	// and is inside the new window: it must be accepted.
	if err := w.Accept(2953 + 64*replayBlocks); err != nil {
		t.Fatalf("aliased bit: %v", err)
	}
	if h, ok := w.Highest(); !ok || h != 5000+64*replayBlocks {
		t.Fatal(h, ok)
	}
	var z ReplayWindow
	if err := z.Accept(0); err != nil {
		t.Fatal(err)
	}
	if err := z.Accept(0); !errors.Is(err, ErrReplay) {
		t.Fatal(err)
	}
	var m ReplayWindow
	if err := m.Accept(^uint64(0)); err != nil {
		t.Fatal(err)
	}
	if err := m.Accept(^uint64(0)); !errors.Is(err, ErrReplay) {
		t.Fatal(err)
	}
}

func TestAmplificationAccounting(t *testing.T) {
	var a AmplificationLimit
	if a.CanSend(1) {
		t.Fatal("sent before receiving")
	}
	a.OnReceive(100)
	if err := a.TrySend(300); err != nil {
		t.Fatal(err)
	}
	if err := a.TrySend(1); !errors.Is(err, ErrAmplification) {
		t.Fatal(err)
	}
	a.OnReceive(-5)
	if r, s := a.Counters(); r != 100 || s != 300 {
		t.Fatal(r, s)
	}
	a.Validate()
	if err := a.TrySend(1 << 30); err != nil || !a.Validated() {
		t.Fatal(err)
	}
}
