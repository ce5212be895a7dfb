// Package cc is MXP's congestion control: window-based controllers (CUBIC,
// RFC 9438, with HyStart++ slow-start exit, RFC 9406; and NewReno, RFC 9002
// §7) and a pacer.
//
// Everything here is sans-I/O: time is always a parameter, nothing reads a
// clock, starts a goroutine, logs or allocates after construction. The
// transport calls the Controller as packets are sent, acknowledged and
// declared lost, and asks it for the window; it asks the Pacer when the next
// packet may leave.
package cc

import "time"

// RTT is the connection's round-trip estimate (RFC 9002 §5), maintained by
// the transport.
type RTT struct {
	Latest, Smoothed, Min, Variance time.Duration
}

// Controller decides how many bytes may be in flight.
type Controller interface {
	// OnSent: an ack-eliciting packet of bytes (counted in flight) was sent
	// at now; inFlight includes it.
	OnSent(now time.Time, bytes int, inFlight int)
	// OnAcked: bytes newly acknowledged by one ACK; sentTime is when the
	// largest newly acknowledged packet was sent; inFlight is after removing
	// them.
	OnAcked(now time.Time, bytes int, sentTime time.Time, rtt RTT, inFlight int)
	// OnLost: bytes declared lost; sentTime of the newest lost packet. One
	// congestion event per recovery period: a loss of a packet sent before
	// the current recovery period began does not reduce again.
	OnLost(now time.Time, bytes int, sentTime time.Time)
	// OnPersistentCongestion collapses the window to the minimum (RFC 9002
	// §7.6).
	OnPersistentCongestion(now time.Time)
	// Window is the congestion window in bytes.
	Window() int
	// InSlowStart reports the phase (for tests and metrics).
	InSlowStart() bool
}

// Constants shared by the controllers (RFC 9002 §7.2, §B.2).
const (
	// InitialWindowPackets is the initial window in datagrams.
	InitialWindowPackets = 10
	// MinimumWindowPackets is the smallest window in datagrams.
	MinimumWindowPackets = 2
	// LossReductionFactor is NewReno's multiplicative decrease.
	LossReductionFactor = 0.5
)

// recovery tracks the recovery period shared by both controllers: it began
// at start (zero: not in recovery); packets sent at or before start do not
// cause another reduction, and their acknowledgements do not grow the
// window. An ACK of a packet sent after start ends it.
type recovery struct {
	start time.Time
	in    bool
}

// lossStartsEvent reports whether a loss of a packet sent at sentTime starts
// a new congestion event, and if so enters recovery at now.
func (r *recovery) lossStartsEvent(now, sentTime time.Time) bool {
	if !r.start.IsZero() && !sentTime.After(r.start) {
		return false
	}
	r.start = now
	r.in = true
	return true
}

// onAck reports whether the ACK (of a packet sent at sentTime) may grow the
// window, leaving recovery when it acknowledges a packet sent after it began.
func (r *recovery) onAck(sentTime time.Time) bool {
	if !r.in {
		return true
	}
	if sentTime.After(r.start) {
		r.in = false
		return true
	}
	return false
}
