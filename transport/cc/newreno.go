package cc

import "time"

// NewReno is the RFC 9002 §7 controller: slow start (window grows by the
// bytes acknowledged), congestion avoidance (about one datagram per window
// acknowledged), halving on a congestion event, one reduction per recovery
// period.
type NewReno struct {
	mss      int
	cwnd     int
	ssthresh int
	acc      int // bytes acknowledged in congestion avoidance not yet turned into growth
	rec      recovery
}

// NewNewReno returns a NewReno controller for datagrams of at most
// maxDatagram bytes.
func NewNewReno(maxDatagram int) Controller {
	return &NewReno{
		mss:      maxDatagram,
		cwnd:     InitialWindowPackets * maxDatagram,
		ssthresh: int(^uint(0) >> 1),
	}
}

// OnSent implements Controller.
func (r *NewReno) OnSent(now time.Time, bytes int, inFlight int) {}

// OnAcked implements Controller.
func (r *NewReno) OnAcked(now time.Time, bytes int, sentTime time.Time, rtt RTT, inFlight int) {
	if !r.rec.onAck(sentTime) {
		return
	}
	if r.cwnd < r.ssthresh {
		r.cwnd += bytes
		return
	}
	r.acc += bytes
	if r.acc >= r.cwnd {
		r.acc -= r.cwnd
		r.cwnd += r.mss
	}
}

// OnLost implements Controller.
func (r *NewReno) OnLost(now time.Time, bytes int, sentTime time.Time) {
	if !r.rec.lossStartsEvent(now, sentTime) {
		return
	}
	r.ssthresh = max(int(float64(r.cwnd)*LossReductionFactor), MinimumWindowPackets*r.mss)
	r.cwnd = r.ssthresh
	r.acc = 0
}

// OnPersistentCongestion implements Controller.
func (r *NewReno) OnPersistentCongestion(now time.Time) {
	r.cwnd = MinimumWindowPackets * r.mss
	r.acc = 0
	r.rec = recovery{}
}

// Window implements Controller.
func (r *NewReno) Window() int { return r.cwnd }

// InSlowStart implements Controller.
func (r *NewReno) InSlowStart() bool { return r.cwnd < r.ssthresh }
