package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/mesh"
	"github.com/mxp-dataplane/mxp/wire"
)

// runDemo starts a node and a small agent team in this process (the
// whitepaper's coordinator + specialists), runs calls, events and a token
// stream through the node over real UDP, prints what it measured, and
// exits 0 — or, with --serve, keeps the mesh up for other agents to join.
func runDemo(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	backend := fs.String("backend", "auto", "dataplane backend: auto, xdp, uring or portable")
	listen := fs.String("listen", "127.0.0.1:0", "the node's UDP address")
	shards := fs.Int("shards", 2, "the node's dataplane shards")
	calls := fs.Int("calls", 2000, "sequential calls for the latency percentiles")
	tokens := fs.Int("tokens", 200000, "tokens in the streamed answer")
	seconds := fs.Duration("load", 2*time.Second, "how long the concurrent-call load runs")
	serve := fs.Bool("serve", false, "keep the mesh up after the demo (Ctrl-C to stop)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mxpd demo [flags]\n\nStarts a node and four agents (a coordinator, a researcher, a writer, and a\ncoordinator that calls directly) in this process, runs calls, events and a\ntoken stream over UDP, and prints latency and throughput. About 5 seconds.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	ap, err := netip.ParseAddrPort(*listen)
	if err != nil {
		fmt.Fprintf(stderr, "mxpd demo: --listen: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := demo(demoConfig{backend: *backend, listen: ap, shards: *shards, calls: *calls, tokens: *tokens, load: *seconds, serve: *serve}, stdout, log); err != nil {
		fmt.Fprintf(stderr, "mxpd demo: %v\n", err)
		return 1
	}
	return 0
}

type demoConfig struct {
	backend string
	listen  netip.AddrPort
	shards  int
	calls   int
	tokens  int
	load    time.Duration
	serve   bool
}

func demo(cfg demoConfig, out io.Writer, log *slog.Logger) error {
	step := func(format string, a ...any) { fmt.Fprintf(out, "  "+format+"\n", a...) }
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return err
	}
	node, err := mesh.StartNode(mesh.NodeConfig{HostConfig: mesh.HostConfig{
		Listen: cfg.listen, Identity: id, Backend: cfg.backend, Shards: cfg.shards,
	}})
	if err != nil {
		return err
	}
	defer node.Close()
	fmt.Fprintf(out, "mxpd demo: a node and four agents, over UDP\n")
	step("node      %s", node.URL())
	step("dataplane %s", node.Backend())

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mk := func(name string, caps ...string) (*mesh.Agent, error) {
		return mesh.NewAgent(mesh.AgentConfig{Name: name, Capabilities: caps, Node: node.URL()})
	}
	direct, err := mesh.NewAgent(mesh.AgentConfig{Name: "coordinator-direct", Node: node.URL(), Direct: true})
	if err != nil {
		return err
	}
	researcher, err := mk("researcher", "research")
	if err != nil {
		return err
	}
	researcher.Handle("research", func(ctx context.Context, req *mesh.Request) ([]byte, error) {
		return append([]byte("findings on "), req.Body...), nil
	})
	researcher.Handle("echo", func(_ context.Context, req *mesh.Request) ([]byte, error) { return req.Body, nil })
	writer, err := mk("writer", "write", "progress")
	if err != nil {
		return err
	}
	var progress atomic.Int64
	writer.OnEvent("progress", func(context.Context, string, []byte) { progress.Add(1) })
	writer.HandleStream("draft", func(ctx context.Context, req *mesh.Request, s *mesh.Stream) error {
		tok := make([]byte, 16)
		for i := range cfg.tokens {
			copy(tok, fmt.Sprintf("token-%010d", i))
			if err := s.Send(tok); err != nil {
				return err
			}
		}
		return nil
	})
	coordinator, err := mk("coordinator", "plan")
	if err != nil {
		return err
	}
	for _, a := range []*mesh.Agent{researcher, writer, coordinator, direct} {
		if err := a.Start(ctx); err != nil {
			return err
		}
		defer a.Close()
	}
	step("agents    %d registered: %s", len(node.Agents()), names(node.Agents()))

	found, err := coordinator.Discover(ctx, "research")
	if err != nil || len(found) != 1 {
		return fmt.Errorf("discover: %v (%d found)", err, len(found))
	}
	res := found[0].ID
	answer, err := coordinator.Call(ctx, res, "research", []byte("agent meshes"))
	if err != nil {
		return err
	}
	step("call      coordinator -> researcher: %q", answer)

	// Sequential latency, 1 KiB each way: through the node, and direct.
	payload := make([]byte, 1024)
	if _, err := direct.Discover(ctx, "research"); err != nil {
		return err
	}
	for _, path := range []struct {
		name string
		a    *mesh.Agent
	}{{"through the node", coordinator}, {"direct (agent to agent)", direct}} {
		lat := make([]time.Duration, 0, cfg.calls)
		for range cfg.calls {
			t0 := time.Now()
			if _, err := path.a.Call(ctx, res, "echo", payload); err != nil {
				return err
			}
			lat = append(lat, time.Since(t0))
		}
		slices.Sort(lat)
		pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
		step("latency   %d sequential 1 KiB calls %s: p50 %v, p90 %v, p99 %v", cfg.calls, path.name,
			pct(0.50).Round(time.Microsecond), pct(0.90).Round(time.Microsecond), pct(0.99).Round(time.Microsecond))
	}

	// Throughput: 64 concurrent callers on the coordinator's one connection.
	var done atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(cfg.load)
	t0 := time.Now()
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if _, err := coordinator.Call(ctx, res, "echo", payload); err != nil {
					log.Warn("call failed", "err", err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	rate := float64(done.Load()) / time.Since(t0).Seconds()
	step("load      64 concurrent callers, 1 KiB calls: %.0f calls/s", rate)

	for i := range 100 {
		if err := coordinator.Emit(ctx, "progress", []byte(fmt.Sprint(i))); err != nil {
			return err
		}
	}
	for deadline := time.Now().Add(5 * time.Second); progress.Load() < 100 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	step("events    %d of 100 progress events delivered to the writer", progress.Load())

	t0 = time.Now()
	s, err := coordinator.OpenStream(ctx, writer.ID(), "draft", []byte("write the summary"))
	if err != nil {
		return err
	}
	n := 0
	for {
		if _, err := s.Recv(); err != nil {
			if err != io.EOF {
				return err
			}
			break
		}
		n++
	}
	s.CloseSend()
	el := time.Since(t0)
	step("stream    %d 16-byte tokens in %v: %.0f tokens/s", n, el.Round(time.Millisecond), float64(n)/el.Seconds())
	if n != cfg.tokens || progress.Load() != 100 {
		return fmt.Errorf("incomplete: %d tokens, %d events", n, progress.Load())
	}
	st := node.Stats()
	step("node      routed %d messages; %d not found, %d timed out, %d dropped",
		st.Routed.Load(), st.NotFound.Load(), st.TimedOut.Load(), st.Dropped.Load())
	fmt.Fprintln(out, "demo passed")
	if cfg.serve {
		fmt.Fprintf(out, "serving: agents can join at %s (Ctrl-C to stop)\n", node.URL())
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, os.Interrupt)
		<-sig
	}
	return nil
}

func names(rs []wire.AgentRecord) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.Name)
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}
