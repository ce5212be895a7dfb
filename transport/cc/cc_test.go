package cc

import (
	"math"
	"testing"
	"time"
)

const mss = 1200

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func rttOf(d time.Duration) RTT {
	return RTT{Latest: d, Smoothed: d, Min: d, Variance: d / 4}
}

// driver feeds a controller window-sized rounds: every round trip it sends
// a window's worth of mss packets at the round start, and the ACKs (one per
// packet) arrive spread over the following round trip.
type driver struct {
	c   Controller
	now time.Time
	rtt time.Duration
	// rttFor, if set, gives the RTT sample of round r.
	rttFor func(r int) time.Duration
	round  int
}

// run plays one round and returns the window at its end.
func (d *driver) run() int {
	rtt := d.rtt
	if d.rttFor != nil {
		rtt = d.rttFor(d.round)
	}
	n := d.c.Window() / mss
	sent := d.now
	inFlight := 0
	for i := 0; i < n; i++ {
		inFlight += mss
		d.c.OnSent(sent, mss, inFlight)
	}
	for i := 0; i < n; i++ {
		inFlight -= mss
		at := sent.Add(rtt * time.Duration(i+1) / time.Duration(n))
		d.c.OnAcked(at, mss, sent, rttOf(rtt), inFlight)
	}
	d.now = sent.Add(rtt)
	d.round++
	return d.c.Window()
}

func TestCubicFunction(t *testing.T) {
	// W_max = 100 segments, reduced to 70: K = cbrt(30/0.4) = cbrt(75).
	k := cubicK(100, 70)
	if math.Abs(k-math.Cbrt(75)) > 1e-12 || math.Abs(k-4.2172) > 1e-4 {
		t.Fatalf("K = %v", k)
	}
	if w := cubicWindow(0, k, 100); math.Abs(w-70) > 1e-9 {
		t.Fatalf("W(0) = %v, want 70 (the reduced window)", w)
	}
	if w := cubicWindow(k, k, 100); w != 100 {
		t.Fatalf("W(K) = %v, want W_max", w)
	}
	// Concave before K (growth slows), convex after (growth speeds up).
	prev, prevGrowth := cubicWindow(0, k, 100), math.Inf(1)
	for ts := 0.25; ts <= 2*k; ts += 0.25 {
		w := cubicWindow(ts, k, 100)
		g := w - prev
		if g < 0 {
			t.Fatalf("W decreasing at %v", ts)
		}
		if ts < k-0.25 && g > prevGrowth {
			t.Fatalf("not concave at %v", ts)
		}
		if ts > k+0.25 && g < prevGrowth {
			t.Fatalf("not convex at %v", ts)
		}
		prev, prevGrowth = w, g
	}
	if k := cubicK(100, 120); k != 0 {
		t.Fatalf("K above W_max = %v", k)
	}
	// The RFC's closed form with no fast convergence: K = cbrt(W_max*(1-beta)/C).
	if k := cubicK(500, 500*CubicBeta); math.Abs(k-math.Cbrt(500*0.3/0.4)) > 1e-12 {
		t.Fatalf("K = %v", k)
	}
}

func TestInitialAndMinimumWindow(t *testing.T) {
	for name, c := range map[string]Controller{"cubic": NewCubic(mss), "newreno": NewNewReno(mss)} {
		if c.Window() != 10*mss || !c.InSlowStart() {
			t.Fatalf("%s: initial window %d", name, c.Window())
		}
		c.OnPersistentCongestion(t0)
		if c.Window() != 2*mss {
			t.Fatalf("%s: window after persistent congestion %d", name, c.Window())
		}
		// Losses never take it below the minimum.
		for i := 1; i < 10; i++ {
			c.OnLost(t0.Add(time.Duration(i)*time.Second), mss, t0.Add(time.Duration(i)*time.Second-1))
		}
		if c.Window() != 2*mss {
			t.Fatalf("%s: window %d below minimum", name, c.Window())
		}
	}
}

func TestSlowStartDoublesPerRound(t *testing.T) {
	for name, c := range map[string]Controller{"cubic": NewCubic(mss), "newreno": NewNewReno(mss)} {
		d := &driver{c: c, now: t0, rtt: 20 * time.Millisecond}
		w := c.Window()
		for r := 0; r < 6; r++ {
			nw := d.run()
			if nw != 2*w || !c.InSlowStart() {
				t.Fatalf("%s round %d: window %d -> %d, want doubling in slow start", name, r, w, nw)
			}
			w = nw
		}
	}
}

func TestHyStartExitOnRTTIncrease(t *testing.T) {
	c := newCubic(mss)
	// 20 ms for three rounds, then 30 ms (above the 4 ms threshold).
	d := &driver{c: c, now: t0, rttFor: func(r int) time.Duration {
		if r < 3 {
			return 20 * time.Millisecond
		}
		return 30 * time.Millisecond
	}}
	var ws []int
	for r := 0; r < 12 && c.InSlowStart(); r++ {
		ws = append(ws, d.run())
		if r == 3 && !c.InCSS() {
			t.Fatalf("not in conservative slow start after the RTT rose; windows %v", ws)
		}
	}
	if c.InSlowStart() || c.SlowStartExit() != ExitHyStart {
		t.Fatalf("slow start did not end by HyStart++: windows %v", ws)
	}
	// Rounds 0-2 double; the round that sees the rise enters CSS after
	// N_RTT_SAMPLE samples; then growth is a quarter of slow start: x1.25
	// per round, for CSS_ROUNDS rounds.
	if ws[0] != 20*mss || ws[1] != 40*mss || ws[2] != 80*mss {
		t.Fatalf("slow start windows %v", ws)
	}
	for i := 4; i < len(ws)-1; i++ {
		ratio := float64(ws[i]) / float64(ws[i-1])
		if math.Abs(ratio-1.25) > 0.01 {
			t.Fatalf("CSS growth %.3f in round %d, want 1.25 (windows %v)", ratio, i, ws)
		}
	}
	if got := len(ws); got < 3+HyStartCSSRounds || got > 3+HyStartCSSRounds+2 {
		t.Fatalf("exit after %d rounds, want about %d: %v", got, 3+HyStartCSSRounds, ws)
	}
	if c.Ssthresh() > c.Window() || c.Window() > c.Ssthresh()*21/20 {
		t.Fatalf("ssthresh %d, window %d", c.Ssthresh(), c.Window())
	}
	t.Logf("windows (segments): %v", segs(ws))
}

func segs(ws []int) []int {
	out := make([]int, len(ws))
	for i, w := range ws {
		out[i] = w / mss
	}
	return out
}

func TestHyStartSmallRiseAndSpuriousCSS(t *testing.T) {
	// An increase of 3 ms on 20 ms is under the 4 ms floor: no exit.
	c := newCubic(mss)
	d := &driver{c: c, now: t0, rttFor: func(r int) time.Duration {
		return 20*time.Millisecond + time.Duration(r)*time.Millisecond
	}}
	for r := 0; r < 8; r++ {
		d.run()
		if c.InCSS() {
			t.Fatalf("entered CSS in round %d on a 1 ms/round rise", r)
		}
	}
	// A rise, then the RTT falls back below the CSS baseline: back to
	// slow start.
	c = newCubic(mss)
	d = &driver{c: c, now: t0, rttFor: func(r int) time.Duration {
		if r == 2 {
			return 40 * time.Millisecond
		}
		return 20 * time.Millisecond
	}}
	d.run()
	d.run()
	d.run()
	if !c.InCSS() {
		t.Fatal("no CSS after the rise")
	}
	w := c.Window()
	d.run()
	if c.InCSS() || !c.InSlowStart() {
		t.Fatal("still in CSS after the RTT fell back")
	}
	if c.Window() < w*3/2 {
		t.Fatalf("window %d -> %d: slow-start growth did not resume", w, c.Window())
	}
}

func TestMultiplicativeDecrease(t *testing.T) {
	c := newCubic(mss)
	d := &driver{c: c, now: t0, rtt: 20 * time.Millisecond}
	for i := 0; i < 4; i++ {
		d.run()
	}
	w := c.Window() // 160 segments
	c.OnLost(d.now, mss, d.now.Add(-time.Millisecond))
	if got, want := c.Window(), int(float64(w)*0.7); got != want {
		t.Fatalf("window %d after loss, want %d (0.7 x %d)", got, want, w)
	}
	if c.InSlowStart() || c.SlowStartExit() != ExitLoss || c.WMax() != w || c.Ssthresh() != c.Window() {
		t.Fatalf("state after loss: slow start %v exit %v wmax %d ssthresh %d", c.InSlowStart(), c.SlowStartExit(), c.WMax(), c.Ssthresh())
	}
	// NewReno halves.
	r := NewNewReno(mss)
	d = &driver{c: r, now: t0, rtt: 20 * time.Millisecond}
	d.run()
	w = r.Window()
	r.OnLost(d.now, mss, d.now.Add(-time.Millisecond))
	if r.Window() != w/2 || r.InSlowStart() {
		t.Fatalf("newreno: %d -> %d", w, r.Window())
	}
}

func TestFastConvergence(t *testing.T) {
	c := newCubic(mss)
	d := &driver{c: c, now: t0, rtt: 20 * time.Millisecond}
	for i := 0; i < 4; i++ {
		d.run()
	}
	c.OnLost(d.now, mss, d.now.Add(-time.Millisecond)) // W_max = 160 segments
	d.now = d.now.Add(time.Millisecond)
	d.run()
	w := c.Window()
	if w >= c.WMax() {
		t.Fatalf("window %d not below W_max %d", w, c.WMax())
	}
	c.OnLost(d.now, mss, d.now.Add(-time.Microsecond))
	if got, want := c.WMax(), int(float64(w)*(1+CubicBeta)/2); got < want-1 || got > want+1 {
		t.Fatalf("W_max %d, want %d (fast convergence)", got, want)
	}
	c2 := newCubic(mss)
	c2.FastConvergence = false
	c2.cwnd = float64(w)
	c2.wMax = float64(w + 10*mss)
	c2.ssthresh = 1
	c2.OnLost(d.now, mss, d.now)
	if c2.WMax() != w {
		t.Fatalf("without fast convergence W_max %d, want %d", c2.WMax(), w)
	}
}

func TestOneReductionPerRecoveryPeriod(t *testing.T) {
	for name, c := range map[string]Controller{"cubic": NewCubic(mss), "newreno": NewNewReno(mss)} {
		d := &driver{c: c, now: t0, rtt: 20 * time.Millisecond}
		for i := 0; i < 3; i++ {
			d.run()
		}
		sent := d.now
		c.OnSent(sent, mss, mss)
		lossAt := sent.Add(30 * time.Millisecond)
		c.OnLost(lossAt, mss, sent)
		w := c.Window()
		// More losses of packets sent before recovery began: no reduction.
		c.OnLost(lossAt.Add(time.Millisecond), 5*mss, sent)
		c.OnLost(lossAt.Add(2*time.Millisecond), 5*mss, lossAt)
		if c.Window() != w {
			t.Fatalf("%s: reduced again inside the recovery period: %d -> %d", name, w, c.Window())
		}
		// ACKs of pre-recovery packets do not grow the window.
		c.OnAcked(lossAt.Add(3*time.Millisecond), 10*mss, sent, rttOf(20*time.Millisecond), 10*mss)
		if c.Window() != w {
			t.Fatalf("%s: grew inside the recovery period: %d -> %d", name, w, c.Window())
		}
		// A loss of a packet sent after recovery began is a new event.
		c.OnLost(lossAt.Add(40*time.Millisecond), mss, lossAt.Add(time.Millisecond))
		if c.Window() >= w {
			t.Fatalf("%s: no reduction for a new congestion event", name)
		}
	}
}

func TestPersistentCongestion(t *testing.T) {
	c := newCubic(mss)
	d := &driver{c: c, now: t0, rtt: 20 * time.Millisecond}
	for i := 0; i < 5; i++ {
		d.run()
	}
	c.OnLost(d.now, mss, d.now.Add(-time.Millisecond))
	ss := c.Ssthresh()
	c.OnPersistentCongestion(d.now)
	if c.Window() != 2*mss || !c.InSlowStart() || c.Ssthresh() != ss {
		t.Fatalf("window %d slow start %v ssthresh %d", c.Window(), c.InSlowStart(), c.Ssthresh())
	}
	// Slow start back up to ssthresh, then congestion avoidance.
	d.now = d.now.Add(time.Second)
	for i := 0; i < 20 && c.InSlowStart(); i++ {
		d.run()
	}
	if c.InSlowStart() || c.Window() < ss {
		t.Fatalf("did not return to congestion avoidance: window %d ssthresh %d", c.Window(), ss)
	}
}

// lossThenTrack reduces at wMax segments and then runs rounds for dur,
// returning the (time since the reduction, window in segments) samples.
func lossThenTrack(c *Cubic, wMax int, rtt, dur time.Duration) (ts []float64, ws []float64) {
	c.cwnd = float64(wMax * mss)
	c.ssthresh = c.cwnd
	c.exitReason = ExitLoss
	c.OnLost(t0, mss, t0)
	d := &driver{c: c, now: t0.Add(time.Nanosecond), rtt: rtt}
	for d.now.Sub(t0) < dur {
		w := d.run()
		ts = append(ts, d.now.Sub(t0).Seconds())
		ws = append(ws, float64(w)/mss)
	}
	return ts, ws
}

func TestConcaveThenConvexGrowth(t *testing.T) {
	// A large window and a long RTT: the cubic curve dominates the
	// Reno-friendly estimate.
	c := newCubic(mss)
	ts, ws := lossThenTrack(c, 1000, 100*time.Millisecond, 16*time.Second)
	k := c.K().Seconds()
	if math.Abs(k-math.Cbrt(1000*0.3/0.4)) > 1e-6 {
		t.Fatalf("K = %v", k)
	}
	var plateau float64
	for i := 2; i < len(ws); i++ {
		// Tracks W_cubic(t) (the window leads it by up to one RTT).
		want := cubicWindow(ts[i], k, 1000)
		ahead := cubicWindow(ts[i]+0.1, k, 1000)
		if ws[i] < want-2 || ws[i] > ahead+2 {
			t.Fatalf("t=%.2f window %.1f, cubic curve %.1f..%.1f", ts[i], ws[i], want, ahead)
		}
		g1, g0 := ws[i]-ws[i-1], ws[i-1]-ws[i-2]
		if ts[i] < k-0.5 && g1 > g0+0.01 {
			t.Fatalf("growth speeding up before K at %.2f (%.2f > %.2f)", ts[i], g1, g0)
		}
		if ts[i-2] > k+0.5 && g1 < g0-0.01 {
			t.Fatalf("growth slowing after K at %.2f (%.2f < %.2f)", ts[i], g1, g0)
		}
		if math.Abs(ts[i]-k) < 0.05 {
			plateau = ws[i]
		}
	}
	if math.Abs(plateau-1000) > 10 {
		t.Fatalf("window %.1f at K, want about W_max 1000", plateau)
	}
	t.Logf("K=%.2fs; window 700 -> %.0f at 2s, %.0f at K, %.0f at 16s", k, ws[19], plateau, ws[len(ws)-1])
}

func TestRenoFriendlyRegion(t *testing.T) {
	// A small window and a short RTT: W_est grows faster than the cubic
	// curve, and the window follows it: alpha = 0.53 segments per RTT up
	// to the window before the reduction, then 1.
	c := newCubic(mss)
	ts, ws := lossThenTrack(c, 20, 10*time.Millisecond, 3*time.Second)
	k := c.K().Seconds()
	var crossed int
	for i := 1; i < len(ws); i++ {
		if ws[i] < cubicWindow(ts[i], k, 20)-0.5 {
			t.Fatalf("t=%.2f window %.1f below the cubic curve", ts[i], ws[i])
		}
		if crossed == 0 && ws[i] >= 20 {
			crossed = i
		}
	}
	// From 14 to 20 segments at 0.53/RTT: about 11 rounds.
	if crossed < 10 || crossed > 14 {
		t.Fatalf("reached the previous window after %d rounds, want about 11 (%v)", crossed, ws[:20])
	}
	// After that one segment per round (Reno).
	g := (ws[crossed+50] - ws[crossed+10]) / 40
	if math.Abs(g-1) > 0.05 {
		t.Fatalf("growth %.3f segments per RTT above the previous window, want 1", g)
	}
	if cubicWindow(ts[crossed+50], k, 20) > ws[crossed+50] {
		t.Fatal("cubic curve overtook")
	}
	t.Logf("reached W_max after %d RTTs; then %.2f segments/RTT", crossed, g)
}

func TestAppLimitedDoesNotGrow(t *testing.T) {
	for name, c := range map[string]Controller{"cubic": NewCubic(mss)} {
		now := t0
		w := c.Window()
		for i := 0; i < 100; i++ {
			c.OnSent(now, mss, mss)
			now = now.Add(20 * time.Millisecond)
			c.OnAcked(now, mss, now.Add(-20*time.Millisecond), rttOf(20*time.Millisecond), 0)
		}
		if c.Window() != w {
			t.Fatalf("%s: an application-limited sender grew the window %d -> %d", name, w, c.Window())
		}
	}
}

func TestPacerSpacing(t *testing.T) {
	var p Pacer
	rtt := rttOf(100 * time.Millisecond)
	cwnd := 120000 // 1.25*cwnd/srtt = 1.5 MB/s: 1200 bytes every 800us
	now := t0
	if got := p.NextSend(now, cwnd, RTT{}, mss); !got.Equal(now) {
		t.Fatal("paced without an RTT")
	}
	// The first burst of 10 goes at once.
	for i := 0; i < DefaultBurst; i++ {
		if got := p.NextSend(now, cwnd, rtt, mss); got.After(now) {
			t.Fatalf("burst packet %d delayed to %v", i, got.Sub(now))
		}
		p.OnSent(now, mss, cwnd, rtt)
	}
	// Then 800us apart.
	for i := 0; i < 100; i++ {
		next := p.NextSend(now, cwnd, rtt, mss)
		gap := next.Sub(now)
		if gap < 800*time.Microsecond-10 || gap > 800*time.Microsecond+10 {
			t.Fatalf("gap %v, want 800us", gap)
		}
		now = next
		if p.NextSend(now, cwnd, rtt, mss).After(now) {
			t.Fatal("not allowed at the time NextSend gave")
		}
		p.OnSent(now, mss, cwnd, rtt)
	}
	// Slow start doubles the gain: 400us... 2*120000/0.1s = 2.4 MB/s = 500us.
	p.SlowStart = true
	next := p.NextSend(now, cwnd, rtt, mss)
	if gap := next.Sub(now); gap < 500*time.Microsecond-10 || gap > 500*time.Microsecond+10 {
		t.Fatalf("slow-start gap %v, want 500us", gap)
	}
	// With a Controller in slow start the same.
	q := Pacer{Controller: NewCubic(mss), Burst: 1}
	q.OnSent(now, mss, cwnd, rtt)
	if gap := q.NextSend(now, cwnd, rtt, mss).Sub(now); gap < 500*time.Microsecond-10 || gap > 500*time.Microsecond+10 {
		t.Fatalf("controller slow-start gap %v", gap)
	}
	// After idle the bucket refills to one burst only.
	now = now.Add(time.Second)
	n := 0
	for !p.NextSend(now, cwnd, rtt, mss).After(now) {
		p.OnSent(now, mss, cwnd, rtt)
		n++
	}
	if n != DefaultBurst {
		t.Fatalf("burst after idle %d, want %d", n, DefaultBurst)
	}
}

func TestPacerAverageRate(t *testing.T) {
	p := Pacer{Burst: 4}
	rtt := rttOf(20 * time.Millisecond)
	cwnd := 250000 // 1.25*250000/20ms = 15.625 MB/s
	now := t0
	sent := 0
	end := t0.Add(time.Second)
	for now.Before(end) {
		next := p.NextSend(now, cwnd, rtt, mss)
		if next.After(now) {
			now = next
			continue
		}
		p.OnSent(now, mss, cwnd, rtt)
		sent += mss
	}
	want := 1.25 * 250000 / 0.02
	if got := float64(sent); math.Abs(got-want)/want > 0.01 {
		t.Fatalf("sent %.0f bytes in 1s, want %.0f", got, want)
	}
}

func TestZeroAllocs(t *testing.T) {
	for name, c := range map[string]Controller{"cubic": NewCubic(mss), "newreno": NewNewReno(mss)} {
		d := &driver{c: c, now: t0, rtt: 20 * time.Millisecond}
		var p Pacer
		p.Controller = c
		allocs := testing.AllocsPerRun(100, func() {
			if d.c.Window() > 1000*mss {
				d.c.OnLost(d.now, mss, d.now)
				d.now = d.now.Add(time.Millisecond)
			}
			d.run()
			p.OnSent(d.now, mss, c.Window(), rttOf(d.rtt))
			_ = p.NextSend(d.now, c.Window(), rttOf(d.rtt), mss)
		})
		if allocs != 0 {
			t.Fatalf("%s: %v allocs per round", name, allocs)
		}
	}
}

func benchController(b *testing.B, c Controller) {
	b.ReportAllocs()
	now := t0
	rtt := rttOf(20 * time.Millisecond)
	inFlight := 0
	for i := 0; b.Loop(); i++ {
		now = now.Add(10 * time.Microsecond)
		inFlight += mss
		c.OnSent(now, mss, inFlight)
		inFlight -= mss
		c.OnAcked(now, mss, now.Add(-rtt.Smoothed), rtt, inFlight+c.Window()/2)
		if i%5000 == 4999 {
			c.OnLost(now, mss, now)
		}
	}
}

func BenchmarkCubicOnSentOnAcked(b *testing.B)   { benchController(b, NewCubic(mss)) }
func BenchmarkNewRenoOnSentOnAcked(b *testing.B) { benchController(b, NewNewReno(mss)) }

func BenchmarkPacer(b *testing.B) {
	b.ReportAllocs()
	var p Pacer
	now := t0
	rtt := rttOf(20 * time.Millisecond)
	for b.Loop() {
		now = p.NextSend(now, 250000, rtt, mss)
		p.OnSent(now, mss, 250000, rtt)
	}
}
