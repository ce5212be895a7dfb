package transport

import (
	"container/heap"
	"time"
)

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

type timerHeap []timerEntry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = timerEntry{}
	*h = old[:len(old)-1]
	return e
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
		heap.Push(&e.timers, timerEntry{d, c})
	}
}

// runTimers fires the timers due by now. The connections fired are
// scheduled again only after the loop: a timer that stays due until the
// connection transmits (an ACK) must not fire again in the same call.
func (e *Endpoint) runTimers(now time.Time) {
	fired := e.fired[:0]
	for len(e.timers) > 0 && !now.Before(e.timers[0].at) {
		t := heap.Pop(&e.timers).(timerEntry)
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
		heap.Pop(&e.timers) // stale
	}
	return time.Time{}
}
