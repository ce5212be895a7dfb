package crypto

// AmplificationFactor bounds what an endpoint sends to an unvalidated
// address: at most this many times the bytes received from it.
const AmplificationFactor = 3

// AmplificationLimit does the anti-amplification accounting for one peer
// address. Until Validate is called (handshake confirmed, or a valid cookie
// seen) the sender may send at most 3x the bytes it has received.
type AmplificationLimit struct {
	received  uint64
	sent      uint64
	validated bool
}

// OnReceive counts n bytes received from the address (valid or not).
func (a *AmplificationLimit) OnReceive(n int) {
	if n > 0 {
		a.received += uint64(n)
	}
}

// Validate marks the address as validated; the limit no longer applies.
func (a *AmplificationLimit) Validate() { a.validated = true }

// Validated reports whether the address has been validated.
func (a *AmplificationLimit) Validated() bool { return a.validated }

// Budget returns how many more bytes may be sent now (all of them when
// validated).
func (a *AmplificationLimit) Budget() uint64 {
	if a.validated {
		return ^uint64(0)
	}
	limit := AmplificationFactor * a.received
	if a.sent >= limit {
		return 0
	}
	return limit - a.sent
}

// CanSend reports whether n more bytes fit in the budget.
func (a *AmplificationLimit) CanSend(n int) bool { return n >= 0 && uint64(n) <= a.Budget() }

// TrySend accounts n bytes to be sent, or returns ErrAmplification and
// accounts nothing when they do not fit.
func (a *AmplificationLimit) TrySend(n int) error {
	if !a.CanSend(n) {
		return ErrAmplification
	}
	a.sent += uint64(n)
	return nil
}

// Counters returns the bytes received and sent so far.
func (a *AmplificationLimit) Counters() (received, sent uint64) { return a.received, a.sent }
