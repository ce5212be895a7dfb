package mesh

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/backends"
	"github.com/mxp-dataplane/mxp/testnet"
)

// exercise runs every message kind through a node: register, discover,
// call, error, event, stream.
func exercise(t *testing.T, node *Node, inNS func(func() error) error) {
	t.Helper()
	mk := func(name string, caps ...string) *Agent {
		a, err := NewAgent(AgentConfig{Name: name, Capabilities: caps, Node: node.URL(), HeartbeatInterval: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	srv := mk("server", "echo", "topic")
	srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	got := make(chan []byte, 1)
	srv.OnEvent("topic", func(_ context.Context, _ string, d []byte) { got <- d })
	srv.HandleStream("count", func(_ context.Context, _ *Request, s *Stream) error {
		for i := range 1000 {
			if err := s.Send([]byte(fmt.Sprint(i))); err != nil {
				return err
			}
		}
		return nil
	})
	cli := mk("client")
	for _, a := range []*Agent{srv, cli} {
		err := inNS(func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return a.Start(ctx)
		})
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	found, err := cli.Discover(ctx, "echo")
	if err != nil || len(found) != 1 {
		t.Fatalf("discover: %v %d", err, len(found))
	}
	for i := range 200 {
		payload := make([]byte, i*7)
		out, err := cli.Call(ctx, srv.ID(), "echo", payload)
		if err != nil || len(out) != len(payload) {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if _, err := cli.Call(ctx, srv.ID(), "missing", nil); err == nil {
		t.Fatal("a call to a missing method succeeded")
	}
	cli.Emit(ctx, "topic", []byte("ev"))
	select {
	case d := <-got:
		if string(d) != "ev" {
			t.Fatalf("event %q", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	s, err := cli.OpenStream(ctx, srv.ID(), "count", nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		c, err := s.Recv()
		if err != nil || string(c) != fmt.Sprint(i) {
			t.Fatalf("chunk %d: %q %v", i, c, err)
		}
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v", err)
	}
}

// probeable lists the backends whose probe succeeds for addr (inside the
// namespace inNS runs in), and logs why the others do not.
func probeable(t *testing.T, addr netip.AddrPort, inNS func(func() error) error) []string {
	var ok []string
	for _, name := range backends.Names {
		err := inNS(func() error {
			_, err := dataplane.Select(name, dataplane.Config{Addr: addr, Shards: 2}, backends.Candidates())
			return err
		})
		if err != nil {
			t.Logf("backend %s skipped: %v", name, err)
			continue
		}
		ok = append(ok, name)
	}
	return ok
}

func here(fn func() error) error { return fn() }

// Every message kind, over loopback, once per backend available here.
func TestEndToEndEachBackendLoopback(t *testing.T) {
	addr := netip.MustParseAddrPort("127.0.0.1:0")
	for _, b := range probeable(t, addr, here) {
		t.Run(b, func(t *testing.T) {
			id, _ := crypto.GenerateIdentity(nil)
			node, err := StartNode(NodeConfig{HostConfig: HostConfig{Listen: addr, Identity: id, Backend: b, Shards: 2}, HeartbeatInterval: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer node.Close()
			exercise(t, node, here)
		})
	}
}

// The same across a veth pair between two namespaces: the node in one,
// the agents in the other; XDP runs here when the kernel offers it.
func TestEndToEndAcrossNetns(t *testing.T) {
	testnet.Require(t)
	topo, err := testnet.New(testnet.Config{Prefix: "mxpmesh", Queues: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer topo.Close()
	agents, nodeHost := topo.Hosts[0], topo.Hosts[1]
	addr := netip.AddrPortFrom(nodeHost.IPv4, 9000)
	for _, b := range probeable(t, addr, nodeHost.Do) {
		t.Run(b, func(t *testing.T) {
			id, _ := crypto.GenerateIdentity(nil)
			var node *Node
			err := nodeHost.Do(func() (err error) {
				node, err = StartNode(NodeConfig{HostConfig: HostConfig{Listen: addr, Identity: id, Backend: b, Shards: 2}, HeartbeatInterval: 200 * time.Millisecond})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer node.Close()
			t.Logf("node: %s", node.Backend())
			exercise(t, node, agents.Do)
		})
	}
}
