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
	"github.com/mxp-dataplane/mxp/wire"
)

// The MXP systems, one per dataplane backend: a mesh node on 127.0.0.1 with
// that backend, a server agent that handles "echo" (returns the request) and
// the "tokens" stream, and one client agent per Dial. In mxp-<backend>,
// calls go through the node: client agent → node → server agent and back,
// each hop an encrypted MXP connection. In mxp-<backend>-direct, the client
// agent discovers the server agent and calls it over its own connection, one
// hop, as gRPC and QUIC do; both agents then use the backend. A backend the
// machine cannot run (io_uring or AF_XDP unavailable) is reported as skipped
// with the node's reason.
type mxpSystem struct {
	name    string
	backend string // dataplane backend: "portable", "uring" or "xdp"
	direct  bool
	node    *mesh.Node
	server  *mesh.Agent
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
	srv.Handle("echo", func(_ context.Context, req *mesh.Request) ([]byte, error) {
		return append([]byte(nil), req.Body...), nil
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
	return nil
}

func (s *mxpSystem) Teardown() error {
	err := s.server.Close()
	if e := s.node.Close(); err == nil {
		err = e
	}
	return err
}

type mxpClient struct {
	a      *mesh.Agent
	target wire.UUID
}

func (s *mxpSystem) Dial(ctx context.Context) (Client, error) {
	a, err := mesh.NewAgent(mesh.AgentConfig{Name: "compare-client", Node: s.node.URL(),
		HeartbeatInterval: mxpHeartbeat, Backend: s.agentBackend(), Direct: s.direct})
	if err != nil {
		return nil, err
	}
	if err := a.Start(ctx); err != nil {
		return nil, err
	}
	if s.direct {
		// Discovery gives the server agent's endpoint and key; the first
		// call then dials it.
		found, err := a.Discover(ctx, "echo")
		if err == nil && (len(found) != 1 || found[0].ID != s.server.ID()) {
			err = fmt.Errorf("discover found %d agents, not the server", len(found))
		}
		if err != nil {
			a.Close()
			return nil, err
		}
	}
	return &mxpClient{a: a, target: s.server.ID()}, nil
}

func (c *mxpClient) Call(ctx context.Context, req []byte) ([]byte, error) {
	return c.a.Call(ctx, c.target, "echo", req)
}

func (c *mxpClient) Stream(ctx context.Context, n int) (int, error) {
	st, err := c.a.OpenStream(ctx, c.target, "tokens", binary.LittleEndian.AppendUint64(nil, uint64(n)))
	if err != nil {
		return 0, err
	}
	// Recv has no context: when ctx ends, closing the agent fails the stream.
	stop := context.AfterFunc(ctx, func() { c.a.Close() })
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

func (c *mxpClient) Close() error { return c.a.Close() }
