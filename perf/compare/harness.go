//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config sizes every workload. Each loop is bounded twice: by a count and by
// a duration, whichever comes first.
type Config struct {
	LatencyPayloads []int         // payloads for the sequential latency workload
	LatencySamples  int           // calls measured per payload
	LatencyMax      time.Duration // time bound per payload
	TputPayloads    []int         // payloads for the concurrency workloads
	Callers         int           // concurrent callers
	Conns           []int         // connection counts the callers share
	TputWarmup      time.Duration
	TputDuration    time.Duration
	TputMaxCalls    int64
	TputReps        int // repetitions; the row is the median one by req/s
	SetupSamples    int
	SetupMax        time.Duration
	Tokens          int
	StreamMax       time.Duration
	CallTimeout     time.Duration // bound on any single call
	SystemMax       time.Duration // bound on one system's whole run
}

// QuickConfig fits every system in well under 60 s on two cores.
func QuickConfig() Config {
	return Config{
		LatencyPayloads: []int{64, 1024, 16384},
		LatencySamples:  2000,
		LatencyMax:      300 * time.Millisecond,
		TputPayloads:    []int{1024},
		Callers:         64,
		Conns:           []int{1, 8},
		TputWarmup:      100 * time.Millisecond,
		TputDuration:    400 * time.Millisecond,
		TputMaxCalls:    2_000_000,
		TputReps:        1,
		SetupSamples:    50,
		SetupMax:        300 * time.Millisecond,
		Tokens:          100_000,
		StreamMax:       time.Second,
		CallTimeout:     2 * time.Second,
		SystemMax:       10 * time.Second,
	}
}

// FullConfig fits every system in about 6 minutes (8 at most).
func FullConfig() Config {
	return Config{
		LatencyPayloads: []int{64, 1024, 16384},
		LatencySamples:  20000,
		LatencyMax:      2 * time.Second,
		TputPayloads:    []int{64, 1024, 16384},
		Callers:         64,
		Conns:           []int{1, 8},
		TputWarmup:      200 * time.Millisecond,
		TputDuration:    800 * time.Millisecond,
		TputMaxCalls:    20_000_000,
		TputReps:        3,
		SetupSamples:    200,
		SetupMax:        4 * time.Second,
		Tokens:          1_000_000,
		StreamMax:       8 * time.Second,
		CallTimeout:     3 * time.Second,
		SystemMax:       50 * time.Second,
	}
}

// Row is one line of compare.json. Fields that do not apply to a workload
// are null.
type Row struct {
	System      string   `json:"system"`
	Workload    string   `json:"workload"`
	Payload     int      `json:"payload"`
	P50us       *float64 `json:"p50_us"`
	P99us       *float64 `json:"p99_us"`
	P999us      *float64 `json:"p999_us"`
	ReqPerS     *float64 `json:"req_per_s"`
	CPUusPerReq *float64 `json:"cpu_us_per_req"`
	SetupUs     *float64 `json:"setup_us"`
	TokensPerS  *float64 `json:"tokens_per_s"`
	CswPerReq   *float64 `json:"csw_per_req,omitempty"` // context switches (voluntary+involuntary) per call, from getrusage
	Count       int64    `json:"count,omitempty"`       // samples, calls or tokens measured
	Errors      int64    `json:"errors,omitempty"`      // failed calls
	Note        string   `json:"note,omitempty"`        // why a row is partial or skipped
}

// Workload names as they appear in rows.
const (
	WLatency = "latency"
	WSetup   = "setup"
	// WSetupResumed is setup with a session resumed from the connection
	// before (Resumer).
	WSetupResumed = "setup-resumed"
	WStream       = "stream"
	WSkipped      = "skipped"
)

// WConc names the concurrency workload over conns connections.
func WConc(conns int) string { return fmt.Sprintf("conc-%dconn", conns) }

func f64(v float64) *float64 { return &v }

// Results is everything one run produced.
type Results struct {
	Rows []Row
	// Latency holds the sorted sequential-latency samples in µs, by system
	// and payload, for the CDF plots.
	Latency map[string]map[int][]float64
}

// Runner runs workloads and logs progress.
type Runner struct {
	Cfg Config
	Log io.Writer
}

func (r *Runner) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, format+"\n", args...)
	}
}

// Run measures each named system in turn.
func (r *Runner) Run(ctx context.Context, names []string) *Results {
	res := &Results{Latency: map[string]map[int][]float64{}}
	for _, name := range names {
		if ctx.Err() != nil {
			res.Rows = append(res.Rows, Row{System: name, Workload: WSkipped, Note: "run deadline reached"})
			continue
		}
		start := time.Now()
		rows, lat := r.RunSystem(ctx, name)
		res.Rows = append(res.Rows, rows...)
		if lat != nil {
			res.Latency[name] = lat
		}
		r.logf("%-20s done in %.1fs", name, time.Since(start).Seconds())
	}
	return res
}

// RunSystem runs every workload against one system.
func (r *Runner) RunSystem(parent context.Context, name string) ([]Row, map[int][]float64) {
	cfg := r.Cfg
	ctx, cancel := context.WithTimeout(parent, cfg.SystemMax)
	defer cancel()
	sys := registry[name]()
	if err := sys.Setup(ctx); err != nil {
		note := "setup failed: " + err.Error()
		if errors.Is(err, ErrUnavailable) {
			note = "skipped: " + err.Error()
		}
		r.logf("%-20s %s", name, note)
		return []Row{{System: name, Workload: WSkipped, Note: note}}, nil
	}
	defer func() {
		if err := sys.Teardown(); err != nil {
			r.logf("%-20s teardown: %v", name, err)
		}
	}()
	maxPayload := 1 << 30
	if l, ok := sys.(Limiter); ok {
		maxPayload = l.MaxPayload()
	}
	var rows []Row
	lat := map[int][]float64{}
	for _, p := range cfg.LatencyPayloads {
		if p > maxPayload {
			rows = append(rows, Row{System: name, Workload: WLatency, Payload: p,
				Note: fmt.Sprintf("skipped: payload above the system's limit of %d B", maxPayload)})
			continue
		}
		row, samples := r.latency(ctx, sys, p)
		rows = append(rows, row)
		if samples != nil {
			lat[p] = samples
		}
		r.logf("%-20s %s", name, describe(row))
	}
	for _, p := range cfg.TputPayloads {
		for _, n := range cfg.Conns {
			if p > maxPayload {
				rows = append(rows, Row{System: name, Workload: WConc(n), Payload: p,
					Note: fmt.Sprintf("skipped: payload above the system's limit of %d B", maxPayload)})
				continue
			}
			row := r.concurrentReps(ctx, sys, p, n)
			rows = append(rows, row)
			r.logf("%-20s %s", name, describe(row))
		}
	}
	row := r.setup(ctx, sys, WSetup, sys.Dial)
	rows = append(rows, row)
	r.logf("%-20s %s", name, describe(row))
	if rs, ok := sys.(Resumer); ok {
		row := r.setup(ctx, sys, WSetupResumed, rs.DialResumed)
		rows = append(rows, row)
		r.logf("%-20s %s", name, describe(row))
	}
	if row, ok := r.stream(ctx, sys); ok {
		rows = append(rows, row)
		r.logf("%-20s %s", name, describe(row))
	}
	return rows, lat
}

func describe(r Row) string {
	s := fmt.Sprintf("%-12s %6d B", r.Workload, r.Payload)
	if r.P50us != nil {
		s += fmt.Sprintf("  p50 %8.1f µs  p99 %8.1f µs  p99.9 %8.1f µs", *r.P50us, *r.P99us, *r.P999us)
	}
	if r.ReqPerS != nil {
		s += fmt.Sprintf("  %10.0f req/s", *r.ReqPerS)
	}
	if r.CPUusPerReq != nil {
		s += fmt.Sprintf("  %6.1f CPU µs/req  %5.2f csw/req", *r.CPUusPerReq, *r.CswPerReq)
	}
	if r.SetupUs != nil {
		s += fmt.Sprintf("  setup %8.1f µs", *r.SetupUs)
	}
	if r.TokensPerS != nil {
		s += fmt.Sprintf("  %10.0f tokens/s", *r.TokensPerS)
	}
	if r.Errors > 0 {
		s += fmt.Sprintf("  errors %d", r.Errors)
	}
	if r.Note != "" {
		s += "  (" + r.Note + ")"
	}
	return s
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rand.Uint32())
	}
	return b
}

func (r *Runner) call(ctx context.Context, c Client, req []byte) error {
	cctx, cancel := context.WithTimeout(ctx, r.Cfg.CallTimeout)
	defer cancel()
	resp, err := c.Call(cctx, req)
	if err != nil {
		return err
	}
	if len(resp) != len(req) {
		return fmt.Errorf("echo returned %d bytes for %d", len(resp), len(req))
	}
	return nil
}

// latency measures sequential calls over one connection.
func (r *Runner) latency(ctx context.Context, sys System, size int) (Row, []float64) {
	row := Row{System: sys.Name(), Workload: WLatency, Payload: size}
	c, err := sys.Dial(ctx)
	if err != nil {
		row.Note = "dial: " + err.Error()
		return row, nil
	}
	defer c.Close()
	req := payload(size)
	// The first call checks the echo byte for byte and warms the path.
	cctx, cancel := context.WithTimeout(ctx, r.Cfg.CallTimeout)
	resp, err := c.Call(cctx, req)
	cancel()
	if err != nil || !bytes.Equal(resp, req) {
		row.Note = fmt.Sprintf("first call failed (err %v, %d bytes back)", err, len(resp))
		row.Errors = 1
		return row, nil
	}
	for i := 0; i < 100 && ctx.Err() == nil; i++ {
		if r.call(ctx, c, req) != nil {
			row.Errors++
		}
	}
	samples := make([]float64, 0, r.Cfg.LatencySamples)
	deadline := time.Now().Add(r.Cfg.LatencyMax)
	u0 := rusage()
	for len(samples) < r.Cfg.LatencySamples && ctx.Err() == nil {
		t := time.Now()
		if t.After(deadline) {
			break
		}
		err := r.call(ctx, c, req)
		d := time.Since(t)
		if err != nil {
			row.Errors++
			row.Note = "last error: " + err.Error()
			if row.Errors > 100 {
				row.Note = "too many errors: " + err.Error()
				break
			}
			continue
		}
		samples = append(samples, float64(d.Nanoseconds())/1e3)
	}
	u0.perReq(rusage(), int64(len(samples))+row.Errors, &row)
	row.Count = int64(len(samples))
	if len(samples) == 0 {
		if row.Note == "" {
			row.Note = "no samples"
		}
		return row, nil
	}
	sort.Float64s(samples)
	row.P50us = f64(quantile(samples, 0.50))
	row.P99us = f64(quantile(samples, 0.99))
	row.P999us = f64(quantile(samples, 0.999))
	if len(samples) < 1000 {
		row.Note = strings.TrimSpace(fmt.Sprintf("p99.9 from only %d samples; %s", len(samples), row.Note))
		row.Note = strings.TrimSuffix(row.Note, ";")
	}
	return row, samples
}

// quantile returns the q-quantile of sorted samples (nearest rank).
func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// usage is what getrusage(RUSAGE_SELF) says so far: user+system CPU time
// and context switches (voluntary and involuntary).
type usage struct {
	cpu time.Duration
	csw int64
}

func rusage() usage {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return usage{}
	}
	return usage{cpu: time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), csw: ru.Nvcsw + ru.Nivcsw}
}

// perReq sets the row's CPU µs and context switches per call.
func (u usage) perReq(to usage, n int64, row *Row) {
	if n <= 0 {
		return
	}
	row.CPUusPerReq = f64(float64((to.cpu - u.cpu).Nanoseconds()) / 1e3 / float64(n))
	row.CswPerReq = f64(float64(to.csw-u.csw) / float64(n))
}

// concurrentReps repeats the concurrency workload TputReps times (fresh
// connections each time) and keeps the run with the median req/s, noting the
// range, so one burst of load from elsewhere on the machine does not decide
// the row.
func (r *Runner) concurrentReps(ctx context.Context, sys System, size, conns int) Row {
	reps := max(r.Cfg.TputReps, 1)
	var runs []Row
	for i := 0; i < reps && ctx.Err() == nil; i++ {
		row := r.concurrent(ctx, sys, size, conns)
		if row.ReqPerS == nil {
			return row
		}
		runs = append(runs, row)
	}
	if len(runs) == 0 {
		return Row{System: sys.Name(), Workload: WConc(conns), Payload: size, Note: "run deadline reached"}
	}
	sort.Slice(runs, func(i, j int) bool { return *runs[i].ReqPerS < *runs[j].ReqPerS })
	row := runs[len(runs)/2]
	if len(runs) > 1 {
		rng := fmt.Sprintf("median of %d runs (%s–%s req/s)", len(runs), num(runs[0].ReqPerS), num(runs[len(runs)-1].ReqPerS))
		row.Note = strings.TrimSpace(rng + " " + row.Note)
	}
	return row
}

// concurrent runs Callers callers spread over conns connections.
func (r *Runner) concurrent(ctx context.Context, sys System, size, conns int) Row {
	cfg := r.Cfg
	row := Row{System: sys.Name(), Workload: WConc(conns), Payload: size}
	clients := make([]Client, 0, conns)
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range conns {
		c, err := sys.Dial(ctx)
		if err != nil {
			row.Note = "dial: " + err.Error()
			return row
		}
		clients = append(clients, c)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stop atomic.Bool
	var count, errs atomic.Int64
	var lastErr atomic.Value
	var wg sync.WaitGroup
	// Each caller records its calls' latencies while measuring is set.
	var measuring atomic.Bool
	lats := make([][]float64, cfg.Callers)
	for i := range cfg.Callers {
		c := clients[i%conns]
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := payload(size)
			for !stop.Load() && wctx.Err() == nil {
				t := time.Now()
				err := r.call(wctx, c, req)
				if err == nil && measuring.Load() && len(lats[i]) < 1<<16 {
					lats[i] = append(lats[i], float64(time.Since(t).Nanoseconds())/1e3)
				}
				if err != nil {
					if wctx.Err() == nil && !stop.Load() {
						errs.Add(1)
						lastErr.Store(err.Error())
					}
					if errs.Load() > 1000 {
						return
					}
					continue
				}
				count.Add(1)
			}
		}()
	}
	sleepCtx(ctx, cfg.TputWarmup)
	measuring.Store(true)
	c0, e0, u0, t0 := count.Load(), errs.Load(), rusage(), time.Now()
	end := t0.Add(cfg.TputDuration)
	for time.Now().Before(end) && ctx.Err() == nil && count.Load()-c0 < cfg.TputMaxCalls && errs.Load() <= 1000 {
		sleepCtx(ctx, 10*time.Millisecond)
	}
	c1, e1, u1, t1 := count.Load(), errs.Load(), rusage(), time.Now()
	measuring.Store(false)
	stop.Store(true)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.CallTimeout + time.Second):
		cancel()
		<-done
	}
	n := c1 - c0
	row.Count, row.Errors = n, e1-e0
	if v := lastErr.Load(); v != nil && row.Errors > 0 {
		row.Note = "last error: " + v.(string)
	}
	if n == 0 {
		if row.Note == "" {
			row.Note = "no calls completed"
		}
		return row
	}
	row.ReqPerS = f64(float64(n) / t1.Sub(t0).Seconds())
	u0.perReq(u1, n, &row)
	var all []float64
	for _, l := range lats {
		all = append(all, l...)
	}
	if len(all) > 0 {
		sort.Float64s(all)
		row.P50us = f64(quantile(all, 0.50))
		row.P99us = f64(quantile(all, 0.99))
		row.P999us = f64(quantile(all, 0.999))
	}
	return row
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// resumedClient is a Client that says whether it resumed a session (a TLS
// resumption, MXP 0-RTT data the peer took).
type resumedClient interface{ Resumed() bool }

// setup measures a fresh connection made by dial up to the first 64-byte
// response. For a resumed setup the connection before each sample (a
// first one, not counted, for the first) leaves the ticket it resumes:
// a resumed connection gets its next ticket with its first response (TLS
// 1.3 servers send tickets with their first flight; MXP sends it with the
// 0.5-RTT answer), the first, full, one may get it later, so the warm-up
// waits a little before it closes.
func (r *Runner) setup(ctx context.Context, sys System, workload string, dial func(context.Context) (Client, error)) Row {
	row := Row{System: sys.Name(), Workload: workload, Payload: 64}
	req := payload(64)
	var samples []float64
	resumed := 0
	if workload == WSetupResumed {
		if c, err := dial(ctx); err == nil {
			_ = r.call(ctx, c, req)
			time.Sleep(time.Millisecond)
			c.Close()
		}
	}
	// The time bound gives way, up to 4× SetupMax, until there are a few
	// samples: a system whose close is slow still gets a median of several.
	start := time.Now()
	minSamples := min(r.Cfg.SetupSamples, 7)
	more := func() bool {
		d := time.Since(start)
		return d < r.Cfg.SetupMax || (len(samples) < minSamples && d < 4*r.Cfg.SetupMax)
	}
	for len(samples) < r.Cfg.SetupSamples && ctx.Err() == nil && more() {
		t := time.Now()
		c, err := dial(ctx)
		if err == nil {
			err = r.call(ctx, c, req)
			d := time.Since(t)
			if rc, ok := c.(resumedClient); ok && workload == WSetupResumed && rc.Resumed() {
				resumed++
			}
			c.Close()
			if err == nil {
				samples = append(samples, float64(d.Nanoseconds())/1e3)
				continue
			}
		}
		row.Errors++
		row.Note = "last error: " + err.Error()
		if row.Errors > 10 {
			break
		}
	}
	row.Count = int64(len(samples))
	if len(samples) == 0 {
		return row
	}
	sort.Float64s(samples)
	row.SetupUs = f64(quantile(samples, 0.5))
	if len(samples) < r.Cfg.SetupSamples && row.Note == "" {
		row.Note = fmt.Sprintf("median of %d (time bound)", len(samples))
	}
	if workload == WSetupResumed {
		row.Note = strings.TrimPrefix(row.Note+fmt.Sprintf("; %d of %d resumed", resumed, len(samples)), "; ")
	}
	return row
}

// stream measures one server-to-client token stream. ok is false when the
// system does not stream.
func (r *Runner) stream(ctx context.Context, sys System) (Row, bool) {
	row := Row{System: sys.Name(), Workload: WStream, Payload: TokenSize}
	c, err := sys.Dial(ctx)
	if err != nil {
		row.Note = "dial: " + err.Error()
		return row, true
	}
	defer c.Close()
	s, ok := c.(Streamer)
	if !ok {
		return row, false
	}
	sctx, cancel := context.WithTimeout(ctx, r.Cfg.StreamMax)
	defer cancel()
	t := time.Now()
	got, err := s.Stream(sctx, r.Cfg.Tokens)
	d := time.Since(t)
	row.Count = int64(got)
	if got > 0 {
		row.TokensPerS = f64(float64(got) / d.Seconds())
	}
	switch {
	case err != nil && got < r.Cfg.Tokens:
		row.Note = fmt.Sprintf("partial: %d of %d tokens (%v)", got, r.Cfg.Tokens, err)
	case got < r.Cfg.Tokens:
		row.Note = fmt.Sprintf("partial: %d of %d tokens", got, r.Cfg.Tokens)
	}
	return row, true
}
