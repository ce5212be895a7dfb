package transport

import "time"

// The endpoint keeps its connections' timers in a min-heap, so Transmit and
// Deadline cost O(log n) in the connections with due timers, not O(n) in all
// connections. Entries are lazy: a connection whose deadline moved later
// keeps its old entry, which fires early and is rescheduled; one whose
// deadline moved earlier gets a new entry, and the old one is skipped when
// it surfaces (its time is no longer the connection's heapAt).

type timerEntry struct {
	at time.Time
	c  *Conn
}

// timerHeap is a binary min-heap by time, typed so that pushing and popping
// do not box entries (container/heap's interface allocated per timer).
type timerHeap []timerEntry

func (h *timerHeap) push(t timerEntry) {
	*h = append(*h, t)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].at.Before(s[p].at) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *timerHeap) pop() timerEntry {
	s := *h
	top := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s[last] = timerEntry{}
	s = s[:last]
	for i := 0; ; {
		l, m := 2*i+1, i
		if l < len(s) && s[l].at.Before(s[m].at) {
			m = l
		}
		if r := l + 1; r < len(s) && s[r].at.Before(s[m].at) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}

// nextTimer is the earliest of the connection's deadline and pacing release.
func (c *Conn) nextTimer() time.Time {
	d := c.Deadline()
	if !c.paceAt.IsZero() && (d.IsZero() || c.paceAt.Before(d)) {
		d = c.paceAt
	}
	return d
}

// schedule makes sure the heap holds an entry no later than c's next timer.
func (e *Endpoint) schedule(c *Conn) {
	d := c.nextTimer()
	if d.IsZero() || c.state == stateClosed {
		return
	}
	if c.heapAt.IsZero() || d.Before(c.heapAt) {
		c.heapAt = d
		e.timers.push(timerEntry{d, c})
	}
}

// runTimers fires the timers due by now. The connections fired are
// scheduled again only after the loop: a timer that stays due until the
// connection transmits (an ACK) must not fire again in the same call.
func (e *Endpoint) runTimers(now time.Time) {
	fired := e.fired[:0]
	for len(e.timers) > 0 && !now.Before(e.timers[0].at) {
		t := e.timers.pop()
		c := t.c
		if !t.at.Equal(c.heapAt) || e.conns[c.cid] != c {
			continue // stale: superseded by an earlier entry, or the connection is gone
		}
		c.heapAt = time.Time{}
		if d := c.Deadline(); !d.IsZero() && !now.Before(d) {
			c.onTimer(now)
		}
		if !c.paceAt.IsZero() && !now.Before(c.paceAt) {
			c.paceAt = time.Time{}
			e.wantSend(c)
		}
		fired = append(fired, c)
	}
	for i, c := range fired {
		e.schedule(c)
		fired[i] = nil
	}
	e.fired = fired[:0]
}

// Deadline returns when Transmit should next be called without input.
func (e *Endpoint) Deadline() time.Time {
	for len(e.timers) > 0 {
		t := e.timers[0]
		if t.at.Equal(t.c.heapAt) && e.conns[t.c.cid] == t.c {
			return t.at
		}
		e.timers.pop() // stale
	}
	return time.Time{}
}
