package cc

import (
	"math"
	"time"
)

// CUBIC constants (RFC 9438 §5).
const (
	CubicC    = 0.4 // segments per second cubed
	CubicBeta = 0.7 // multiplicative decrease
	// CubicAlpha is the Reno-friendly additive increase (segments per RTT)
	// used until W_est reaches the window before the last reduction:
	// 3*(1-beta)/(1+beta).
	CubicAlpha = 3 * (1 - CubicBeta) / (1 + CubicBeta)
)

// Cubic is the RFC 9438 controller with HyStart++ slow-start exit. The
// window is kept in bytes; the cubic function works in segments of the
// maximum datagram size.
type Cubic struct {
	mss      float64
	minCwnd  float64
	cwnd     float64
	ssthresh float64
	rec      recovery
	hs       hystart

	// FastConvergence releases bandwidth faster to new flows (RFC 9438
	// §4.7). On by default.
	FastConvergence bool
	// HyStart enables HyStart++ (RFC 9406). On by default.
	HyStart bool

	wMax       float64   // bytes: window at the last congestion event (after fast convergence)
	cwndPrior  float64   // bytes: window just before the last reduction
	k          float64   // seconds to reach wMax again
	epochStart time.Time // start of the current congestion-avoidance stage; zero: not started
	wEst       float64   // bytes: Reno-friendly estimate

	// Rounds (one round trip each): a round ends when an ACK acknowledges
	// a packet sent after the round began, that is after roundEnd, the
	// newest send time when it began.
	lastSent time.Time
	roundEnd time.Time
	// Largest bytes in flight seen by OnSent in this round and the last:
	// the window is in use (may grow) if twice that reaches it.
	peakInFlight, prevPeakInFlight int
	exitReason                     SlowStartExit
}

// SlowStartExit tells why slow start ended (for tests and metrics).
type SlowStartExit uint8

// Reasons slow start ended.
const (
	ExitNone    SlowStartExit = iota // still in the first slow start
	ExitHyStart                      // HyStart++ RTT increase, then CSS rounds
	ExitLoss                         // a congestion event
)

func (e SlowStartExit) String() string {
	switch e {
	case ExitNone:
		return "none"
	case ExitHyStart:
		return "hystart"
	case ExitLoss:
		return "loss"
	}
	return "SlowStartExit(?)"
}

// NewCubic returns a CUBIC controller for datagrams of at most maxDatagram
// bytes: initial window 10 datagrams, minimum 2.
func NewCubic(maxDatagram int) Controller { return newCubic(maxDatagram) }

func newCubic(maxDatagram int) *Cubic {
	c := &Cubic{
		mss:             float64(maxDatagram),
		minCwnd:         float64(MinimumWindowPackets * maxDatagram),
		cwnd:            float64(InitialWindowPackets * maxDatagram),
		ssthresh:        math.Inf(1),
		FastConvergence: true,
		HyStart:         true,
	}
	c.hs.reset()
	return c
}

// cubicWindow is W_cubic(t) = C*(t-K)^3 + W_max in segments (RFC 9438
// eq. 1), t and K in seconds.
func cubicWindow(t, k, wMax float64) float64 {
	d := t - k
	return CubicC*d*d*d + wMax
}

// cubicK is K = cbrt((W_max - cwnd_epoch)/C) in seconds (RFC 9438 eq. 2),
// windows in segments.
func cubicK(wMax, cwndEpoch float64) float64 {
	if cwndEpoch >= wMax {
		return 0
	}
	return math.Cbrt((wMax - cwndEpoch) / CubicC)
}

// OnSent implements Controller.
func (c *Cubic) OnSent(now time.Time, bytes int, inFlight int) {
	if now.After(c.lastSent) {
		c.lastSent = now
	}
	c.peakInFlight = max(c.peakInFlight, inFlight)
}

// OnAcked implements Controller.
func (c *Cubic) OnAcked(now time.Time, bytes int, sentTime time.Time, rtt RTT, inFlight int) {
	newRound := sentTime.After(c.roundEnd)
	if newRound {
		c.roundEnd = c.lastSent
		c.prevPeakInFlight = c.peakInFlight
		c.peakInFlight = inFlight + bytes
	}
	// Window-limited? (RFC 9002 §7.8: do not grow an underused window.)
	limited := float64(2*max(c.peakInFlight, c.prevPeakInFlight)) >= c.cwnd
	if !c.rec.onAck(sentTime) {
		return
	}
	if c.cwnd < c.ssthresh {
		if c.HyStart && c.exitReason == ExitNone && c.hs.onAck(newRound, rtt.Latest) {
			c.ssthresh = c.cwnd
			c.exitReason = ExitHyStart
			return
		}
		if !limited {
			return
		}
		growth := float64(bytes)
		if c.HyStart && c.exitReason == ExitNone && c.hs.inCSS() {
			growth /= HyStartCSSGrowthDivisor
		}
		c.cwnd += growth
		return
	}
	if !limited {
		// Application-limited: restart the epoch when growth resumes, so
		// the idle time does not count as time on the cubic curve.
		c.epochStart = time.Time{}
		return
	}
	c.congestionAvoidance(now, bytes, rtt)
}

func (c *Cubic) congestionAvoidance(now time.Time, bytes int, rtt RTT) {
	if c.epochStart.IsZero() {
		c.epochStart = now
		if c.wMax <= c.cwnd {
			// No loss yet (HyStart exit) or already above: start on the
			// convex part.
			c.wMax = c.cwnd
			c.k = 0
		} else {
			c.k = cubicK(c.wMax/c.mss, c.cwnd/c.mss)
		}
		c.wEst = c.cwnd
	}
	t := now.Sub(c.epochStart).Seconds()
	// Reno-friendly estimate (RFC 9438 §4.3), byte based.
	alpha := CubicAlpha
	if c.wEst >= c.cwndPrior {
		alpha = 1
	}
	c.wEst += alpha * c.mss * float64(bytes) / c.cwnd
	wMaxSeg := c.wMax / c.mss
	if cubicWindow(t, c.k, wMaxSeg)*c.mss < c.wEst {
		c.cwnd = c.wEst
		return
	}
	// Concave or convex region (RFC 9438 §4.4, §4.5).
	target := cubicWindow(t+rtt.Smoothed.Seconds(), c.k, wMaxSeg) * c.mss
	target = min(max(target, c.cwnd), 1.5*c.cwnd)
	c.cwnd += (target - c.cwnd) / c.cwnd * float64(bytes)
}

// OnLost implements Controller.
func (c *Cubic) OnLost(now time.Time, bytes int, sentTime time.Time) {
	if !c.rec.lossStartsEvent(now, sentTime) {
		return
	}
	if c.exitReason == ExitNone {
		c.exitReason = ExitLoss
	}
	c.cwndPrior = c.cwnd
	if c.FastConvergence && c.cwnd < c.wMax {
		c.wMax = c.cwnd * (1 + CubicBeta) / 2
	} else {
		c.wMax = c.cwnd
	}
	c.ssthresh = max(c.cwnd*CubicBeta, c.minCwnd)
	c.cwnd = c.ssthresh
	c.epochStart = time.Time{}
}

// OnPersistentCongestion implements Controller.
func (c *Cubic) OnPersistentCongestion(now time.Time) {
	c.cwnd = c.minCwnd
	c.epochStart = time.Time{}
	c.rec = recovery{}
	if c.exitReason == ExitNone {
		c.exitReason = ExitLoss
	}
}

// Window implements Controller.
func (c *Cubic) Window() int { return int(c.cwnd) }

// InSlowStart implements Controller.
func (c *Cubic) InSlowStart() bool { return c.cwnd < c.ssthresh }

// Ssthresh is the slow-start threshold in bytes (MaxInt while unset).
func (c *Cubic) Ssthresh() int {
	if math.IsInf(c.ssthresh, 1) {
		return int(^uint(0) >> 1)
	}
	return int(c.ssthresh)
}

// WMax is W_max in bytes: the window the cubic curve plateaus at.
func (c *Cubic) WMax() int { return int(c.wMax) }

// K is the time the cubic curve takes from the epoch start back to W_max.
func (c *Cubic) K() time.Duration { return time.Duration(c.k * float64(time.Second)) }

// InCSS reports whether HyStart++ is in conservative slow start.
func (c *Cubic) InCSS() bool { return c.InSlowStart() && c.exitReason == ExitNone && c.hs.inCSS() }

// SlowStartExit tells why the first slow start ended.
func (c *Cubic) SlowStartExit() SlowStartExit { return c.exitReason }
