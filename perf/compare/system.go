//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// A System is one transport under test: a server it starts on loopback and
// the clients that connect to it. Every system implements the same service:
// Call echoes the request payload back (the response is as large as the
// request), and, where the system can stream, Stream asks the server to send n
// tokens of TokenSize bytes and counts them as they arrive.
//
// The harness calls Setup once, then Dial as often as a workload needs (one
// client per connection), and Teardown at the end. Adding a system is one
// file: implement System and Client (and Streamer where it applies) and call
// register from an init function.
type System interface {
	// Name is the system's row label in the report, e.g. "grpc-tls".
	Name() string
	// Setup starts the server side. An error wrapping ErrUnavailable means
	// the system cannot run on this machine or build; the harness skips it
	// and prints the reason.
	Setup(ctx context.Context) error
	// Dial opens one connection (or the system's equivalent) to the server.
	Dial(ctx context.Context) (Client, error)
	// Teardown stops the server; clients have been closed before.
	Teardown() error
}

// A Client is one connection. Call must be safe for concurrent use: the
// concurrency workloads run many callers over one client.
type Client interface {
	Call(ctx context.Context, req []byte) ([]byte, error)
	Close() error
}

// A Streamer is a Client that can receive a server-to-client token stream.
// Stream returns how many tokens arrived; it stops at n or when ctx ends.
type Streamer interface {
	Stream(ctx context.Context, n int) (int, error)
}

// A Resumer is a System whose clients can resume a session from an earlier
// connection to the same server: TLS 1.3 session tickets (a PSK with a
// fresh ECDHE), MXP tickets with the first call as 0-RTT data. The
// "setup-resumed" workload measures DialResumed where Dial measures a full
// handshake.
type Resumer interface {
	DialResumed(ctx context.Context) (Client, error)
}

// A Limiter is a System that cannot carry every payload size (for example
// QUIC datagrams must fit in one packet). MaxPayload is the largest request
// it can echo.
type Limiter interface {
	MaxPayload() int
}

// TokenSize is the size of one stream token.
const TokenSize = 16

// ErrUnavailable marks a system that is skipped rather than failed.
var ErrUnavailable = errors.New("not available")

// unavailable returns an error wrapping ErrUnavailable with a reason.
func unavailable(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUnavailable, fmt.Sprintf(format, args...))
}

var registry = map[string]func() System{}

// order is the report order; systems not listed sort after these by name.
var order = []string{
	"udp", "mxp-portable", "mxp-uring", "mxp-xdp", "mxp-portable-direct", "mxp-uring-direct",
	"http", "https", "grpc-tls", "grpc-tls-bidi", "nats",
	"quic-stream", "quic-long", "quic-dgram",
}

func register(name string, f func() System) {
	if _, dup := registry[name]; dup {
		panic("compare: system registered twice: " + name)
	}
	registry[name] = f
}

// systemNames returns the registered names in report order.
func systemNames() []string {
	rank := map[string]int{}
	for i, n := range order {
		rank[n] = i
	}
	var names []string
	for n := range registry {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		ri, oki := rank[names[i]]
		rj, okj := rank[names[j]]
		switch {
		case oki && okj:
			return ri < rj
		case oki != okj:
			return oki
		}
		return names[i] < names[j]
	})
	return names
}

// selectSystems resolves a comma-separated filter ("" means all).
func selectSystems(filter string) ([]string, error) {
	all := systemNames()
	if strings.TrimSpace(filter) == "" {
		return all, nil
	}
	var out []string
	for _, n := range strings.Split(filter, ",") {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if _, ok := registry[n]; !ok {
			return nil, fmt.Errorf("unknown system %q (have %s)", n, strings.Join(all, ", "))
		}
		out = append(out, n)
	}
	return out, nil
}
