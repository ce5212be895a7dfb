package main

import (
	"context"
)

// The MXP systems: one per dataplane backend. Each runs a node on loopback
// with a server agent that handles "echo" (returns the request) and a
// "tokens" stream, and a client agent per Dial that calls it.
//
// Until the harness is wired to package mesh, Setup reports the system as
// unavailable and the run prints a skipped row with the reason.
type mxpSystem struct {
	name    string
	backend string // dataplane backend: "portable", "uring" or "xdp"
}

func init() {
	for _, b := range []string{"portable", "uring", "xdp"} {
		register("mxp-"+b, func() System { return &mxpSystem{name: "mxp-" + b, backend: b} })
	}
}

func (s *mxpSystem) Name() string { return s.name }

func (s *mxpSystem) Setup(ctx context.Context) error {
	return unavailable("not available yet: package mesh is not wired into perf/compare (backend %s)", s.backend)
}

func (s *mxpSystem) Dial(ctx context.Context) (Client, error) {
	return nil, unavailable("not available yet")
}

func (s *mxpSystem) Teardown() error { return nil }
