package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
	"github.com/mxp-dataplane/mxp/wire"
)

// clientServer starts a node and a registered agent serving "echo", "fail",
// "trace" (returns the handler's trace ID and whether its context has a
// deadline) and "slow" (waits for its context or 3 s).
func clientServer(t *testing.T) (*testMesh, *Agent) {
	t.Helper()
	tm := newTestMesh(t)
	srv := tm.agent("server", "echo")
	srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) {
		return append([]byte(nil), r.Body...), nil
	})
	srv.Handle("fail", func(context.Context, *Request) ([]byte, error) {
		return nil, &Error{Code: wire.CodeBadRequest, Message: "no thanks"}
	})
	srv.Handle("trace", func(ctx context.Context, r *Request) ([]byte, error) {
		id, _ := TraceID(ctx)
		_, dl := ctx.Deadline()
		return fmt.Appendf(nil, "%d %v", id, dl), nil
	})
	srv.Handle("slow", func(ctx context.Context, r *Request) ([]byte, error) {
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
		return []byte("late"), nil
	})
	start(t, srv)
	return tm, srv
}

func dialT(t *testing.T, url string, opts ...DialOption) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientDialAndCall(t *testing.T) {
	tm, srv := clientServer(t)
	urls := map[string]string{
		"direct":   srv.URL(),
		"via-node": FormatURL(tm.node.PublicKey(), tm.node.Addr(), srv.ID()),
	}
	for name, url := range urls {
		t.Run(name, func(t *testing.T) {
			c := dialT(t, url)
			if c.Target().Agent != srv.ID() {
				t.Fatal("target agent", c.Target().Agent)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			for i := range 20 {
				body := bytes.Repeat([]byte{byte(i)}, 1+i*100)
				out, err := c.Call(ctx, "echo", body)
				if err != nil || !bytes.Equal(out, body) {
					t.Fatalf("call %d: %v (%d bytes back)", i, err, len(out))
				}
			}
			// Trace ID and deadline reach the handler.
			out, err := c.Call(WithTrace(ctx, 4242), "trace", nil)
			if err != nil || string(out) != "4242 true" {
				t.Fatalf("trace: %q %v", out, err)
			}
			out, err = c.Call(context.Background(), "trace", nil)
			if err != nil || bytes.HasPrefix(out, []byte("0 ")) || !bytes.HasSuffix(out, []byte(" false")) {
				t.Fatalf("root call: %q %v (want a fresh trace ID and no deadline)", out, err)
			}
			// Error mapping as Agent.Call: the handler's code, NotFound for a method.
			_, err = c.Call(ctx, "fail", nil)
			var me *Error
			if !errors.As(err, &me) || me.Code != wire.CodeBadRequest || me.Message != "no thanks" {
				t.Fatalf("fail: %v", err)
			}
			_, err = c.Call(ctx, "nope", nil)
			if !errors.As(err, &me) || me.Code != wire.CodeNotFound {
				t.Fatalf("unknown method: %v", err)
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	tm, srv := clientServer(t)
	ctx := context.Background()

	// An agent the node does not know: NotFound from the node.
	var unknown wire.UUID
	unknown[0] = 0x42
	c := dialT(t, FormatURL(tm.node.PublicKey(), tm.node.Addr(), unknown))
	_, err := c.Call(ctx, "echo", []byte("x"))
	var me *Error
	if !errors.As(err, &me) || me.Code != wire.CodeNotFound {
		t.Fatalf("unknown agent: %v", err)
	}

	// A URL without an agent.
	if _, err := Dial(ctx, tm.node.URL()); !errors.Is(err, ErrNoAgent) {
		t.Fatalf("no agent: %v", err)
	}
	// ... unless WithAgent names it.
	c2 := dialT(t, tm.node.URL(), WithAgent(srv.ID()))
	if out, err := c2.Call(ctx, "echo", []byte("hi")); err != nil || string(out) != "hi" {
		t.Fatalf("WithAgent: %q %v", out, err)
	}

	// The wrong key: the node drops the hello (its mac1 does not match), so
	// the handshake is never answered and Dial says so when its time is up.
	wrong, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	_, err = Dial(ctx, FormatURL(wrong.Public, tm.node.Addr(), srv.ID()), WithHandshakeTimeout(300*time.Millisecond))
	if !errors.Is(err, ErrHandshakeNoAnswer) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wrong key: %v", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Fatalf("wrong key took %v to fail", d)
	}
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = Dial(dctx, FormatURL(wrong.Public, srv.endpoint(), srv.ID()))
	cancel()
	if !errors.Is(err, ErrHandshakeNoAnswer) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wrong key (direct, ctx deadline): %v", err)
	}

	// A deadline: the caller gives up at its deadline, and the handler's
	// context carries it too (it ends before the 3 s of "slow").
	for _, url := range []string{srv.URL(), FormatURL(tm.node.PublicKey(), tm.node.Addr(), srv.ID())} {
		c := dialT(t, url)
		cctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
		t0 := time.Now()
		_, err = c.Call(cctx, "slow", nil)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > time.Second {
			t.Fatalf("deadline: %v after %v", err, time.Since(t0))
		}
		// The client still works after a call timed out.
		if out, err := c.Call(ctx, "echo", []byte("after")); err != nil || string(out) != "after" {
			t.Fatalf("after a timeout: %q %v", out, err)
		}
	}
}

func TestClientsShareHostAndClose(t *testing.T) {
	tm, srv := clientServer(t)
	viaNode := FormatURL(tm.node.PublicKey(), tm.node.Addr(), srv.ID())
	first := dialT(t, srv.URL())
	// Let transient goroutines (handlers, timers) settle, then count.
	settle := func() int {
		n := runtime.NumGoroutine()
		for range 50 {
			time.Sleep(10 * time.Millisecond)
			n = min(n, runtime.NumGoroutine())
		}
		return n
	}
	before := settle()

	const clients, calls = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	cs := make([]*Client, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := srv.URL()
			if i%2 == 1 {
				url = viaNode
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := Dial(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			cs[i] = c
			for j := range calls {
				want := fmt.Appendf(nil, "%d/%d", i, j)
				if out, err := c.Call(ctx, "echo", want); err != nil || !bytes.Equal(out, want) {
					errs <- fmt.Errorf("client %d call %d: %q %v", i, j, out, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.ch != first.ch || c.ch.h != first.ch.h {
			t.Fatal("clients do not share the host")
		}
	}
	// Dialling started no goroutines (no new host, no per-client loop).
	if after := settle(); after > before {
		t.Errorf("%d goroutines before %d clients, %d with them", before, clients, after)
	}

	// Close closes that client's connection only.
	conns := func() int {
		n := make(chan int, 1)
		srv.sh.do(func(time.Time) { n <- srv.sh.ep.Len() })
		return <-n
	}
	was := conns()
	slow := make(chan error, 1)
	go func() {
		_, err := cs[0].Call(context.Background(), "slow", nil)
		slow <- err
	}()
	time.Sleep(50 * time.Millisecond)
	cs[0].Close()
	if err := <-slow; !errors.Is(err, ErrClosed) {
		t.Fatalf("call in flight at Close: %v", err)
	}
	if _, err := cs[0].Call(context.Background(), "echo", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for conns() >= was && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := conns(); n >= was {
		t.Errorf("server still has %d connections after a client closed (had %d)", n, was)
	}
	for i, c := range cs[1:] {
		if out, err := c.Call(context.Background(), "echo", []byte("still")); err != nil || string(out) != "still" {
			t.Fatalf("client %d after another closed: %q %v", i+1, out, err)
		}
		c.Close()
	}
	if err := cs[0].Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

// BenchmarkClientSetup is the compare harness's setup workload in-process:
// Dial, one 64-byte call, Close. x25519/op counts the scalar
// multiplications of both sides (client and node or agent).
//
// In the -0rtt variants each Dial is WithZeroRTT: from the second on it
// resumes with the ticket of the one before, the call inside its first
// packet.
func BenchmarkClientSetup(b *testing.B) {
	for _, via := range []string{"direct", "node", "direct-0rtt", "node-0rtt"} {
		b.Run(via, func(b *testing.B) {
			var opts []DialOption
			if strings.HasSuffix(via, "-0rtt") {
				opts = append(opts, WithZeroRTT())
			}
			id, err := crypto.GenerateIdentity(nil)
			if err != nil {
				b.Fatal(err)
			}
			node, err := StartNode(NodeConfig{HostConfig: HostConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0"), Identity: id, Backend: "portable", Shards: 2}})
			if err != nil {
				b.Fatal(err)
			}
			defer node.Close()
			srv, err := NewAgent(AgentConfig{Name: "server", Node: node.URL(), Backend: "portable"})
			if err != nil {
				b.Fatal(err)
			}
			srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) {
				return append([]byte(nil), r.Body...), nil
			})
			if err := srv.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			url := srv.URL()
			if strings.HasPrefix(via, "node") {
				url = FormatURL(node.PublicKey(), node.Addr(), srv.ID())
			}
			ctx := context.Background()
			body := make([]byte, 64)
			x0 := crypto.X25519Operations()
			b.ResetTimer()
			for range b.N {
				c, err := Dial(ctx, url, opts...)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Call(ctx, "echo", body); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				c.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(crypto.X25519Operations()-x0)/float64(b.N), "x25519/op")
		})
	}
}

// A handler's deadline is the call's timeout from when its agent received
// the call (taken from the shard's turn, not a clock read of its own), for
// inline and goroutine handlers, directly and through the node.
func TestHandlerDeadlineIsTheCallsTimeout(t *testing.T) {
	tm := newTestMesh(t)
	srv := tm.agent("server", "left")
	left := func(ctx context.Context, _ *Request) ([]byte, error) {
		dl, ok := ctx.Deadline()
		if !ok {
			return []byte("none"), nil
		}
		return []byte(time.Until(dl).String()), nil
	}
	srv.Handle("left", left)
	srv.HandleInline("left-inline", left)
	start(t, srv)
	urls := map[string]string{
		"direct":   srv.URL(),
		"via-node": FormatURL(tm.node.PublicKey(), tm.node.Addr(), srv.ID()),
	}
	for name, url := range urls {
		c := dialT(t, url)
		for _, method := range []string{"left", "left-inline"} {
			for i := range 3 { // the first call dials; later ones find an idle shard
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second) // travels as 3 s
				out, err := c.Call(ctx, method, nil)
				cancel()
				if err != nil {
					t.Fatalf("%s %s: %v", name, method, err)
				}
				d, err := time.ParseDuration(string(out))
				if err != nil || d <= 2*time.Second || d > 3*time.Second {
					t.Fatalf("%s %s call %d: the handler had %q left of a 3 s timeout", name, method, i, out)
				}
			}
		}
	}
}

// The clients' shared host keeps its socket connected to its one peer
// while all its live connections are with that peer: connected after a
// Dial, unconnected while a second peer is dialled too, connected to that
// one as soon as the first client closes, and calls go through at every
// step.
func TestClientHostSocketFollowsItsOnePeer(t *testing.T) {
	tm, srv := clientServer(t)
	srv2 := tm.agent("server2", "echo")
	srv2.HandleInline("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	start(t, srv2)
	ch, err := sharedClientHost(true)
	if err != nil {
		t.Fatal(err)
	}
	conn := ch.h.engine().Conn(0)
	eventually := func(what string, want netip.AddrPort) {
		t.Helper()
		var got netip.AddrPort
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if got, _ = portable.ConnectedPeer(conn); got == want {
				return
			}
		}
		t.Fatalf("%s: socket connected to %v, want %v", what, got, want)
	}
	call := func(c *Client) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if out, err := c.Call(ctx, "echo", []byte("hi")); err != nil || string(out) != "hi" {
			t.Fatalf("call to %v: %q, %v", c.Target().Addr, out, err)
		}
	}
	c1 := dialT(t, srv.URL())
	call(c1)
	eventually("one client", c1.Target().Addr)
	call(c1)
	c2 := dialT(t, srv2.URL())
	call(c2)
	eventually("two peers", netip.AddrPort{})
	call(c1)
	c1.Close() // its connection lingers, closing, for three PTOs, but counts no more
	if got, _ := portable.ConnectedPeer(conn); got != c2.Target().Addr {
		t.Fatalf("right after the first client closed: socket connected to %v, want %v", got, c2.Target().Addr)
	}
	call(c2)
}
