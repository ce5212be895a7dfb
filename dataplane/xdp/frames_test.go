package xdp

import (
	"math/rand/v2"
	"testing"
)

// A random walk through the frame life cycle, as the shard drives it
// (fill → kernel RX → handler → free; free → TX buffer → kernel TX → free),
// keeps every frame owned exactly once; bogus transitions (a double
// release, a completion of a frame never sent, an address outside the UMEM)
// are refused and counted, and change nothing.
func TestFrameAccountingWalk(t *testing.T) {
	const n = 256
	f := newFrames(n, FrameSize)
	rng := rand.New(rand.NewPCG(1, 2))
	var kernelRx, handler, txbuf, kernelTx []int
	pop := func(s *[]int) int {
		i := rng.IntN(len(*s))
		v := (*s)[i]
		(*s)[i] = (*s)[len(*s)-1]
		*s = (*s)[:len(*s)-1]
		return v
	}
	wantViolations := 0
	for step := range 100000 {
		switch rng.IntN(7) {
		case 0: // refill
			if i := f.take(ownKernelRx); i >= 0 {
				kernelRx = append(kernelRx, i)
			}
		case 1: // the kernel delivers a frame on the RX ring
			if len(kernelRx) > 0 {
				i := pop(&kernelRx)
				if !f.move(f.index(f.base(i)+xdpHeadroom+14), ownKernelRx, ownHandler) {
					t.Fatalf("step %d: RX of frame %d refused", step, i)
				}
				handler = append(handler, i)
			}
		case 2: // Release
			if len(handler) > 0 {
				i := pop(&handler)
				if !f.put(i, ownHandler) {
					t.Fatalf("step %d: release of %d refused", step, i)
				}
			}
		case 3: // TxBuffers
			if i := f.take(ownTxBuf); i >= 0 {
				txbuf = append(txbuf, i)
			}
		case 4: // Send (or unused: back to free)
			if len(txbuf) > 0 {
				i := pop(&txbuf)
				if rng.IntN(4) == 0 {
					f.put(i, ownTxBuf)
				} else {
					f.move(i, ownTxBuf, ownKernelTx)
					kernelTx = append(kernelTx, i)
				}
			}
		case 5: // completion
			if len(kernelTx) > 0 {
				if !f.put(pop(&kernelTx), ownKernelTx) {
					t.Fatalf("step %d: completion refused", step)
				}
			}
		case 6: // something bogus
			before := f.account()
			switch rng.IntN(3) {
			case 0:
				i := rng.IntN(n)
				if f.owner[i] == ownHandler {
					continue
				}
				f.put(i, ownHandler) // double release
			case 1:
				i := rng.IntN(n)
				if f.owner[i] == ownKernelTx {
					continue
				}
				f.put(i, ownKernelTx) // completion of an unsent frame
			case 2:
				f.move(f.index(uint64(n)*FrameSize+5), ownKernelRx, ownHandler) // outside the UMEM
			}
			wantViolations++
			after := f.account()
			after.Violations--
			if after != before {
				t.Fatalf("step %d: a refused transition changed the account: %+v -> %+v", step, before, after)
			}
		}
		a := f.account()
		if a.Free+a.KernelRx+a.Handler+a.TxBuffers+a.KernelTx != n || a.Violations != wantViolations {
			t.Fatalf("step %d: %+v", step, a)
		}
		if a.KernelRx != len(kernelRx) || a.Handler != len(handler) || a.TxBuffers != len(txbuf) || a.KernelTx != len(kernelTx) {
			t.Fatalf("step %d: account %+v disagrees with the model (%d %d %d %d)", step, a, len(kernelRx), len(handler), len(txbuf), len(kernelTx))
		}
		if step%1000 == 0 && !f.check() {
			t.Fatalf("step %d: owners disagree with the counters", step)
		}
	}
	if !f.check() {
		t.Fatal("owners disagree with the counters")
	}
}

func TestFrameAccountBalanced(t *testing.T) {
	f := newFrames(8, FrameSize)
	if a := f.account(); !a.Balanced() || a.Free != 8 {
		t.Fatalf("fresh: %+v", a)
	}
	i := f.take(ownHandler)
	f.put(i, ownHandler)
	f.put(i, ownHandler)
	if a := f.account(); a.Balanced() || a.Violations != 1 || a.Free != 8 {
		t.Fatalf("after a double release: %+v", a)
	}
	if f.index(8*FrameSize) != -1 || f.index(FrameSize+100) != 1 {
		t.Fatal("index")
	}
}
