//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Meta describes the run for the report header.
type Meta struct {
	Mode    string
	Command string
	Machine string
	Started string
	Seconds float64
}

// writeJSON writes compare.json: the rows, as a JSON list.
func writeJSON(dir string, rows []Row) error {
	b, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "compare.json"), append(b, '\n'), 0o644)
}

type rowKey struct {
	system, workload string
	payload          int
}

func index(rows []Row) map[rowKey]Row {
	m := map[rowKey]Row{}
	for _, r := range rows {
		m[rowKey{r.System, r.Workload, r.Payload}] = r
	}
	return m
}

func num(v *float64) string {
	if v == nil {
		return "–"
	}
	x := *v
	switch {
	case x == 0:
		return "0"
	case x >= 1e6:
		return fmt.Sprintf("%.2fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.0fk", x/1e3)
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	}
	return fmt.Sprintf("%.2f", x)
}

// ratio formats v/base as "1.23×".
func ratio(v, base *float64) string {
	if v == nil || base == nil || *base == 0 {
		return "–"
	}
	r := *v / *base
	if r >= 10 {
		return fmt.Sprintf("%.0f×", r)
	}
	return fmt.Sprintf("%.2f×", r)
}

func systemsIn(rows []Row) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range rows {
		if !seen[r.System] {
			seen[r.System] = true
			out = append(out, r.System)
		}
	}
	return out
}

// markdown renders compare.md.
func markdown(meta Meta, res *Results, cfg Config, plots []string) string {
	rows := res.Rows
	ix := index(rows)
	systems := systemsIn(rows)
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("# MXP comparison (%s mode)\n\n", meta.Mode)
	p("Run %s, %.0f s, on %s.\n\n`%s`\n\n", meta.Started, meta.Seconds, meta.Machine, meta.Command)
	p("All systems run in one process on 127.0.0.1. \"×udp\" is the value divided by raw UDP's for the same workload and payload: ")
	p("for latency and setup lower is better, for req/s and tokens/s higher is better. ")
	p("CPU µs/req is the whole process's (client and server) user+system CPU time from getrusage over the measured window, divided by the calls completed; csw is the process's context switches (voluntary and involuntary) per call, a count of thread wake-ups.\n\n")

	summary := 1024
	p("## Summary at %d B\n\n", summary)
	p("| system | p50 µs | ×udp | req/s 1 conn | ×udp | req/s 8 conn | ×udp | setup µs | ×udp | tokens/s | ×udp |\n")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, s := range systems {
		if _, skipped := ix[rowKey{s, WSkipped, 0}]; skipped {
			continue
		}
		l, lu := ix[rowKey{s, WLatency, summary}], ix[rowKey{"udp", WLatency, summary}]
		c1, c1u := ix[rowKey{s, WConc(1), summary}], ix[rowKey{"udp", WConc(1), summary}]
		c8, c8u := ix[rowKey{s, WConc(8), summary}], ix[rowKey{"udp", WConc(8), summary}]
		st, stu := ix[rowKey{s, WSetup, 64}], ix[rowKey{"udp", WSetup, 64}]
		tk, tku := ix[rowKey{s, WStream, TokenSize}], ix[rowKey{"udp", WStream, TokenSize}]
		p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", s,
			num(l.P50us), ratio(l.P50us, lu.P50us),
			num(c1.ReqPerS), ratio(c1.ReqPerS, c1u.ReqPerS),
			num(c8.ReqPerS), ratio(c8.ReqPerS, c8u.ReqPerS),
			num(st.SetupUs), ratio(st.SetupUs, stu.SetupUs),
			num(tk.TokensPerS), ratio(tk.TokensPerS, tku.TokensPerS))
	}

	p("\n## Sequential latency (one connection, one caller)\n\n")
	p("| system | payload B | samples | p50 µs | p99 µs | p99.9 µs | p50 ×udp | p99 ×udp | CPU µs/call | csw/call | note |\n")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, pl := range cfg.LatencyPayloads {
		u := ix[rowKey{"udp", WLatency, pl}]
		for _, s := range systems {
			r, ok := ix[rowKey{s, WLatency, pl}]
			if !ok {
				continue
			}
			p("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s |\n", s, pl, r.Count,
				num(r.P50us), num(r.P99us), num(r.P999us),
				ratio(r.P50us, u.P50us), ratio(r.P99us, u.P99us), num(r.CPUusPerReq), num(r.CswPerReq), note(r))
		}
	}

	p("\n## %d concurrent callers\n\n", cfg.Callers)
	p("| system | payload B | conns | req/s | ×udp | CPU µs/req | csw/req | p50 µs | p99 µs | p99.9 µs | calls | note |\n")
	p("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
	for _, pl := range cfg.TputPayloads {
		for _, n := range cfg.Conns {
			u := ix[rowKey{"udp", WConc(n), pl}]
			for _, s := range systems {
				r, ok := ix[rowKey{s, WConc(n), pl}]
				if !ok {
					continue
				}
				p("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %d | %s |\n", s, pl, n,
					num(r.ReqPerS), ratio(r.ReqPerS, u.ReqPerS), num(r.CPUusPerReq), num(r.CswPerReq),
					num(r.P50us), num(r.P99us), num(r.P999us), r.Count, note(r))
			}
		}
	}

	p("\n## Connection setup to first 64 B response (median)\n\n")
	p("| system | setup µs | ×udp | samples | note |\n|---|--:|--:|--:|---|\n")
	u := ix[rowKey{"udp", WSetup, 64}]
	for _, s := range systems {
		if r, ok := ix[rowKey{s, WSetup, 64}]; ok {
			p("| %s | %s | %s | %d | %s |\n", s, num(r.SetupUs), ratio(r.SetupUs, u.SetupUs), r.Count, note(r))
		}
	}

	p("\n## Connection setup resuming the session of the connection before (median)\n\n")
	p("TLS systems resume with a session ticket (TLS 1.3 PSK with a fresh ECDHE: no certificate signature or chain check); MXP resumes with its ticket and sends the first call as 0-RTT data (`mesh.WithZeroRTT`), which the peer answers right behind its handshake reply. Both still run a full key exchange. The note says how many samples did resume.\n\n")
	p("| system | setup µs | ×udp | samples | note |\n|---|--:|--:|--:|---|\n")
	for _, s := range systems {
		if r, ok := ix[rowKey{s, WSetupResumed, 64}]; ok {
			p("| %s | %s | %s | %d | %s |\n", s, num(r.SetupUs), ratio(r.SetupUs, u.SetupUs), r.Count, note(r))
		}
	}

	p("\n## Token stream (%d tokens of %d B, one stream)\n\n", cfg.Tokens, TokenSize)
	p("| system | tokens/s | ×udp | tokens | note |\n|---|--:|--:|--:|---|\n")
	u = ix[rowKey{"udp", WStream, TokenSize}]
	for _, s := range systems {
		if r, ok := ix[rowKey{s, WStream, TokenSize}]; ok {
			p("| %s | %s | %s | %d | %s |\n", s, num(r.TokensPerS), ratio(r.TokensPerS, u.TokensPerS), r.Count, note(r))
		}
	}

	targets(p, ix, systems)

	var skipped []Row
	for _, r := range rows {
		if r.Workload == WSkipped {
			skipped = append(skipped, r)
		}
	}
	if len(skipped) > 0 {
		p("\n## Skipped\n\n")
		for _, r := range skipped {
			p("- %s: %s\n", r.System, r.Note)
		}
	}
	if len(plots) > 0 {
		p("\n## Plots\n\n")
		for _, f := range plots {
			p("![%s](%s)\n\n", strings.TrimSuffix(f, ".svg"), f)
		}
	}
	return b.String()
}

func note(r Row) string {
	s := r.Note
	if r.Errors > 0 && !strings.Contains(s, "error") {
		s = strings.TrimSpace(fmt.Sprintf("%d errors %s", r.Errors, s))
	}
	return strings.ReplaceAll(s, "|", "/")
}

// A target is one of the issues' goals for MXP: a ratio to a peer, or a
// value of its own.
type target struct {
	what     string
	workload string   // row workload
	payload  int      // row payload
	peers    []string // the best of these is the reference (none: abs is)
	factor   float64  // MXP must be factor× better than the best peer
	lower    bool     // lower values are better (latency, setup)
	abs      float64  // with no peers: the value to reach
}

// runtimeTargets are issue 8's: p50 against raw UDP in the same run, and
// two absolute rates.
var runtimeTargets = []target{
	{what: "p50, ≤ 1.3× raw UDP", workload: WLatency, payload: 1024, peers: []string{"udp"}, factor: 1 / 1.3, lower: true},
	{what: "req/s, 64 callers, 1 conn, ≥ 300k", workload: WConc(1), payload: 1024, abs: 300e3},
	{what: "tokens/s, one stream, ≥ 3M", workload: WStream, payload: TokenSize, abs: 3e6},
}

var issueTargets = []target{
	{"req/s, 1 conn, ≥ 3× quic-go", WConc(1), 1024, []string{"quic-stream", "quic-long", "quic-dgram"}, 3, false, 0},
	{"req/s, 1 conn, ≥ 2× gRPC bidi", WConc(1), 1024, []string{"grpc-tls-bidi"}, 2, false, 0},
	{"req/s, 1 conn, ≥ 1.5× NATS", WConc(1), 1024, []string{"nats"}, 1.5, false, 0},
	{"p50, ≤ quic-go / 3", WLatency, 1024, []string{"quic-stream", "quic-long", "quic-dgram"}, 3, true, 0},
	{"p50, ≤ gRPC bidi / 2", WLatency, 1024, []string{"grpc-tls-bidi"}, 2, true, 0},
	{"p50, ≤ NATS / 1.5", WLatency, 1024, []string{"nats"}, 1.5, true, 0},
	{"setup, ≤ 0.2× gRPC-TLS", WSetup, 64, []string{"grpc-tls"}, 5, true, 0},
	// Not in the issue: the same bound with both sides resuming.
	{"setup resumed, ≤ 0.2× gRPC-TLS resumed", WSetupResumed, 64, []string{"grpc-tls"}, 5, true, 0},
}

func metric(r Row, workload string) *float64 {
	switch workload {
	case WLatency:
		return r.P50us
	case WSetup, WSetupResumed:
		return r.SetupUs
	case WStream:
		return r.TokensPerS
	}
	return r.ReqPerS
}

// targets writes the issue-8 and issue-9 checks: each MXP system against
// each goal.
func targets(p func(string, ...any), ix map[rowKey]Row, systems []string) {
	var mxp []string
	for _, s := range systems {
		if strings.HasPrefix(s, "mxp-") {
			if _, skipped := ix[rowKey{s, WSkipped, 0}]; !skipped {
				mxp = append(mxp, s)
			}
		}
	}
	if len(mxp) == 0 {
		return
	}
	targetTable(p, ix, mxp, "the issue-8 targets (1 KiB; tokens 16 B)", "reference", runtimeTargets)
	targetTable(p, ix, mxp, "the issue-9 targets (1 KiB; setup 64 B)", "best peer", issueTargets)
}

func targetTable(p func(string, ...any), ix map[rowKey]Row, mxp []string, title, refColumn string, goals []target) {
	p("\n## MXP against %s\n\n", title)
	p("| target | %s | needed |", refColumn)
	for _, s := range mxp {
		p(" %s |", s)
	}
	p("\n|---|---|--:|")
	for range mxp {
		p("--:|")
	}
	p("\n")
	for _, t := range goals {
		var best *float64
		bestName := ""
		for _, peer := range t.peers {
			v := metric(ix[rowKey{peer, t.workload, t.payload}], t.workload)
			if v != nil && (best == nil || (t.lower && *v < *best) || (!t.lower && *v > *best)) {
				best, bestName = v, peer
			}
		}
		var need float64
		ref := "–"
		switch {
		case len(t.peers) == 0:
			need = t.abs
		case best == nil:
			continue
		case t.lower:
			need, ref = *best/t.factor, bestName+" "+num(best)
		default:
			need, ref = *best*t.factor, bestName+" "+num(best)
		}
		sign := "≥"
		if t.lower {
			sign = "≤"
		}
		p("| %s | %s | %s %s |", t.what, ref, sign, num(f64(need)))
		for _, s := range mxp {
			v := metric(ix[rowKey{s, t.workload, t.payload}], t.workload)
			switch {
			case v == nil:
				p(" – |")
			case (t.lower && *v <= need) || (!t.lower && *v >= need):
				p(" %s ✓ |", num(v))
			default:
				p(" %s ✗ |", num(v))
			}
		}
		p("\n")
	}
}
