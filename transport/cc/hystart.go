package cc

import "time"

// HyStart++ constants (RFC 9406 §4.3).
const (
	HyStartMinRTTThresh     = 4 * time.Millisecond
	HyStartMaxRTTThresh     = 16 * time.Millisecond
	HyStartMinRTTDivisor    = 8
	HyStartNRTTSample       = 8
	HyStartCSSGrowthDivisor = 4
	HyStartCSSRounds        = 5
)

const noRTT = time.Duration(1<<63 - 1)

// hystart is HyStart++ (RFC 9406) on the Controller's events. Rounds are
// delimited by the controller by send times: when a round starts it records
// the send time of the newest packet sent so far, and the first ACK whose
// largest newly acknowledged packet was sent after that ends the round (the
// RFC's windowEnd = SND.NXT, expressed with sentTime instead of sequence
// numbers).
type hystart struct {
	lastRoundMin time.Duration
	curRoundMin  time.Duration
	samples      int
	cssBaseline  time.Duration // noRTT when not in CSS
	cssRounds    int
	rounds       int // rounds started (for tests and metrics)
}

func (h *hystart) reset() {
	*h = hystart{lastRoundMin: noRTT, curRoundMin: noRTT, cssBaseline: noRTT}
}

func (h *hystart) inCSS() bool { return h.cssBaseline != noRTT }

// onAck processes one ACK in slow start and reports whether slow start
// should end now (CSS_ROUNDS rounds of conservative slow start done).
func (h *hystart) onAck(newRound bool, latest time.Duration) (exit bool) {
	if newRound {
		h.rounds++
		h.lastRoundMin = h.curRoundMin
		h.curRoundMin = noRTT
		h.samples = 0
		if h.inCSS() {
			h.cssRounds++
			if h.cssRounds >= HyStartCSSRounds {
				return true
			}
		}
	}
	if latest <= 0 {
		return false
	}
	h.curRoundMin = min(h.curRoundMin, latest)
	h.samples++
	if h.samples < HyStartNRTTSample || h.curRoundMin == noRTT || h.lastRoundMin == noRTT {
		return false
	}
	if !h.inCSS() {
		thresh := min(max(h.lastRoundMin/HyStartMinRTTDivisor, HyStartMinRTTThresh), HyStartMaxRTTThresh)
		if h.curRoundMin >= h.lastRoundMin+thresh {
			h.cssBaseline = h.curRoundMin
			h.cssRounds = 0
		}
	} else if h.curRoundMin < h.cssBaseline {
		// The RTT increase was spurious: back to slow start.
		h.cssBaseline = noRTT
		h.cssRounds = 0
	}
	return false
}
