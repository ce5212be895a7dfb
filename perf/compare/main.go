//go:build linux

// Command compare runs the same workloads over MXP and over the systems
// users already run — raw UDP (the floor), HTTP/1.1 with and without TLS,
// gRPC-Go with TLS (unary and bidirectional streaming), NATS request-reply
// and quic-go (stream per call, long-lived stream, datagrams) — all on
// 127.0.0.1 in this one process, and writes compare.json, compare.md and SVG
// plots to --out.
//
//	go run ./perf/compare --quick --out /tmp/cmp    # about 60 s
//	go run ./perf/compare --out /tmp/cmp            # about 8 minutes
//	go run ./perf/compare --systems udp,grpc-tls --quick --out /tmp/cmp
//
// Every loop is bounded by a count and a duration, each system by
// Config.SystemMax and the whole run by --max. docs/performance.md explains
// the numbers.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

func main() {
	quick := flag.Bool("quick", false, "quick mode: smaller counts, 1 KiB throughput only, within 45 s")
	out := flag.String("out", "compare-out", "directory for compare.json, compare.md and the plots")
	systems := flag.String("systems", "", "comma-separated systems to run (default all): "+strings.Join(systemNames(), ","))
	maxRun := flag.Duration("max", 0, "bound on the whole run (default 45s quick, 8m full)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	tokens := flag.Int("tokens", 0, fmt.Sprintf("tokens in the stream workload (default %d quick, %d full)", QuickConfig().Tokens, FullConfig().Tokens))
	flag.Parse()

	cfg, mode := FullConfig(), "full"
	if *quick {
		cfg, mode = QuickConfig(), "quick"
	}
	if *tokens > 0 {
		cfg.Tokens = *tokens
	}
	bound := *maxRun
	if bound == 0 {
		bound = 8 * time.Minute
		if *quick {
			bound = 45 * time.Second
		}
	}
	names, err := selectSystems(*systems)
	if err != nil {
		fatal(err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		fatal(err)
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()

	start := time.Now()
	fmt.Fprintf(os.Stderr, "compare: %s mode, %d systems, bound %v, output %s\n", mode, len(names), bound, *out)
	r := &Runner{Cfg: cfg, Log: os.Stderr}
	res := r.Run(ctx, names)
	meta := Meta{
		Mode:    mode,
		Command: "go run ./perf/compare " + strings.Join(os.Args[1:], " "),
		Machine: machine(),
		Started: start.UTC().Format(time.RFC3339),
		Seconds: time.Since(start).Seconds(),
	}
	if err := writeJSON(*out, res.Rows); err != nil {
		fatal(err)
	}
	plots, err := writePlots(*out, res, cfg)
	if err != nil {
		fatal(err)
	}
	md := markdown(meta, res, cfg, plots)
	if err := os.WriteFile(*out+"/compare.md", []byte(md), 0o644); err != nil {
		fatal(err)
	}
	fmt.Fprintf(os.Stderr, "compare: wrote %s/compare.json, compare.md and %d plots in %.1f s\n", *out, len(plots), meta.Seconds)
}

func machine() string {
	var u syscall.Utsname
	kernel := "unknown kernel"
	if syscall.Uname(&u) == nil {
		var b strings.Builder
		for _, c := range u.Release {
			if c == 0 {
				break
			}
			b.WriteByte(byte(c))
		}
		kernel = "Linux " + b.String()
	}
	return fmt.Sprintf("%d CPUs (GOMAXPROCS %d), %s/%s, %s, %s",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, kernel, runtime.Version())
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "compare:", err)
	os.Exit(1)
}
