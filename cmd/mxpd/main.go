// Command mxpd is the MXP node: it runs the mesh and offers the operator's
// tools (debug codecs, demo). Run `mxpd help` for the commands.
package main

import (
	"fmt"
	"io"
	"os"
)

// command is one mxpd subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"demo", "run the built-in demo and self-check", runDemo},
		{"debug", "inspect MXP messages (decode, encode)", runDebug},
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
