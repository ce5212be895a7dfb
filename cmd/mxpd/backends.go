package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/backends"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
)

// debugBackends probes the dataplane backends as `mxpd start` will, opens
// the chosen one briefly and logs the selection line with what it got.
func debugBackends(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("debug backends", flag.ContinueOnError)
	fs.SetOutput(stderr)
	want := fs.String("backend", "auto", "auto or one of: "+strings.Join(backends.Names, ", "))
	shards := fs.Int("shards", 2, "shards to open")
	addr := fs.String("addr", "127.0.0.1:0", "address to bind while probing")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		fmt.Fprintf(stderr, "mxpd debug backends: --addr: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	cfg := dataplane.Config{Addr: ap, Shards: *shards}
	sel, err := dataplane.Select(*want, cfg, backends.Candidates())
	if err != nil {
		log.Error("dataplane", "err", err)
		return 1
	}
	conns, err := sel.Backend.Open(cfg)
	if err != nil {
		log.Error("dataplane open", "backend", sel.Backend.Name(), "err", err)
		return 1
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	log.Info(sel.String())
	fmt.Fprintf(stdout, "backend: %s\nshards: %d\nbound: %s\n", sel.Backend.Name(), len(conns), conns[0].LocalAddr())
	if f, ok := portable.FeaturesOf(conns[0]); ok {
		fmt.Fprintf(stdout, "udp gso: %v\nudp gro: %v\nsocket buffers: recv %d, send %d\nbpf steering: %v\n",
			f.GSO, f.GRO, f.RecvBuffer, f.SendBuffer, f.SteeredByBPF)
	}
	for _, r := range sel.Rejected {
		fmt.Fprintf(stdout, "not chosen: %s: %v\n", r.Name, r.Reason)
	}
	return 0
}
