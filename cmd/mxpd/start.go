package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/mesh"
)

// fileConfig is mxpd.toml; flags override it.
type fileConfig struct {
	Listen    string `toml:"listen"`    // UDP address, default 0.0.0.0:9000
	Backend   string `toml:"backend"`   // auto, xdp, uring, portable
	Shards    int    `toml:"shards"`    // 0: one per CPU
	Key       string `toml:"key"`       // the node's private key file (relative to the config)
	Metrics   string `toml:"metrics"`   // HTTP address for /metrics and /debug/pprof; "" = off
	Control   string `toml:"control"`   // the local control socket
	Heartbeat string `toml:"heartbeat"` // expected agent heartbeat interval
	LogLevel  string `toml:"log_level"` // debug, info, warn, error
}

func defaultConfig() fileConfig {
	return fileConfig{Listen: "0.0.0.0:9000", Backend: "auto", Key: "node.key", Metrics: "127.0.0.1:9100",
		Control: defaultControlPath(), Heartbeat: "1s", LogLevel: "info"}
}

func defaultControlPath() string {
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "mxpd.sock")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("mxpd-%d.sock", os.Getuid()))
}

// runInit writes a node key and a config file.
func runInit(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "directory for node.key and mxpd.toml")
	force := fs.Bool("force", false, "overwrite an existing key")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	keyPath := filepath.Join(*dir, "node.key")
	cfgPath := filepath.Join(*dir, "mxpd.toml")
	if _, err := os.Stat(keyPath); err == nil && !*force {
		fmt.Fprintf(stderr, "mxpd init: %s exists (use --force to replace the node's identity)\n", keyPath)
		return 1
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fmt.Fprintf(stderr, "mxpd init: %v\n", err)
		return 1
	}
	id, err := crypto.GenerateIdentity(nil)
	if err == nil {
		err = crypto.SaveIdentity(keyPath, &id)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mxpd init: %v\n", err)
		return 1
	}
	if _, err := os.Stat(cfgPath); err != nil {
		f, err := os.OpenFile(cfgPath, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "mxpd init: %v\n", err)
			return 1
		}
		fmt.Fprintln(f, "# mxpd configuration; command-line flags override these.")
		toml.NewEncoder(f).Encode(defaultConfig())
		f.Close()
	}
	fmt.Fprintf(stdout, "wrote %s (0600) and %s\nnode public key: %s\nagents reach this node at mxp://%s@<host>:9000\n",
		keyPath, cfgPath, id.Public, id.Public)
	return 0
}

// runStart runs the node until SIGINT/SIGTERM.
func runStart(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("start", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "mxpd.toml", "configuration file (missing: defaults)")
	listen := fs.String("listen", "", "UDP address (overrides the config)")
	backend := fs.String("backend", "", "dataplane backend: auto, xdp, uring, portable")
	shards := fs.Int("shards", -1, "dataplane shards (0: one per CPU)")
	keyPath := fs.String("key", "", "the node's private key file")
	metrics := fs.String("metrics", "", `HTTP address for /metrics and /debug/pprof ("off" to disable)`)
	control := fs.String("control", "", "control socket path")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	cfg := defaultConfig()
	base := "."
	if b, err := os.ReadFile(*cfgPath); err == nil {
		if _, err := toml.Decode(string(b), &cfg); err != nil {
			fmt.Fprintf(stderr, "mxpd start: %s: %v\n", *cfgPath, err)
			return 1
		}
		base = filepath.Dir(*cfgPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "mxpd start: %v\n", err)
		return 1
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Listen, *listen)
	set(&cfg.Backend, *backend)
	set(&cfg.Metrics, *metrics)
	set(&cfg.Control, *control)
	if *keyPath != "" {
		cfg.Key, base = *keyPath, "."
	}
	if *shards >= 0 {
		cfg.Shards = *shards
	}
	if cfg.Metrics == "off" {
		cfg.Metrics = ""
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		fmt.Fprintf(stderr, "mxpd start: log_level: %v\n", err)
		return 1
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serveNode(ctx, cfg, base, log, stdout); err != nil {
		log.Error("mxpd stopped", "err", err)
		return 1
	}
	return 0
}

// serveNode runs the node until ctx ends, then drains in-flight calls.
func serveNode(ctx context.Context, cfg fileConfig, base string, log *slog.Logger, stdout io.Writer) error {
	keyFile := cfg.Key
	if !filepath.IsAbs(keyFile) {
		keyFile = filepath.Join(base, keyFile)
	}
	id, err := crypto.LoadIdentity(keyFile)
	if err != nil {
		return fmt.Errorf("node key: %w (run `mxpd init` first)", err)
	}
	ap, err := netip.ParseAddrPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	hb, err := time.ParseDuration(cfg.Heartbeat)
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	if cfg.Shards == 0 {
		cfg.Shards = runtime.NumCPU()
	}
	node, err := mesh.StartNode(mesh.NodeConfig{HostConfig: mesh.HostConfig{Listen: ap, Identity: id, Backend: cfg.Backend, Shards: cfg.Shards}, HeartbeatInterval: hb})
	if err != nil {
		return err
	}
	log.Info(node.Backend())
	log.Info("node started", "addr", node.Addr().String(), "shards", cfg.Shards, "url", node.URL())

	if cfg.Metrics != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(mesh.NewMetrics(node), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		ln, err := net.Listen("tcp", cfg.Metrics)
		if err != nil {
			node.Close()
			return fmt.Errorf("metrics: %w", err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		log.Info("metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	}
	if cfg.Control != "" {
		os.Remove(cfg.Control) // a stale socket of a killed mxpd
		ln, err := net.Listen("unix", cfg.Control)
		if err != nil {
			node.Close()
			return fmt.Errorf("control socket: %w", err)
		}
		os.Chmod(cfg.Control, 0o600)
		defer os.Remove(cfg.Control)
		defer ln.Close()
		go serveControl(ln, node, log)
		log.Info("control socket", "path", cfg.Control)
	}
	fmt.Fprintf(stdout, "mxpd: serving %s\n", node.URL())

	<-ctx.Done()
	log.Info("shutting down: draining calls in flight")
	dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	node.Drain(dctx)
	return node.Close()
}

// controlRequest is one line on the control socket.
type controlRequest struct {
	Cmd        string  `json:"cmd"` // status, agents, discover, capture
	Capability string  `json:"capability,omitempty"`
	Seconds    float64 `json:"seconds,omitempty"` // capture
}

type controlAgent struct {
	ID           string   `json:"id"`
	Name         string   `json:"name"`
	Capabilities []string `json:"capabilities"`
	Endpoint     string   `json:"endpoint"`
}

type controlStatus struct {
	URL        string         `json:"url"`
	Addr       string         `json:"addr"`
	Dataplane  string         `json:"dataplane"`
	Agents     int            `json:"agents"`
	Routed     uint64         `json:"routed"`
	NotFound   uint64         `json:"not_found"`
	TimedOut   uint64         `json:"timed_out"`
	Dropped    uint64         `json:"dropped"`
	Evicted    uint64         `json:"evicted"`
	AgentsList []controlAgent `json:"agent_list,omitempty"`
	Error      string         `json:"error,omitempty"`
}

func serveControl(ln net.Listener, node *mesh.Node, log *slog.Logger) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			var req controlRequest
			if err := json.NewDecoder(bufio.NewReader(c)).Decode(&req); err != nil {
				json.NewEncoder(c).Encode(controlStatus{Error: "bad request: " + err.Error()})
				return
			}
			if req.Cmd == "capture" {
				serveCapture(c, node, time.Duration(min(max(req.Seconds, 0.1), 3600)*float64(time.Second)))
				return
			}
			json.NewEncoder(c).Encode(controlAnswer(node, req))
		}()
	}
}

func controlAnswer(node *mesh.Node, req controlRequest) controlStatus {
	st := node.Stats()
	s := controlStatus{URL: node.URL(), Addr: node.Addr().String(), Dataplane: node.Backend(),
		Routed: st.Routed.Load(), NotFound: st.NotFound.Load(), TimedOut: st.TimedOut.Load(),
		Dropped: st.Dropped.Load(), Evicted: st.Evicted.Load()}
	agents := node.Agents()
	s.Agents = len(agents)
	switch req.Cmd {
	case "status":
	case "agents", "discover":
		for _, a := range agents {
			if req.Cmd == "discover" && !contains(a.Capabilities, req.Capability) {
				continue
			}
			s.AgentsList = append(s.AgentsList, controlAgent{ID: a.ID.String(), Name: a.Name, Capabilities: a.Capabilities, Endpoint: a.Endpoint.String()})
		}
	default:
		s.Error = "unknown command " + req.Cmd
	}
	return s
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
