package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mxp-dataplane/mxp/mesh"
	"github.com/mxp-dataplane/mxp/wire"
)

// askNode sends one control request to the local node.
func askNode(path string, req controlRequest) (controlStatus, error) {
	var st controlStatus
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return st, fmt.Errorf("no node on the control socket %s (is `mxpd start` running? --control sets the path): %w", path, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return st, err
	}
	if err := json.NewDecoder(c).Decode(&st); err != nil {
		return st, err
	}
	if st.Error != "" {
		return st, fmt.Errorf("node: %s", st.Error)
	}
	return st, nil
}

func runStatus(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	control := fs.String("control", defaultControlPath(), "the node's control socket")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	st, err := askNode(*control, controlRequest{Cmd: "status"})
	if err != nil {
		fmt.Fprintf(stderr, "mxpd status: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "node:      %s\naddress:   %s\ndataplane: %s\nagents:    %d\nrouted:    %d messages (not found %d, timed out %d, dropped %d, evicted %d)\n",
		st.URL, st.Addr, st.Dataplane, st.Agents, st.Routed, st.NotFound, st.TimedOut, st.Dropped, st.Evicted)
	return 0
}

func flagExit(err error) int {
	if err == flag.ErrHelp {
		return 0
	}
	return 2
}

const agentUsage = `usage: mxpd agent <list|discover CAPABILITY|register> [flags]

  list                  the agents registered with the local node
  discover CAPABILITY   the agents offering CAPABILITY
  register              run an agent that answers every call with its input
                        (--name, --capabilities a,b, --node URL), until Ctrl-C
`

func runAgent(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stdout, agentUsage)
		return map[bool]int{true: 0, false: 2}[len(args) > 0]
	}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	control := fs.String("control", defaultControlPath(), "the node's control socket")
	node := fs.String("node", os.Getenv("MXP_NODE"), "the node's mxp:// URL (register; default: ask the local node)")
	name := fs.String("name", "cli-agent", "agent name (register)")
	caps := fs.String("capabilities", "echo", "comma-separated capabilities (register)")
	sub := args[0]
	rest := args[1:]
	var capability string
	if sub == "discover" {
		if len(rest) == 0 {
			fmt.Fprint(stderr, agentUsage)
			return 2
		}
		capability, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return flagExit(err)
	}
	switch sub {
	case "list", "discover":
		cmd := map[string]string{"list": "agents", "discover": "discover"}[sub]
		st, err := askNode(*control, controlRequest{Cmd: cmd, Capability: capability})
		if err != nil {
			fmt.Fprintf(stderr, "mxpd agent %s: %v\n", sub, err)
			return 1
		}
		for _, a := range st.AgentsList {
			fmt.Fprintf(stdout, "%s  %-16s %-24s %s\n", a.ID, a.Name, strings.Join(a.Capabilities, ","), a.Endpoint)
		}
		if len(st.AgentsList) == 0 {
			fmt.Fprintln(stdout, "(no agents)")
		}
		return 0
	case "register":
		url, err := nodeURL(*node, *control)
		if err != nil {
			fmt.Fprintf(stderr, "mxpd agent register: %v\n", err)
			return 1
		}
		a, err := mesh.NewAgent(mesh.AgentConfig{Name: *name, Capabilities: strings.Split(*caps, ","), Node: url})
		if err != nil {
			fmt.Fprintf(stderr, "mxpd agent register: %v\n", err)
			return 1
		}
		echo := func(_ context.Context, r *mesh.Request) ([]byte, error) { return r.Body, nil }
		for _, c := range strings.Split(*caps, ",") {
			a.Handle(c, echo)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := a.Start(ctx); err != nil {
			fmt.Fprintf(stderr, "mxpd agent register: %v\n", err)
			return 1
		}
		defer a.Close()
		fmt.Fprintf(stdout, "registered %s as %s; answering calls (Ctrl-C to stop)\n", *name, a.ID())
		waitInterrupt()
		return 0
	}
	fmt.Fprint(stderr, agentUsage)
	return 2
}

// nodeURL is the flag's URL, or the local node's (asked on the control socket).
func nodeURL(flagURL, control string) (string, error) {
	if flagURL != "" {
		return flagURL, nil
	}
	st, err := askNode(control, controlRequest{Cmd: "status"})
	if err != nil {
		return "", fmt.Errorf("no --node URL and %w", err)
	}
	t, err := mesh.ParseURL(st.URL)
	if err != nil {
		return "", err
	}
	if t.Addr.Addr().IsUnspecified() {
		lo := "127.0.0.1"
		if t.Addr.Addr().Is6() {
			lo = "::1"
		}
		return mesh.FormatURL(t.Key, netipJoin(lo, t.Addr.Port()), wire.UUID{}), nil
	}
	return st.URL, nil
}

// clientAgent starts a short-lived agent for one command.
func clientAgent(args []string, name string, stderr io.Writer, extra func(*flag.FlagSet)) (*mesh.Agent, *flag.FlagSet, int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	control := fs.String("control", defaultControlPath(), "the node's control socket")
	node := fs.String("node", os.Getenv("MXP_NODE"), "the node's mxp:// URL (default: the local node)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, flagExit(err)
	}
	url, err := nodeURL(*node, *control)
	if err != nil {
		fmt.Fprintf(stderr, "mxpd %s: %v\n", name, err)
		return nil, nil, 1
	}
	a, err := mesh.NewAgent(mesh.AgentConfig{Name: "mxpd-" + name, Node: url})
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = a.Start(ctx)
		cancel()
	}
	if err != nil {
		fmt.Fprintf(stderr, "mxpd %s: %v\n", name, err)
		return nil, nil, 1
	}
	return a, fs, 0
}

// resolveTarget takes an agent ID, or a capability to discover.
func resolveTarget(a *mesh.Agent, s string) (wire.UUID, error) {
	if id, err := wire.ParseUUID(s); err == nil {
		return id, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	found, err := a.Discover(ctx, s)
	if err != nil {
		return wire.UUID{}, err
	}
	if len(found) == 0 {
		return wire.UUID{}, fmt.Errorf("no agent with ID or capability %q", s)
	}
	return found[0].ID, nil
}

func runCall(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	var timeout *time.Duration
	a, fs, code := clientAgent(args, "call", stderr, func(fs *flag.FlagSet) {
		timeout = fs.Duration("timeout", 10*time.Second, "deadline of the call")
		fs.Usage = func() {
			fmt.Fprintln(stderr, "usage: mxpd call [flags] <agent-id|capability> <method> [data]")
			fs.PrintDefaults()
		}
	})
	if a == nil {
		return code
	}
	defer a.Close()
	if fs.NArg() < 2 {
		fs.Usage()
		return 2
	}
	target, err := resolveTarget(a, fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "mxpd call: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	t0 := time.Now()
	out, err := a.Call(ctx, target, fs.Arg(1), []byte(fs.Arg(2)))
	if err != nil {
		fmt.Fprintf(stderr, "mxpd call: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s\n", out)
	fmt.Fprintf(stderr, "(%v)\n", time.Since(t0).Round(time.Microsecond))
	return 0
}

func runStream(args []string, _ io.Reader, stdout, stderr io.Writer) int {
	a, fs, code := clientAgent(args, "stream", stderr, func(fs *flag.FlagSet) {
		fs.Usage = func() {
			fmt.Fprintln(stderr, "usage: mxpd stream [flags] <agent-id|capability> <method> [request]")
			fs.PrintDefaults()
		}
	})
	if a == nil {
		return code
	}
	defer a.Close()
	if fs.NArg() < 2 {
		fs.Usage()
		return 2
	}
	target, err := resolveTarget(a, fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "mxpd stream: %v\n", err)
		return 1
	}
	s, err := a.OpenStream(context.Background(), target, fs.Arg(1), []byte(fs.Arg(2)))
	if err != nil {
		fmt.Fprintf(stderr, "mxpd stream: %v\n", err)
		return 1
	}
	n := 0
	for {
		chunk, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintf(stderr, "mxpd stream: %v\n", err)
			return 1
		}
		stdout.Write(chunk)
		n++
	}
	s.CloseSend()
	fmt.Fprintf(stderr, "\n(%d chunks)\n", n)
	return 0
}

func debugLatency(args []string, stdout, stderr io.Writer) int {
	var n, size *int
	var pcts *string
	var method *string
	a, fs, code := clientAgent(args, "debug latency", stderr, func(fs *flag.FlagSet) {
		n = fs.Int("n", 1000, "calls")
		size = fs.Int("size", 64, "payload bytes")
		pcts = fs.String("percentiles", "50,90,99", "percentiles to print")
		method = fs.String("method", "echo", "method to call")
		fs.Usage = func() {
			fmt.Fprintln(stderr, "usage: mxpd debug latency [flags] <agent-id|capability>")
			fs.PrintDefaults()
		}
	})
	if a == nil {
		return code
	}
	defer a.Close()
	if fs.NArg() < 1 {
		fs.Usage()
		return 2
	}
	target, err := resolveTarget(a, fs.Arg(0))
	if err != nil {
		fmt.Fprintf(stderr, "mxpd debug latency: %v\n", err)
		return 1
	}
	body := make([]byte, *size)
	lat := make([]time.Duration, 0, *n)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range *n {
		t0 := time.Now()
		if _, err := a.Call(ctx, target, *method, body); err != nil {
			fmt.Fprintf(stderr, "mxpd debug latency: call %d: %v\n", i, err)
			return 1
		}
		lat = append(lat, time.Since(t0))
		if i%1000 == 999 {
			fmt.Fprintf(stderr, "\r%d/%d calls", i+1, *n)
		}
	}
	slices.Sort(lat)
	for _, p := range strings.Split(*pcts, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || v < 0 || v > 100 {
			fmt.Fprintf(stderr, "mxpd debug latency: bad percentile %q\n", p)
			return 2
		}
		fmt.Fprintf(stdout, "p%-5s %v\n", p, lat[min(len(lat)-1, int(v/100*float64(len(lat))))].Round(time.Microsecond))
	}
	return 0
}
