package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/mesh"
)

// The operator's path: init, start, an agent joins, status, agent list,
// call, latency, /metrics, then a graceful stop.
func TestInitStartStatusCall(t *testing.T) {
	dir := t.TempDir()
	if out, code := mxpd(t, "", "init", "--dir", dir); code != 0 || !strings.Contains(out, "node public key: mxpk_") {
		t.Fatalf("init: %d\n%s", code, out)
	}
	if _, code := mxpd(t, "", "init", "--dir", dir); code != 1 {
		t.Fatal("init over an existing key must refuse")
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	metricsAddr := ln.Addr().String()
	ln.Close()
	cfg := defaultConfig()
	cfg.Listen, cfg.Backend, cfg.Shards = "127.0.0.1:0", "portable", 2
	cfg.Control = filepath.Join(dir, "mxpd.sock")
	cfg.Metrics = metricsAddr
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		served <- serveNode(ctx, cfg, dir, slog.New(slog.NewTextHandler(io.Discard, nil)), &out)
	}()
	var st controlStatus
	var err error
	for i := 0; i < 200; i++ {
		if st, err = askNode(cfg.Control, controlRequest{Cmd: "status"}); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	url, err := nodeURL("", cfg.Control)
	if err != nil {
		t.Fatal(err)
	}
	a, err := mesh.NewAgent(mesh.AgentConfig{Name: "echoer", Capabilities: []string{"echo"}, Node: url})
	if err != nil {
		t.Fatal(err)
	}
	a.Handle("echo", func(_ context.Context, r *mesh.Request) ([]byte, error) { return r.Body, nil })
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := a.Start(sctx); err != nil {
		t.Fatal(err)
	}
	defer a.Close()

	if out, code := mxpd(t, "", "status", "--control", cfg.Control); code != 0 || !strings.Contains(out, "agents:    1") {
		t.Fatalf("status: %d\n%s", code, out)
	}
	if out, code := mxpd(t, "", "agent", "list", "--control", cfg.Control); code != 0 || !strings.Contains(out, "echoer") {
		t.Fatalf("agent list: %d\n%s", code, out)
	}
	if out, code := mxpd(t, "", "agent", "discover", "nothing", "--control", cfg.Control); code != 0 || !strings.Contains(out, "(no agents)") {
		t.Fatalf("agent discover: %d\n%s", code, out)
	}
	if out, code := mxpd(t, "", "call", "--control", cfg.Control, "echo", "echo", "hello mesh"); code != 0 || out != "hello mesh\n" {
		t.Fatalf("call: %d %q", code, out)
	}
	if out, code := mxpd(t, "", "debug", "latency", "--control", cfg.Control, "--n", "200", "--percentiles", "50,99", "echo"); code != 0 || !strings.Contains(out, "p99") {
		t.Fatalf("latency: %d\n%s", code, out)
	}
	pcap := filepath.Join(dir, "x.pcap")
	capDone := make(chan string, 1)
	go func() {
		out, _ := mxpd(t, "", "debug", "capture", "--control", cfg.Control, "--output", pcap, "--duration", "1s")
		capDone <- out
	}()
	time.Sleep(200 * time.Millisecond)
	for range 20 {
		if out, code := mxpd(t, "", "call", "--control", cfg.Control, "echo", "echo", "captured"); code != 0 {
			t.Fatalf("call during capture: %d %s", code, out)
		}
	}
	if out := <-capDone; !strings.Contains(out, "captured") || strings.Contains(out, "captured 0 ") {
		t.Fatalf("capture: %q", out)
	}
	if raw, err := os.ReadFile(pcap); err != nil || len(raw) < 24+16+28+40 || !bytes.Contains(raw, []byte("captured")) {
		t.Fatalf("pcap: %d bytes, %v", len(raw), err)
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"mxp_agents_registered ", `mxp_messages_received_total{type="Call"}`, "mxp_dataplane_packets_total", "mxp_call_duration_seconds_bucket", `mxp_zero_rtt_messages_total{result="taken"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("node stopped with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("node did not stop")
	}
	_ = st
}
