package crypto

// ReplayWindowSize is the number of packet numbers below the highest one
// accepted that the anti-replay window still tracks: a packet number p is
// acceptable if it is above the highest accepted, or within
// ReplayWindowSize of it and not yet seen.
const ReplayWindowSize = 2048

// replayBlocks is the size of the bitmap ring in 64-bit words. It must be a
// power of two and hold ReplayWindowSize bits plus one partial word.
const replayBlocks = 64

// ReplayWindow is a sliding bitmap anti-replay window (RFC 6479 style: a
// ring of 64-bit words, cleared word by word as the window advances). The
// zero value is an empty window. Callers must call Check and Accept only for
// packets that have already been authenticated, so forged packets cannot move
// the window.
type ReplayWindow struct {
	top  uint64 // highest accepted packet number
	seen bool   // whether any packet was accepted
	ring [replayBlocks]uint64
}

// Check reports whether pn would be accepted: nil, ErrReplay (already
// accepted) or ErrTooOld (below the window). It does not change the window.
func (w *ReplayWindow) Check(pn uint64) error {
	if !w.seen || pn > w.top {
		return nil
	}
	if w.top-pn >= ReplayWindowSize {
		return ErrTooOld
	}
	if w.ring[(pn>>6)&(replayBlocks-1)]&(1<<(pn&63)) != 0 {
		return ErrReplay
	}
	return nil
}

// Accept records pn as seen, advancing the window if pn is the new highest.
// It returns the same verdict as Check and records nothing on error.
func (w *ReplayWindow) Accept(pn uint64) error {
	if err := w.Check(pn); err != nil {
		return err
	}
	switch {
	case !w.seen:
		w.ring = [replayBlocks]uint64{}
		w.seen = true
		w.top = pn
	case pn > w.top:
		cur, next := w.top>>6, pn>>6
		if next-cur >= replayBlocks {
			w.ring = [replayBlocks]uint64{}
		} else {
			for b := cur + 1; b <= next; b++ {
				w.ring[b&(replayBlocks-1)] = 0
			}
		}
		w.top = pn
	}
	w.ring[(pn>>6)&(replayBlocks-1)] |= 1 << (pn & 63)
	return nil
}

// Highest returns the highest accepted packet number and whether any was.
func (w *ReplayWindow) Highest() (uint64, bool) { return w.top, w.seen }
