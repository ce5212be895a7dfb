//go:build linux

// Command pktrate measures UDP packet rates through a dataplane backend, or
// through a naive net.UDPConn loop as the baseline, and reports packets/s,
// Gbit/s and CPU time per packet. scripts/netns-bench.sh drives it across two
// network namespaces.
//
//	pktrate recv --backend portable --addr 198.18.0.2:9100 --out recv.json
//	pktrate send --backend portable --to 198.18.0.2:9100 --size 1200 --duration 3s --out send.json
//	pktrate report --out DIR runs.jsonl...
//
// Every run is bounded: a sender stops after --duration, a receiver after
// --idle without traffic or --max-duration.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/bpf"
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/backends"
	"github.com/mxp-dataplane/mxp/dataplane/uring"
	"github.com/mxp-dataplane/mxp/dataplane/xdp"
)

// Result is what one side of a run measured.
type Result struct {
	Role         string  `json:"role"` // "send" or "recv"
	Backend      string  `json:"backend"`
	Label        string  `json:"label,omitempty"` // set by the caller, e.g. "probe" or "paced"
	Payload      int     `json:"payload"`
	Shards       int     `json:"shards"`
	Packets      uint64  `json:"packets"`
	Bytes        uint64  `json:"bytes"`
	Seconds      float64 `json:"seconds"`
	PPS          float64 `json:"pps"`
	Gbps         float64 `json:"gbps"`
	CPUNsPerPkt  float64 `json:"cpu_ns_per_pkt"`
	CPUSeconds   float64 `json:"cpu_seconds"`
	GSOSends     uint64  `json:"gso_sends,omitempty"`
	GROSplits    uint64  `json:"gro_splits,omitempty"`
	KernelDrops  uint64  `json:"dropped,omitempty"`
	TargetPPS    float64 `json:"target_pps,omitempty"`
	Offloads     string  `json:"offloads,omitempty"`
	Destination  string  `json:"destination,omitempty"`
	ListenAddr   string  `json:"listen,omitempty"`
	StartedAtUTC string  `json:"started_at"`
}

func (r *Result) finish(packets, bytes uint64, elapsed time.Duration, cpu time.Duration) {
	r.Packets, r.Bytes = packets, bytes
	r.Seconds = elapsed.Seconds()
	r.CPUSeconds = cpu.Seconds()
	if r.Seconds > 0 {
		r.PPS = float64(packets) / r.Seconds
		r.Gbps = float64(bytes) * 8 / r.Seconds / 1e9
	}
	if packets > 0 {
		r.CPUNsPerPkt = float64(cpu.Nanoseconds()) / float64(packets)
	}
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "send":
		err = runSend(os.Args[2:])
	case "recv":
		err = runRecv(os.Args[2:])
	case "report":
		err = runReport(os.Args[2:])
	case "probe":
		err = runProbe(os.Args[2:])
	case "-h", "--help", "help":
		usage(os.Stdout)
		return
	default:
		usage(os.Stderr)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pktrate:", err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, `usage: pktrate <send|recv|report> [flags]   (pktrate <command> -h for flags)

  recv    count datagrams arriving at --addr until --idle passes without any
  send    send --size-byte datagrams to --to for --duration, optionally paced at --pps
  probe   exit 0 if --backend can run here, else print why and exit 1
  report  turn the JSON lines of runs into netns-bench.json, netns-bench.md and a plot`)
}

func writeResult(path string, r Result) error {
	r.StartedAtUTC = time.Now().UTC().Format(time.RFC3339)
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "" || path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write(b)
	return err
}

type commonFlags struct {
	backend     string
	shards      int
	batch       int
	noGSO       bool
	noGRO       bool
	out         string
	label       string
	xdpMode     string
	uringThread bool
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.backend, "backend", "portable", "naive (net.UDPConn, one datagram per call), auto, or a dataplane backend: "+strings.Join(backends.Names, ", "))
	fs.IntVar(&c.shards, "shards", 1, "dataplane shards (sockets and threads)")
	fs.IntVar(&c.batch, "batch", 64, "datagrams per system call (portable)")
	fs.BoolVar(&c.noGSO, "no-gso", false, "turn UDP GSO off (portable)")
	fs.BoolVar(&c.noGRO, "no-gro", false, "turn UDP GRO off (portable)")
	fs.StringVar(&c.out, "out", "-", "append the JSON result line to this file (- = stdout)")
	fs.StringVar(&c.label, "label", "", "a label copied into the result")
	fs.StringVar(&c.xdpMode, "xdp-mode", "auto", "how the xdp backend attaches its XDP program: auto, native or generic")
	fs.BoolVar(&c.uringThread, "uring-thread", true, "uring: each shard waits on a thread of its own (ThreadPerShard: the raw-rate mode; false: Go's network poller, as the mesh runs it)")
}

// selectBackend probes the dataplane backend the flags name.
func (c *commonFlags) selectBackend() (dataplane.Backend, error) {
	sel, err := dataplane.Select(c.backend, dataplane.Config{Shards: c.shards}, backends.Candidates())
	if err != nil {
		return nil, err
	}
	if ub, ok := sel.Backend.(*uring.Backend); ok {
		ub.ThreadPerShard = c.uringThread
	}
	if xb, ok := sel.Backend.(*xdp.Backend); ok {
		switch c.xdpMode {
		case "native":
			xb.Mode = bpf.XDPModeNative
		case "generic":
			xb.Mode = bpf.XDPModeGeneric
		}
	}
	return sel.Backend, nil
}

func (c *commonFlags) offloads() string {
	if c.backend == "naive" {
		return ""
	}
	s := "gso+gro"
	switch {
	case c.noGSO && c.noGRO:
		s = "none"
	case c.noGSO:
		s = "gro"
	case c.noGRO:
		s = "gso"
	}
	return s
}

func runProbe(args []string) error {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	var c commonFlags
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.backend == "naive" {
		return nil
	}
	_, err := c.selectBackend()
	return err
}
