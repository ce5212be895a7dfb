// Command mxpd is the MXP node: it runs the mesh and offers the operator's
// tools (debug codecs, demo). Run `mxpd help` for the commands.
package main

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
)

// command is one mxpd subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"demo", "run a node and four agents in this process and measure them (about 5 s)", runDemo},
		{"init", "create the node's identity key and mxpd.toml", runInit},
		{"start", "run the node (mxpd.toml, flags override)", runStart},
		{"status", "show the local node's state", runStatus},
		{"agent", "list, discover or register agents", runAgent},
		{"call", "call a method on an agent", runCall},
		{"stream", "open a stream to an agent and print what it sends", runStream},
		{"debug", "decode/encode messages, probe backends, measure latency", runDebug},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || isHelp(args[0]) || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "mxpd: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: mxpd <command> [arguments]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun `mxpd <command> --help` for a command's usage.")
}

func isHelp(s string) bool { return s == "-h" || s == "--help" || s == "-help" }

func waitInterrupt() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
}

func netipJoin(host string, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.MustParseAddr(host), port)
}
