//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSmoke runs a few calls, a few concurrent calls, a setup and a short
// stream against every registered system, so CI proves each one works end
// to end. A system that reports ErrUnavailable is skipped with its reason.
func TestSmoke(t *testing.T) {
	for _, name := range systemNames() {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
			defer cancel()
			sys := registry[name]()
			if sys.Name() != name {
				t.Fatalf("registered as %q, names itself %q", name, sys.Name())
			}
			if err := sys.Setup(ctx); err != nil {
				if errors.Is(err, ErrUnavailable) {
					t.Skip(err)
				}
				t.Fatal(err)
			}
			defer func() {
				if err := sys.Teardown(); err != nil {
					t.Error(err)
				}
			}()
			sizes := []int{0, 64, 1024, 16384}
			if l, ok := sys.(Limiter); ok {
				sizes = []int{0, 64, min(1024, l.MaxPayload())}
			}
			c, err := sys.Dial(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range sizes {
				req := payload(n)
				resp, err := c.Call(ctx, req)
				if err != nil || !bytes.Equal(resp, req) {
					t.Fatalf("%d B call: err %v, %d bytes back", n, err, len(resp))
				}
			}
			// 16 callers over 2 connections, 5 calls each.
			c2, err := sys.Dial(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			errs := make(chan error, 16)
			for i := range 16 {
				cl := []Client{c, c2}[i%2]
				wg.Add(1)
				go func() {
					defer wg.Done()
					req := payload(100 + i)
					for range 5 {
						resp, err := cl.Call(ctx, req)
						if err == nil && !bytes.Equal(resp, req) {
							err = errors.New("echo differs")
						}
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal("concurrent call:", err)
			}
			if s, ok := c.(Streamer); ok {
				got, err := s.Stream(ctx, 5000)
				if err != nil || got != 5000 {
					t.Fatalf("stream: %d tokens, %v", got, err)
				}
			}
			c.Close()
			c2.Close()
		})
	}
}

// TestRunWritesReport runs the whole pipeline with tiny counts on the udp
// floor and one unavailable system, and checks the files it writes.
func TestRunWritesReport(t *testing.T) {
	register("test-unavailable", func() System { return fakeUnavailable{} })
	defer delete(registry, "test-unavailable")
	cfg := QuickConfig()
	cfg.LatencySamples, cfg.LatencyMax = 200, 300*time.Millisecond
	cfg.TputDuration, cfg.TputWarmup = 100*time.Millisecond, 20*time.Millisecond
	cfg.SetupSamples, cfg.Tokens = 5, 2000
	r := &Runner{Cfg: cfg}
	res := r.Run(context.Background(), []string{"udp", "test-unavailable"})
	dir := t.TempDir()
	if err := writeJSON(dir, res.Rows); err != nil {
		t.Fatal(err)
	}
	plots, err := writePlots(dir, res, cfg)
	if err != nil {
		t.Fatal(err)
	}
	md := markdown(Meta{Mode: "test"}, res, cfg, plots)
	if err := os.WriteFile(filepath.Join(dir, "compare.md"), []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "compare.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(b, &rows); err != nil {
		t.Fatal(err)
	}
	want := []string{"system", "workload", "payload", "p50_us", "p99_us", "p999_us", "req_per_s", "cpu_us_per_req", "setup_us", "tokens_per_s"}
	seen := map[string]bool{}
	for _, row := range rows {
		for _, k := range want {
			if _, ok := row[k]; !ok {
				t.Fatalf("row %v lacks %q", row, k)
			}
		}
		seen[row["system"].(string)+"/"+row["workload"].(string)] = true
	}
	for _, k := range []string{"udp/latency", "udp/conc-1conn", "udp/conc-8conn", "udp/setup", "udp/stream", "test-unavailable/skipped"} {
		if !seen[k] {
			t.Errorf("no %s row in %s", k, b)
		}
	}
	for _, s := range []string{"| udp | 1024 |", "test-unavailable: skipped", "×udp"} {
		if !strings.Contains(md, s) {
			t.Errorf("compare.md lacks %q:\n%s", s, md)
		}
	}
	for _, f := range plots {
		svg, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || !bytes.HasPrefix(svg, []byte("<svg")) || !bytes.HasSuffix(svg, []byte("</svg>\n")) {
			t.Errorf("plot %s: %v", f, err)
		}
	}
}

type fakeUnavailable struct{}

func (fakeUnavailable) Name() string                { return "test-unavailable" }
func (fakeUnavailable) Setup(context.Context) error { return unavailable("for the test") }
func (fakeUnavailable) Dial(context.Context) (Client, error) {
	return nil, errors.New("unreachable")
}
func (fakeUnavailable) Teardown() error { return nil }

func TestQuantile(t *testing.T) {
	s := make([]float64, 1000)
	for i := range s {
		s[i] = float64(i + 1)
	}
	for q, want := range map[float64]float64{0.5: 500, 0.99: 990, 0.999: 999, 1: 1000, 0: 1} {
		if got := quantile(s, q); got != want {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
}

func TestTargets(t *testing.T) {
	rows := []Row{
		{System: "mxp-portable", Workload: WLatency, Payload: 1024, P50us: f64(5)},
		{System: "mxp-portable", Workload: WConc(1), Payload: 1024, ReqPerS: f64(100)},
		{System: "nats", Workload: WLatency, Payload: 1024, P50us: f64(30)},
		{System: "nats", Workload: WConc(1), Payload: 1024, ReqPerS: f64(80)},
		{System: "quic-long", Workload: WLatency, Payload: 1024, P50us: f64(12)},
		{System: "quic-stream", Workload: WLatency, Payload: 1024, P50us: f64(60)},
		{System: "udp", Workload: WLatency, Payload: 1024, P50us: f64(4)},
		{System: "mxp-portable", Workload: WStream, Payload: TokenSize, TokensPerS: f64(3.5e6)},
	}
	var b strings.Builder
	targets(func(f string, a ...any) { fmt.Fprintf(&b, f, a...) }, index(rows), systemsIn(rows))
	out := b.String()
	for _, want := range []string{
		"| p50, ≤ NATS / 1.5 | nats 30.0 | ≤ 20.0 | 5.00 ✓ |",
		"| req/s, 1 conn, ≥ 1.5× NATS | nats 80.0 | ≥ 120 | 100 ✗ |",
		"| p50, ≤ quic-go / 3 | quic-long 12.0 | ≤ 4.00 | 5.00 ✗ |",
		"| p50, ≤ 1.3× raw UDP | udp 4.00 | ≤ 5.20 | 5.00 ✓ |",
		"| req/s, 64 callers, 1 conn, ≥ 300k | – | ≥ 300k | 100 ✗ |",
		"| tokens/s, one stream, ≥ 3M | – | ≥ 3.00M | 3.50M ✓ |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "gRPC") {
		t.Errorf("a target without a peer row is listed:\n%s", out)
	}
}
