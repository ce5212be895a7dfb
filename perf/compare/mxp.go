//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/mesh"
)

// The MXP systems, one per dataplane backend: a mesh node on 127.0.0.1 with
// that backend, a server agent that handles "echo" (returns the request) and
// the "tokens" stream, and one mesh.Client per Dial (mesh.Dial: one
// handshake on the process's shared client host, no registration). In
// mxp-<backend>, calls go through the node: the client dials the node's URL
// with the server agent's ID, client → node → server agent and back, each
// hop an encrypted MXP connection. In mxp-<backend>-direct, the client dials
// the server agent's own URL and calls it over that connection, one hop, as
// gRPC and QUIC do; the server agent then uses the backend. The stream
// workload needs an Agent (a Client has no streams): one client agent,
// started in Setup, opens the stream. A backend the machine cannot run
// (io_uring or AF_XDP unavailable) is reported as skipped with the node's
// reason.
type mxpSystem struct {
	name    string
	backend string // dataplane backend: "portable", "uring" or "xdp"
	direct  bool
	node    *mesh.Node
	server  *mesh.Agent
	streams *mesh.Agent // opens the stream workload's stream
	url     string      // what Dial dials
}

func init() {
	for _, b := range []string{"portable", "uring", "xdp"} {
		register("mxp-"+b, func() System { return &mxpSystem{name: "mxp-" + b, backend: b} })
	}
	for _, b := range []string{"portable", "uring"} {
		register("mxp-"+b+"-direct", func() System { return &mxpSystem{name: "mxp-" + b + "-direct", backend: b, direct: true} })
	}
}

// agentBackend is the backend the agents use: the node's for direct calls
// (the agents carry the traffic), portable otherwise (an agent has one
// connection to the node; the node is where the backend matters).
func (s *mxpSystem) agentBackend() string {
	if s.direct {
		return s.backend
	}
	return "portable"
}

func (s *mxpSystem) Name() string { return s.name }

const mxpHeartbeat = time.Second

func (s *mxpSystem) Setup(ctx context.Context) error {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		return err
	}
	node, err := mesh.StartNode(mesh.NodeConfig{
		HostConfig: mesh.HostConfig{
			Listen:   netip.MustParseAddrPort("127.0.0.1:0"),
			Identity: id,
			Backend:  s.backend,
			Shards:   2,
		},
		HeartbeatInterval: mxpHeartbeat,
	})
	if err != nil {
		if s.backend != "portable" {
			return unavailable("node with backend %s: %v", s.backend, err)
		}
		return err
	}
	s.node = node
	srv, err := mesh.NewAgent(mesh.AgentConfig{Name: "compare-server", Capabilities: []string{"echo"},
		Node: node.URL(), HeartbeatInterval: mxpHeartbeat, Backend: s.agentBackend()})
	if err != nil {
		node.Close()
		return err
	}
	// Echo is short and never blocks: it runs inline on the agent's shard
	// (as the NATS responder runs on its subscription's goroutine) and
	// returns the request's bytes, which the runtime copies into the reply
	// before it reuses them (as the NATS responder returns m.Data).
	srv.HandleInline("echo", func(_ context.Context, req *mesh.Request) ([]byte, error) {
		return req.Body, nil
	})
	srv.HandleStream("tokens", func(ctx context.Context, req *mesh.Request, st *mesh.Stream) error {
		if len(req.Body) != 8 {
			return errors.New("want an 8-byte count")
		}
		n := binary.LittleEndian.Uint64(req.Body)
		token := make([]byte, TokenSize)
		for range n {
			if err := st.Send(token); err != nil {
				return err
			}
		}
		return st.CloseSend()
	})
	if err := srv.Start(ctx); err != nil {
		node.Close()
		return fmt.Errorf("server agent: %w", err)
	}
	s.server = srv
	s.url = mesh.FormatURL(node.PublicKey(), node.Addr(), srv.ID())
	if s.direct {
		s.url = srv.URL()
	}
	if err := s.startStreamer(ctx); err != nil {
		srv.Close()
		node.Close()
		return fmt.Errorf("client agent: %w", err)
	}
	return nil
}

func (s *mxpSystem) Teardown() error {
	err := s.streams.Close()
	if e := s.server.Close(); err == nil {
		err = e
	}
	if e := s.node.Close(); err == nil {
		err = e
	}
	return err
}

type mxpClient struct {
	c   *mesh.Client
	sys *mxpSystem
}

// Dial is mesh.Dial: one handshake with the node (or, direct, with the
// server agent) on the process's shared client host.
func (s *mxpSystem) Dial(ctx context.Context) (Client, error) {
	c, err := mesh.Dial(ctx, s.url)
	if err != nil {
		return nil, err
	}
	return &mxpClient{c: c, sys: s}, nil
}

// startStreamer starts the agent that opens streams: registered with the
// node and, direct, having discovered the server agent, as a client agent
// used to be.
func (s *mxpSystem) startStreamer(ctx context.Context) error {
	a, err := mesh.NewAgent(mesh.AgentConfig{Name: "compare-client", Node: s.node.URL(),
		HeartbeatInterval: mxpHeartbeat, Backend: s.agentBackend(), Direct: s.direct})
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		return err
	}
	if s.direct {
		found, err := a.Discover(ctx, "echo")
		if err == nil && (len(found) != 1 || found[0].ID != s.server.ID()) {
			err = fmt.Errorf("discover found %d agents, not the server", len(found))
		}
		if err != nil {
			a.Close()
			return err
		}
	}
	s.streams = a
	return nil
}

// DialResumed is mesh.Dial WithZeroRTT: from the second on it resumes with
// the ticket of the connection before, its first call as 0-RTT data.
func (s *mxpSystem) DialResumed(ctx context.Context) (Client, error) {
	c, err := mesh.Dial(ctx, s.url, mesh.WithZeroRTT())
	if err != nil {
		return nil, err
	}
	return &mxpClient{c: c, sys: s}, nil
}

// Resumed reports whether the peer took the first call as 0-RTT data.
func (c *mxpClient) Resumed() bool { return c.c.ZeroRTT() }

func (c *mxpClient) Call(ctx context.Context, req []byte) ([]byte, error) {
	return c.c.Call(ctx, "echo", req)
}

func (c *mxpClient) Stream(ctx context.Context, n int) (int, error) {
	a := c.sys.streams
	st, err := a.OpenStream(ctx, c.sys.server.ID(), "tokens", binary.LittleEndian.AppendUint64(nil, uint64(n)))
	if err != nil {
		return 0, err
	}
	// Recv has no context: when ctx ends, closing the agent fails the
	// stream (it is not used again: the stream workload runs once).
	stop := context.AfterFunc(ctx, func() { a.Close() })
	defer stop()
	got := 0
	for got < n {
		tok, err := st.Recv()
		if err != nil {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return got, err
		}
		if len(tok) != TokenSize {
			return got, fmt.Errorf("token of %d bytes", len(tok))
		}
		got++
	}
	_ = st.CloseSend()
	return got, nil
}

func (c *mxpClient) Close() error { return c.c.Close() }
