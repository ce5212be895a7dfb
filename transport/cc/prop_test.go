package cc

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestControllerInvariants drives both controllers with random event
// sequences and checks what must hold whatever the network does.
func TestControllerInvariants(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		var c Controller
		if rapid.Bool().Draw(rt, "newreno") {
			c = NewNewReno(mss)
		} else {
			c = NewCubic(mss)
		}
		now := t0
		var sentTimes []time.Time
		inFlight := 0
		var recoveryStart time.Time
		steps := rapid.IntRange(1, 300).Draw(rt, "steps")
		for i := 0; i < steps; i++ {
			now = now.Add(time.Duration(rapid.Int64Range(0, int64(50*time.Millisecond)).Draw(rt, "dt")))
			w := c.Window()
			switch op := rapid.IntRange(0, 9).Draw(rt, "op"); {
			case op < 4:
				n := rapid.IntRange(1, 20).Draw(rt, "n")
				for j := 0; j < n; j++ {
					inFlight += mss
					c.OnSent(now, mss, inFlight)
					sentTimes = append(sentTimes, now)
				}
			case op < 8 && len(sentTimes) > 0:
				k := rapid.IntRange(1, len(sentTimes)).Draw(rt, "acked")
				st := sentTimes[k-1]
				sentTimes = sentTimes[k:]
				inFlight -= k * mss
				rtt := time.Duration(rapid.Int64Range(int64(time.Millisecond), int64(200*time.Millisecond)).Draw(rt, "rtt"))
				c.OnAcked(now, k*mss, st, rttOf(rtt), inFlight)
				if g := c.Window() - w; g > k*mss {
					rt.Fatalf("window grew by %d on an ACK of %d bytes", g, k*mss)
				}
			case op < 9 && len(sentTimes) > 0:
				k := rapid.IntRange(1, len(sentTimes)).Draw(rt, "lost")
				st := sentTimes[k-1]
				sentTimes = sentTimes[k:]
				inFlight -= k * mss
				c.OnLost(now, k*mss, st)
				if c.Window() > w {
					rt.Fatalf("loss grew the window %d -> %d", w, c.Window())
				}
				if !recoveryStart.IsZero() && !st.After(recoveryStart) && c.Window() != w {
					rt.Fatalf("second reduction in one recovery period")
				}
				if c.Window() < w || (st.After(recoveryStart) && w == 2*mss) {
					recoveryStart = now
				}
			case op == 9:
				c.OnPersistentCongestion(now)
				recoveryStart = time.Time{}
				if c.Window() != 2*mss {
					rt.Fatalf("window %d after persistent congestion", c.Window())
				}
			}
			if c.Window() < 2*mss || c.Window() > 1<<40 {
				rt.Fatalf("window %d out of range", c.Window())
			}
		}
	})
}
