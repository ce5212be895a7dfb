package cc

import "time"

// Pacing defaults.
const (
	// PacingGain is the pacing rate as a multiple of cwnd/srtt in
	// congestion avoidance (RFC 9002 §7.7 suggests N = 1.25).
	PacingGain = 1.25
	// PacingGainSlowStart is the multiple in slow start, so the window can
	// double each round trip.
	PacingGainSlowStart = 2.0
	// DefaultBurst is the burst allowance in datagrams.
	DefaultBurst = 10
	// DefaultMaxDatagram is the datagram size the burst is counted in when
	// Pacer.MaxDatagram is zero.
	DefaultMaxDatagram = 1200
)

// Pacer spreads sends over the round trip with a token bucket: tokens (bytes)
// accrue at PacingGain*cwnd/srtt (PacingGainSlowStart times when the
// Controller is in slow start) up to a burst of Burst datagrams. Without an
// RTT sample it does not pace. The zero value is ready to use; it does not
// allocate.
type Pacer struct {
	// MaxDatagram is the size the burst is counted in (0: DefaultMaxDatagram).
	MaxDatagram int
	// Burst is the allowance in datagrams (0: DefaultBurst).
	Burst int
	// Controller, if set, selects the slow-start gain while it reports
	// InSlowStart. Alternatively set SlowStart before each call.
	Controller Controller
	// SlowStart selects the slow-start gain when Controller is nil.
	SlowStart bool

	tokens  float64 // bytes available at last
	last    time.Time
	started bool
}

func (p *Pacer) capacity(bytes int) float64 {
	mss, burst := p.MaxDatagram, p.Burst
	if mss <= 0 {
		mss = DefaultMaxDatagram
	}
	if burst <= 0 {
		burst = DefaultBurst
	}
	return float64(max(burst*mss, bytes))
}

// rate is bytes per nanosecond; 0 means do not pace.
func (p *Pacer) rate(cwnd int, rtt RTT) float64 {
	srtt := rtt.Smoothed
	if srtt <= 0 || cwnd <= 0 {
		return 0
	}
	gain := PacingGain
	if p.Controller != nil {
		if p.Controller.InSlowStart() {
			gain = PacingGainSlowStart
		}
	} else if p.SlowStart {
		gain = PacingGainSlowStart
	}
	return gain * float64(cwnd) / float64(srtt)
}

// available is the token count at now, at rate r.
func (p *Pacer) available(now time.Time, r float64, capacity float64) float64 {
	if !p.started {
		return capacity
	}
	t := p.tokens
	if el := now.Sub(p.last); el > 0 {
		t += float64(el) * r
	}
	return min(t, capacity)
}

// NextSend returns when a packet of bytes may go; a time not after now
// means now.
func (p *Pacer) NextSend(now time.Time, cwnd int, rtt RTT, bytes int) time.Time {
	r := p.rate(cwnd, rtt)
	if r == 0 {
		return now
	}
	avail := p.available(now, r, p.capacity(bytes))
	if avail >= float64(bytes) {
		return now
	}
	wait := time.Duration((float64(bytes)-avail)/r) + 1 // round up, and always in the future
	return now.Add(wait)
}

// OnSent records a packet of bytes sent at now.
func (p *Pacer) OnSent(now time.Time, bytes int, cwnd int, rtt RTT) {
	r := p.rate(cwnd, rtt)
	capacity := p.capacity(bytes)
	var avail float64
	if r == 0 {
		avail = capacity // unpaced: keep the bucket full
	} else {
		avail = p.available(now, r, capacity)
	}
	// A send ahead of schedule leaves a debt, at most one burst deep.
	p.tokens = max(avail-float64(bytes), -capacity)
	if now.After(p.last) || !p.started {
		p.last = now
	}
	p.started = true
}
