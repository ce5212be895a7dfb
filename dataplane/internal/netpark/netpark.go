// Package netpark parks a dataplane shard's goroutine in Go's network
// poller on its socket, as a blocked net.Conn read does, and lets other
// goroutines wake it: the shard holds no OS thread while it waits, and a
// wake-up is a read deadline in the past, not a system call. The portable
// and io_uring backends both wait this way.
package netpark

import (
	"errors"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"
)

// Parker waits on one socket for its owner's shard.
type Parker struct {
	file  *os.File
	raw   syscall.RawConn
	ready func() (bool, error)
	fn    func(uintptr) bool // read, made once: a closure per Park would allocate
	err   error
	parks *atomic.Uint64 // Park's counter, for read
	reads int            // read calls in this Park
	probe bool           // ready is running as the read before parking (Probing)
	armed time.Time      // the file's read deadline as Park last set it (zero: none; pastDeadline: to be set again)

	woken  atomic.Bool // a Wake came: the next or current Park returns
	parked atomic.Bool // in the poller: a Wake must interrupt it
}

// New parks on file (a non-blocking socket the poller took). ready is the
// owner's check, run on the shard's goroutine whenever the poller reports
// the socket readable (and once before parking: the poller is
// edge-triggered): it reads what it can and reports whether there is work.
func New(file *os.File, ready func() (bool, error)) (*Parker, error) {
	raw, err := file.SyscallConn()
	if err != nil {
		return nil, err
	}
	p := &Parker{file: file, raw: raw, ready: ready}
	p.fn = p.read
	return p, nil
}

// File is the socket's file.
func (p *Parker) File() *os.File { return p.file }

// Park waits until ready reports work, Wake is called, or the deadline
// passes (zero: none), counting in parks each time it really parks (not
// when a Wake came first, nor when the read before parking found work). It returns ready's error, or the poller's.
// now is the caller's latest reading of the clock (zero: none, Park reads
// it if it needs it).
//
// It may also return early, at a deadline an earlier Park set that is
// still to come and no later than the one asked for: that one is left
// armed, since setting the file's deadline moves a runtime timer (under
// the timers' lock) and reads the clock, twice per round trip for a shard
// that parks on each.
func (p *Parker) Park(deadline, now time.Time, parks *atomic.Uint64) error {
	p.arm(deadline, now)
	p.parked.Store(true) // before looking at woken: a Wake after this interrupts the read
	if p.woken.Swap(false) {
		p.parked.Store(false)
		return nil // a Wake came before we parked
	}
	p.parks, p.reads = parks, 0
	err := p.raw.Read(p.fn)
	p.parked.Store(false)
	if p.woken.Load() { // stored only if set: a store is a locked instruction
		p.woken.Store(false)
	}
	if p.err != nil {
		err, p.err = p.err, nil
		return err
	}
	if err != nil {
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		// The armed deadline passed, or a Wake set one in the past
		// (perhaps after this Park saw it): set it anew next time.
		p.armed = pastDeadline
	}
	return nil
}

// pastDeadline marks the file's read deadline as passed (Parker.armed).
var pastDeadline = time.Unix(1, 0)

// arm sets the file's read deadline for a Park until deadline, unless the
// one set is still to come (after now, or the clock when now is zero) and
// no later. A now a few microseconds old at worst keeps a deadline that
// passed since: Park then returns at once, as at any deadline.
func (p *Parker) arm(deadline, now time.Time) {
	a := p.armed
	switch {
	case a.IsZero() && deadline.IsZero():
		return // none set, none wanted
	case !a.IsZero() && a != pastDeadline && (deadline.IsZero() || !a.After(deadline)):
		if now.IsZero() {
			now = time.Now()
		}
		if a.After(now) {
			return // an earlier one is set: Park returns then, and its caller parks again
		}
	}
	p.file.SetReadDeadline(deadline)
	p.armed = deadline
}

func (p *Parker) read(uintptr) bool {
	p.reads++
	p.probe = p.reads == 1
	work, err := p.ready()
	p.probe = false
	if err != nil {
		p.err = err
		return true
	}
	done := work || p.woken.Load()
	if !done && p.reads == 1 {
		p.parks.Add(1) // the read before parking found nothing: Park blocks now
	}
	return done
}

// Probing reports, to ready, that it runs as the read Park makes before it
// parks (the poller is edge-triggered), not after the poller said the
// socket is readable: an owner whose last read drained the socket may
// just look whether anything came.
func (p *Parker) Probing() bool { return p.probe }

// Wake makes the current Park return, or the next one. Any goroutine.
func (p *Parker) Wake() {
	p.woken.Store(true)
	if p.parked.Load() { // else Park sees woken before it parks
		p.file.SetReadDeadline(time.Now())
	}
}

// TakeWake reports whether a Wake came since the last Park or TakeWake,
// and clears it.
func (p *Parker) TakeWake() bool { return p.woken.Swap(false) }

// Woken reports whether a Wake came (without clearing it).
func (p *Parker) Woken() bool { return p.woken.Load() }

// Spin busy-polls: it runs ready until it reports work, a Wake comes or the
// deadline passes, yielding to other goroutines in between, for at most
// budget; it reports whether one of those came.
func (p *Parker) Spin(budget time.Duration, deadline time.Time) (bool, error) {
	start := time.Now()
	for now := start; now.Sub(start) < budget; now = time.Now() {
		if p.TakeWake() || !deadline.IsZero() && !now.Before(deadline) {
			return true, nil
		}
		if work, err := p.ready(); work || err != nil {
			return true, err
		}
		runtime.Gosched()
	}
	return false, nil
}
