package cc_test

// A packet-level simulation of the controllers over netsim: a minimal
// sender (sequence numbers, RFC 9002-style loss detection by packet and time
// threshold, PTO probes, the Controller and the Pacer) and receiver (ACKs of
// the highest received ranges), not the real transport. Lost packets are not
// retransmitted: the sender always has new data, and goodput is counted as
// unique packets received.

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/transport/cc"
	"github.com/mxp-dataplane/mxp/transport/netsim"
)

const (
	pktSize   = 1200
	bucket    = 10 * time.Millisecond
	maxRanges = 32
)

type pktState uint8

const (
	inFlight pktState = iota
	acked
	lost
)

type sentPkt struct {
	at    time.Time
	state pktState
}

type simSender struct {
	id    byte
	start time.Time
	cc    cc.Controller
	pacer cc.Pacer

	rtt     cc.RTT
	hasRTT  bool
	pkts    []sentPkt // by sequence number
	base    int       // every packet below is resolved
	largest int       // largest acknowledged, -1 none
	bytes   int       // in flight

	lossTime  time.Time
	lastSent  time.Time
	ptoCount  int
	probes    int
	nextPace  time.Time
	lostPkts  int
	congEvts  int
	maxWindow int
	buf       []byte
}

func newSender(id byte, start time.Time, c cc.Controller) *simSender {
	s := &simSender{id: id, start: start, cc: c, largest: -1}
	s.pacer.MaxDatagram = pktSize
	s.pacer.Controller = c
	return s
}

func (s *simSender) ptoDeadline() time.Time {
	if s.bytes == 0 {
		return time.Time{}
	}
	pto := 2 * 333 * time.Millisecond
	if s.hasRTT {
		pto = s.rtt.Smoothed + max(4*s.rtt.Variance, time.Millisecond)
	}
	return s.lastSent.Add(pto << s.ptoCount)
}

func (s *simSender) updateRTT(latest time.Duration) {
	s.rtt.Latest = latest
	if !s.hasRTT {
		s.hasRTT = true
		s.rtt.Min, s.rtt.Smoothed, s.rtt.Variance = latest, latest, latest/2
		return
	}
	s.rtt.Min = min(s.rtt.Min, latest)
	dev := s.rtt.Smoothed - latest
	if dev < 0 {
		dev = -dev
	}
	s.rtt.Variance = (3*s.rtt.Variance + dev) / 4
	s.rtt.Smoothed = (7*s.rtt.Smoothed + latest) / 8
}

func (s *simSender) onAck(now time.Time, data []byte) {
	largest := int(binary.BigEndian.Uint64(data[1:]))
	n := int(data[9])
	newBytes := 0
	newest := -1
	for i := 0; i < n; i++ {
		hi := int(binary.BigEndian.Uint64(data[10+16*i:]))
		lo := int(binary.BigEndian.Uint64(data[18+16*i:]))
		for q := max(lo, s.base); q <= hi && q < len(s.pkts); q++ {
			if s.pkts[q].state == inFlight {
				s.pkts[q].state = acked
				s.bytes -= pktSize
				newBytes += pktSize
				newest = max(newest, q)
			}
		}
	}
	if largest > s.largest {
		s.largest = largest
		if newest == largest {
			s.updateRTT(now.Sub(s.pkts[largest].at))
		}
	}
	if newBytes > 0 {
		s.ptoCount = 0
		s.cc.OnAcked(now, newBytes, s.pkts[newest].at, s.rtt, s.bytes)
	}
	s.detectLoss(now)
}

func (s *simSender) detectLoss(now time.Time) {
	delay := max(9*max(s.rtt.Smoothed, s.rtt.Latest)/8, time.Millisecond)
	s.lossTime = time.Time{}
	lostBytes := 0
	var newestLost time.Time
	for q := s.base; q < s.largest; q++ {
		p := &s.pkts[q]
		if p.state != inFlight {
			continue
		}
		if s.largest-q >= 3 || !p.at.After(now.Add(-delay)) {
			p.state = lost
			s.bytes -= pktSize
			lostBytes += pktSize
			s.lostPkts++
			newestLost = p.at
		} else if t := p.at.Add(delay); s.lossTime.IsZero() || t.Before(s.lossTime) {
			s.lossTime = t
		}
	}
	if lostBytes > 0 {
		w := s.cc.Window()
		s.cc.OnLost(now, lostBytes, newestLost)
		if s.cc.Window() < w {
			s.congEvts++
		}
	}
	for s.base < len(s.pkts) && s.pkts[s.base].state != inFlight {
		s.base++
	}
}

func (s *simSender) transmit(now time.Time, out []netsim.Datagram, to netsim.Addr) []netsim.Datagram {
	s.nextPace = time.Time{}
	if now.Before(s.start) {
		return out
	}
	if !s.lossTime.IsZero() && !now.Before(s.lossTime) {
		s.detectLoss(now)
	}
	if pto := s.ptoDeadline(); !pto.IsZero() && !now.Before(pto) {
		s.ptoCount++
		s.probes = 2
	}
	cwnd := s.cc.Window()
	s.maxWindow = max(s.maxWindow, cwnd)
	if s.probes == 0 {
		if s.bytes+pktSize > cwnd {
			return out
		}
		if next := s.pacer.NextSend(now, cwnd, s.rtt, pktSize); next.After(now) {
			s.nextPace = next
			return out
		}
	} else {
		s.probes--
	}
	seq := len(s.pkts)
	s.pkts = append(s.pkts, sentPkt{at: now})
	s.bytes += pktSize
	s.lastSent = now
	s.cc.OnSent(now, pktSize, s.bytes)
	s.pacer.OnSent(now, pktSize, cwnd, s.rtt)
	// One packet per call, and the simulator copies before the next one.
	if s.buf == nil {
		s.buf = make([]byte, pktSize)
	}
	b := s.buf
	b[0] = s.id
	binary.BigEndian.PutUint64(b[1:], uint64(seq))
	return append(out, netsim.Datagram{To: to, Data: b})
}

func (s *simSender) deadline() time.Time {
	var d time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	if len(s.pkts) == 0 {
		consider(s.start)
	}
	consider(s.lossTime)
	consider(s.ptoDeadline())
	consider(s.nextPace)
	return d
}

type simReceiver struct {
	ranges  [][2]int // ascending, disjoint
	buckets []int64  // unique bytes received per bucket
	total   int64
	dups    int
}

func (r *simReceiver) onData(now time.Time, data []byte) []byte {
	seq := int(binary.BigEndian.Uint64(data[1:]))
	if r.insert(seq) {
		b := int(now.Sub(netsim.Epoch) / bucket)
		for len(r.buckets) <= b {
			r.buckets = append(r.buckets, 0)
		}
		r.buckets[b] += int64(len(data))
		r.total += int64(len(data))
	} else {
		r.dups++
	}
	n := min(len(r.ranges), maxRanges)
	ack := make([]byte, 10+16*n)
	ack[0] = data[0]
	binary.BigEndian.PutUint64(ack[1:], uint64(r.ranges[len(r.ranges)-1][1]))
	ack[9] = byte(n)
	for i := 0; i < n; i++ {
		rg := r.ranges[len(r.ranges)-1-i]
		binary.BigEndian.PutUint64(ack[10+16*i:], uint64(rg[1]))
		binary.BigEndian.PutUint64(ack[18+16*i:], uint64(rg[0]))
	}
	return ack
}

// insert adds seq to the ranges, reporting whether it is new. Only the
// highest 2*maxRanges ranges are kept: the sender has long declared older
// holes lost.
func (r *simReceiver) insert(seq int) bool {
	i := len(r.ranges)
	for i > 0 && r.ranges[i-1][0] > seq {
		i--
	}
	// ranges[i-1] starts at or below seq.
	if i > 0 && seq <= r.ranges[i-1][1] {
		return false
	}
	switch {
	case i > 0 && r.ranges[i-1][1] == seq-1 && i < len(r.ranges) && r.ranges[i][0] == seq+1:
		r.ranges[i-1][1] = r.ranges[i][1]
		r.ranges = append(r.ranges[:i], r.ranges[i+1:]...)
	case i > 0 && r.ranges[i-1][1] == seq-1:
		r.ranges[i-1][1] = seq
	case i < len(r.ranges) && r.ranges[i][0] == seq+1:
		r.ranges[i][0] = seq
	default:
		r.ranges = append(r.ranges, [2]int{})
		copy(r.ranges[i+1:], r.ranges[i:])
		r.ranges[i] = [2]int{seq, seq}
	}
	if len(r.ranges) > 2*maxRanges {
		r.ranges = append(r.ranges[:0], r.ranges[len(r.ranges)-maxRanges:]...)
	}
	return true
}

// senderHost multiplexes flows on one address (so they share the link).
type senderHost struct {
	to    netsim.Addr
	flows []*simSender
	rr    int
}

func (h *senderHost) Receive(now time.Time, d netsim.Datagram) {
	h.flows[d.Data[0]].onAck(now, d.Data)
}

func (h *senderHost) Transmit(now time.Time, out []netsim.Datagram) []netsim.Datagram {
	n := len(h.flows)
	for i := 0; i < n; i++ {
		f := h.flows[(h.rr+i)%n]
		if o := f.transmit(now, out, h.to); len(o) > len(out) {
			h.rr = (h.rr + i + 1) % n
			return o
		}
	}
	return out
}

func (h *senderHost) Deadline() time.Time {
	var d time.Time
	for _, f := range h.flows {
		if t := f.deadline(); !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	return d
}

type receiverHost struct {
	to      netsim.Addr
	flows   []*simReceiver
	pending []netsim.Datagram
}

func (h *receiverHost) Receive(now time.Time, d netsim.Datagram) {
	ack := h.flows[d.Data[0]].onData(now, d.Data)
	h.pending = append(h.pending, netsim.Datagram{To: d.From, Data: ack})
}

func (h *receiverHost) Transmit(now time.Time, out []netsim.Datagram) []netsim.Datagram {
	out = append(out, h.pending...)
	h.pending = h.pending[:0]
	return out
}

func (h *receiverHost) Deadline() time.Time { return time.Time{} }

type scenario struct {
	bandwidth int64
	rtt       time.Duration
	queue     int // bytes; 0: one BDP
	starts    []time.Duration
	newCC     func() cc.Controller
	loss      float64
}

type result struct {
	sim       *netsim.Sim
	senders   []*simSender
	receivers []*simReceiver
	sc        scenario
}

func run(sc scenario, dur time.Duration, seed uint64) *result {
	a := netip.MustParseAddrPort("192.0.2.1:1")
	b := netip.MustParseAddrPort("192.0.2.2:2")
	sim := netsim.New(seed)
	bdp := int(sc.bandwidth / 8 * int64(sc.rtt) / int64(time.Second))
	if sc.queue == 0 {
		sc.queue = bdp
	}
	sh := &senderHost{to: b}
	rh := &receiverHost{to: a}
	res := &result{sim: sim, sc: sc}
	for i, st := range sc.starts {
		s := newSender(byte(i), netsim.Epoch.Add(st), sc.newCC())
		sh.flows = append(sh.flows, s)
		r := &simReceiver{}
		rh.flows = append(rh.flows, r)
		res.senders = append(res.senders, s)
		res.receivers = append(res.receivers, r)
	}
	sim.Add(a, sh)
	sim.Add(b, rh)
	sim.Connect(a, b,
		netsim.LinkConfig{Delay: sc.rtt / 2, Bandwidth: sc.bandwidth, QueueBytes: sc.queue, Loss: sc.loss},
		netsim.LinkConfig{Delay: sc.rtt / 2})
	sim.RunFor(dur)
	return res
}

// rate is flow i's goodput over [from, to) as a fraction of the bottleneck.
func (r *result) rate(i int, from, to time.Duration) float64 {
	var sum int64
	bs := r.receivers[i].buckets
	for k := int(from / bucket); k < int(to/bucket) && k < len(bs); k++ {
		sum += bs[k]
	}
	return float64(sum*8) / (float64(r.sc.bandwidth) * (to - from).Seconds())
}

// timeTo reports when flow i's goodput over a 100 ms window first reached
// frac of the bottleneck (end of the window), or -1.
func (r *result) timeTo(i int, frac float64) time.Duration {
	const win = 100 * time.Millisecond
	for t := time.Duration(0); t+win <= time.Duration(len(r.receivers[i].buckets))*bucket; t += bucket {
		if r.rate(i, t, t+win) >= frac {
			return t + win
		}
	}
	return -1
}

func jain(xs ...float64) float64 {
	var s, s2 float64
	for _, x := range xs {
		s += x
		s2 += x * x
	}
	return s * s / (float64(len(xs)) * s2)
}

// profile renders a goodput profile: utilization per step.
func (r *result) profile(i int, step, end time.Duration) string {
	var b strings.Builder
	for t := time.Duration(0); t < end; t += step {
		fmt.Fprintf(&b, " %.0f", 100*r.rate(i, t, t+step))
	}
	return b.String()
}

var path100M = scenario{bandwidth: 100e6, rtt: 20 * time.Millisecond}

func TestSimOneFlowCubic(t *testing.T) {
	sc := path100M
	sc.starts = []time.Duration{0}
	sc.newCC = func() cc.Controller { return cc.NewCubic(pktSize) }
	r := run(sc, 10*time.Second, 1)
	t85 := r.timeTo(0, 0.85)
	u03 := r.rate(0, 0, 3*time.Second)
	u13 := r.rate(0, time.Second, 3*time.Second)
	u110 := r.rate(0, time.Second, 10*time.Second)
	s := r.senders[0]
	st := r.sim.Stats(netip.MustParseAddrPort("192.0.2.1:1"), netip.MustParseAddrPort("192.0.2.2:2"))
	t.Logf("cubic 100 Mbit/s 20 ms, queue 1 BDP: 85%% at %v; utilization 0-3s %.1f%%, 1-3s %.1f%%, 1-10s %.1f%%; "+
		"lost %d pkts (queue drops %d), congestion events %d, max window %d B, srtt %v, slow start exit %v",
		t85, 100*u03, 100*u13, 100*u110, s.lostPkts, st.QueueDrops, s.congEvts, s.maxWindow, s.rtt.Smoothed,
		s.cc.(*cc.Cubic).SlowStartExit())
	t.Logf("utilization per 100 ms, first 3 s:%s", r.profile(0, 100*time.Millisecond, 3*time.Second))
	if t85 < 0 || t85 > 3*time.Second {
		t.Fatalf("85%% of the bottleneck reached at %v, want within 3s", t85)
	}
	if u13 < 0.85 || u110 < 0.85 {
		t.Fatalf("utilization 1-3s %.3f, 1-10s %.3f: want >= 0.85 sustained", u13, u110)
	}
}

func TestSimOneFlowNewReno(t *testing.T) {
	sc := path100M
	sc.starts = []time.Duration{0}
	sc.newCC = func() cc.Controller { return cc.NewNewReno(pktSize) }
	r := run(sc, 10*time.Second, 1)
	t85 := r.timeTo(0, 0.85)
	u := r.rate(0, time.Second, 10*time.Second)
	t.Logf("newreno: 85%% at %v; utilization 1-10s %.1f%%", t85, 100*u)
	if t85 < 0 || t85 > 3*time.Second || u < 0.85 {
		t.Fatalf("newreno: 85%% at %v, utilization %.3f", t85, u)
	}
}

func TestSimTwoFlowsFair(t *testing.T) {
	for _, tc := range []struct {
		name     string
		starts   []time.Duration
		from, to time.Duration
	}{
		{"together", []time.Duration{0, 0}, 2 * time.Second, 20 * time.Second},
		{"second-at-2s", []time.Duration{0, 2 * time.Second}, 10 * time.Second, 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := path100M
			sc.starts = tc.starts
			sc.newCC = func() cc.Controller { return cc.NewCubic(pktSize) }
			r := run(sc, tc.to, 1)
			x0, x1 := r.rate(0, tc.from, tc.to), r.rate(1, tc.from, tc.to)
			j := jain(x0, x1)
			t.Logf("%s: flows %.1f%% + %.1f%% = %.1f%% of the bottleneck over %v-%v, Jain index %.3f",
				tc.name, 100*x0, 100*x1, 100*(x0+x1), tc.from, tc.to, j)
			step := time.Second
			t.Logf("per second, flow 0:%s", r.profile(0, step, tc.to))
			t.Logf("per second, flow 1:%s", r.profile(1, step, tc.to))
			if j < 0.9 {
				t.Fatalf("Jain index %.3f < 0.9", j)
			}
			if x0+x1 < 0.85 {
				t.Fatalf("aggregate utilization %.3f", x0+x1)
			}
		})
	}
}

func TestSimRandomLoss(t *testing.T) {
	// 1% random loss: CUBIC keeps going (no collapse, no stall).
	sc := path100M
	sc.starts = []time.Duration{0}
	sc.loss = 0.01
	sc.newCC = func() cc.Controller { return cc.NewCubic(pktSize) }
	r := run(sc, 5*time.Second, 3)
	u := r.rate(0, time.Second, 5*time.Second)
	t.Logf("1%% random loss: utilization 1-5s %.1f%%, congestion events %d", 100*u, r.senders[0].congEvts)
	if u < 0.05 || math.IsNaN(u) {
		t.Fatalf("utilization %.3f under 1%% loss", u)
	}
}

func TestSimDeterministic(t *testing.T) {
	sc := path100M
	sc.starts = []time.Duration{0, 500 * time.Millisecond}
	sc.loss = 0.001
	sc.newCC = func() cc.Controller { return cc.NewCubic(pktSize) }
	a := run(sc, 2*time.Second, 9)
	b := run(sc, 2*time.Second, 9)
	for i := range a.receivers {
		if a.receivers[i].total != b.receivers[i].total || a.senders[i].lostPkts != b.senders[i].lostPkts {
			t.Fatalf("flow %d differs between identical runs", i)
		}
	}
}
