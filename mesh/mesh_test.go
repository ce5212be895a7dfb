package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/wire"
)

// testBusyPoll is the agents' busy polling, from MXP_TEST_BUSYPOLL (a
// duration; benchmarks compare with and without).
var testBusyPoll, _ = time.ParseDuration(os.Getenv("MXP_TEST_BUSYPOLL"))

type testMesh struct {
	t    *testing.T
	node *Node
	id   crypto.Identity
	addr netip.AddrPort
}

func startTestNode(t *testing.T, addr netip.AddrPort, id crypto.Identity, hb time.Duration) *Node {
	t.Helper()
	n, err := StartNode(NodeConfig{HostConfig: HostConfig{Listen: addr, Identity: id, Backend: "portable", Shards: 2}, HeartbeatInterval: hb})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newTestMesh(t *testing.T) *testMesh {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	n := startTestNode(t, netip.MustParseAddrPort("127.0.0.1:0"), id, 200*time.Millisecond)
	tm := &testMesh{t: t, node: n, id: id, addr: n.Addr()}
	t.Cleanup(func() { tm.node.Close() })
	return tm
}

func (tm *testMesh) agent(name string, caps ...string) *Agent {
	tm.t.Helper()
	a, err := NewAgent(AgentConfig{Name: name, Capabilities: caps, Node: tm.node.URL(), HeartbeatInterval: 200 * time.Millisecond, Backend: "portable", BusyPoll: testBusyPoll})
	if err != nil {
		tm.t.Fatal(err)
	}
	return a
}

func start(t *testing.T, a *Agent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
}

func TestCallsEventsStreamsEndToEnd(t *testing.T) {
	tm := newTestMesh(t)
	writer := tm.agent("writer", "summarize", "news")
	var traceSeen atomic.Uint64
	writer.Handle("summarize", func(ctx context.Context, req *Request) ([]byte, error) {
		tr, _ := TraceID(ctx)
		traceSeen.Store(tr)
		return append([]byte("summary of "), req.Body...), nil
	})
	writer.Handle("fail", func(context.Context, *Request) ([]byte, error) {
		return nil, &Error{Code: wire.CodeResourceExhausted, Message: "quota"}
	})
	writer.Handle("panic", func(context.Context, *Request) ([]byte, error) { panic("boom") })
	writer.Handle("slow", func(ctx context.Context, _ *Request) ([]byte, error) {
		select {
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
		}
		return nil, ctx.Err()
	})
	events := make(chan string, 10)
	writer.OnEvent("news", func(_ context.Context, topic string, data []byte) { events <- topic + ":" + string(data) })
	writer.HandleStream("generate", func(ctx context.Context, req *Request, s *Stream) error {
		n := 0
		fmt.Sscan(string(req.Body), &n)
		for i := range n {
			if err := s.Send([]byte(fmt.Sprintf("tok%05d", i))); err != nil {
				return err
			}
		}
		return nil
	})
	start(t, writer)
	coord := tm.agent("coordinator", "plan")
	start(t, coord)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	found, err := coord.Discover(ctx, "summarize")
	if err != nil || len(found) != 1 || found[0].ID != writer.ID() || found[0].Name != "writer" {
		t.Fatalf("discover: %v %+v", err, found)
	}
	all, _ := coord.Discover(ctx, "")
	if len(all) != 2 || len(tm.node.Agents()) != 2 {
		t.Fatalf("discover all: %d agents, node has %d", len(all), len(tm.node.Agents()))
	}

	tctx := WithTrace(ctx, 0xABCDEF)
	resp, err := coord.Call(tctx, writer.ID(), "summarize", []byte("MXP"))
	if err != nil || string(resp) != "summary of MXP" {
		t.Fatalf("call: %q %v", resp, err)
	}
	if traceSeen.Load() != 0xABCDEF {
		t.Fatalf("handler saw trace %x, want the caller's", traceSeen.Load())
	}
	var me *Error
	if _, err := coord.Call(ctx, writer.ID(), "fail", nil); !errors.As(err, &me) || me.Code != wire.CodeResourceExhausted {
		t.Fatalf("error reply: %v", err)
	}
	if _, err := coord.Call(ctx, writer.ID(), "panic", nil); !errors.As(err, &me) || me.Code != wire.CodeInternal {
		t.Fatalf("panicking handler: %v", err)
	}
	if _, err := coord.Call(ctx, writer.ID(), "nope", nil); !errors.As(err, &me) || me.Code != wire.CodeNotFound {
		t.Fatalf("unknown method: %v", err)
	}
	if _, err := coord.Call(ctx, wire.UUID{1}, "summarize", nil); !errors.As(err, &me) || me.Code != wire.CodeNotFound {
		t.Fatalf("unknown agent: %v", err)
	}
	short, c2 := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = coord.Call(short, writer.ID(), "slow", nil)
	c2()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow call: %v", err)
	}
	// The writer still serves after all that.
	if resp, err := coord.Call(ctx, writer.ID(), "summarize", []byte("again")); err != nil || string(resp) != "summary of again" {
		t.Fatalf("call after errors: %q %v", resp, err)
	}

	if err := coord.Emit(ctx, "news", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-events:
		if e != "news:hello" {
			t.Fatalf("event %q", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("event not delivered")
	}

	const tokens = 20000
	s, err := coord.OpenStream(ctx, writer.ID(), "generate", []byte(fmt.Sprint(tokens)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range tokens {
		tok, err := s.Recv()
		if err != nil || !bytes.Equal(tok, []byte(fmt.Sprintf("tok%05d", i))) {
			t.Fatalf("token %d: %q %v", i, tok, err)
		}
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("end of stream: %v", err)
	}
	s.CloseSend()
}

func TestEvictionAndReregistration(t *testing.T) {
	tm := newTestMesh(t)
	a := tm.agent("worker", "work")
	a.Handle("ping", func(context.Context, *Request) ([]byte, error) { return []byte("pong"), nil })
	start(t, a)
	if len(tm.node.Agents()) != 1 {
		t.Fatal("not registered")
	}
	// Restart the node on the same address with the same key: the agent
	// learns it (stateless reset) and registers again.
	tm.node.Close()
	tm.node = startTestNode(t, tm.addr, tm.id, 200*time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for len(tm.node.Agents()) != 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(tm.node.Agents()) != 1 {
		t.Fatalf("agent did not register again after the node restarted (stats %+v)", a.Stats())
	}
	if a.Stats().Registrations < 2 {
		t.Fatalf("registrations %d", a.Stats().Registrations)
	}
	// A silent agent is evicted after three missed heartbeats.
	close(a.stop) // stop its heartbeats, keep its connection
	<-a.done
	a.stop = make(chan struct{}) // let Close work later
	a.done = make(chan struct{})
	close(a.done)
	deadline = time.Now().Add(5 * time.Second)
	for len(tm.node.Agents()) != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(tm.node.Agents()) != 0 || tm.node.Stats().Evicted.Load() != 1 {
		t.Fatalf("silent agent not evicted: %d agents, evicted %d", len(tm.node.Agents()), tm.node.Stats().Evicted.Load())
	}
}

// With Direct, calls to a discovered agent go straight to it: one hop, the
// node sees none of them.
func TestDirectCalls(t *testing.T) {
	tm := newTestMesh(t)
	srv := tm.agent("srv", "echo")
	srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	start(t, srv)
	cli, err := NewAgent(AgentConfig{Name: "direct", Node: tm.node.URL(), Direct: true, HeartbeatInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start(t, cli)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	found, err := cli.Discover(ctx, "echo")
	if err != nil || len(found) != 1 || found[0].Key != srv.cfg.Identity.Public {
		t.Fatalf("discover: %v %+v", err, found)
	}
	before := tm.node.Stats().Routed.Load()
	for i := range 100 {
		out, err := cli.Call(ctx, srv.ID(), "echo", []byte{byte(i)})
		if err != nil || len(out) != 1 || out[0] != byte(i) {
			t.Fatalf("direct call %d: %q %v", i, out, err)
		}
	}
	if routed := tm.node.Stats().Routed.Load() - before; routed != 0 {
		t.Fatalf("the node routed %d messages of direct calls", routed)
	}
}

// Canceling a call's context returns at once with context.Canceled, and the
// late reply is dropped without disturbing later calls.
func TestCallCancellation(t *testing.T) {
	tm := newTestMesh(t)
	srv := tm.agent("srv", "work")
	release := make(chan struct{})
	srv.Handle("slow", func(ctx context.Context, _ *Request) ([]byte, error) {
		<-release
		return []byte("late"), nil
	})
	srv.Handle("fast", func(context.Context, *Request) ([]byte, error) { return []byte("ok"), nil })
	start(t, srv)
	cli := tm.agent("cli")
	start(t, cli)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := cli.Call(ctx, srv.ID(), "slow", nil)
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	t0 := time.Now()
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("canceled call returned %v", err)
		}
		if d := time.Since(t0); d > 100*time.Millisecond {
			t.Fatalf("cancellation took %v", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("canceled call did not return")
	}
	close(release) // the late reply arrives and is dropped
	out, err := cli.Call(context.Background(), srv.ID(), "fast", nil)
	if err != nil || string(out) != "ok" {
		t.Fatalf("call after a canceled one: %q %v", out, err)
	}
}

// Inline handlers run on the shard: replies, errors, panics and traces
// behave as with goroutine handlers, and many concurrent calls each get
// their own reply (the pooled call state is not shared between calls).
func TestHandleInline(t *testing.T) {
	tm := newTestMesh(t)
	srv := tm.agent("srv", "calc")
	var traceSeen atomic.Uint64
	srv.HandleInline("double", func(ctx context.Context, req *Request) ([]byte, error) {
		tr, _ := TraceID(ctx)
		traceSeen.Store(tr)
		return append(bytes.Clone(req.Body), req.Body...), nil
	})
	srv.HandleInline("fail", func(context.Context, *Request) ([]byte, error) {
		return nil, &Error{Code: wire.CodeBadRequest, Message: "no"}
	})
	srv.HandleInline("panic", func(context.Context, *Request) ([]byte, error) { panic("inline boom") })
	start(t, srv)
	cli := tm.agent("cli")
	start(t, cli)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Call(WithTrace(ctx, 77), srv.ID(), "double", []byte("ab"))
	if err != nil || string(resp) != "abab" || traceSeen.Load() != 77 {
		t.Fatalf("inline call: %q %v, trace %d", resp, err, traceSeen.Load())
	}
	var me *Error
	if _, err := cli.Call(ctx, srv.ID(), "fail", nil); !errors.As(err, &me) || me.Code != wire.CodeBadRequest || me.Message != "no" {
		t.Fatalf("inline error: %v", err)
	}
	if _, err := cli.Call(ctx, srv.ID(), "panic", nil); !errors.As(err, &me) || me.Code != wire.CodeInternal {
		t.Fatalf("inline panic: %v", err)
	}
	errs := make(chan error, 32)
	for i := range 32 {
		go func() {
			for j := range 50 {
				body := []byte(fmt.Sprintf("%02d-%02d", i, j))
				resp, err := cli.Call(ctx, srv.ID(), "double", body)
				if err == nil && string(resp) != string(body)+string(body) {
					err = fmt.Errorf("reply %q to %q", resp, body)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 32 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st := srv.Stats(); st.Served != 3+32*50 || st.HandlerPanics != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A direct call in flight fails as soon as the agent serving it closes (its
// connection's close reaches the caller), not at the call's deadline.
func TestDirectCallFailsWhenPeerCloses(t *testing.T) {
	tm := newTestMesh(t)
	srv := tm.agent("srv", "slow")
	entered := make(chan struct{}, 1)
	srv.Handle("slow", func(ctx context.Context, _ *Request) ([]byte, error) {
		entered <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	start(t, srv)
	cli := tm.agent("cli")
	cli.cfg.Direct = true
	start(t, cli)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := cli.Discover(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := cli.Call(ctx, srv.ID(), "slow", nil)
		errc <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached the handler")
	}
	began := time.Now()
	go srv.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrNotConnected) {
			t.Fatalf("call to a closed agent: %v, want ErrNotConnected", err)
		}
		t.Logf("failed %v after the peer closed", time.Since(began).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the call still waits 5 s after its peer closed")
	}
}

// An agent whose node does not answer says so when its Start gives up: the
// error names how far the connection got, not only the deadline.
func TestStartSaysWhyItCouldNotRegister(t *testing.T) {
	id, err := crypto.GenerateIdentity(nil)
	if err != nil {
		t.Fatal(err)
	}
	// A UDP socket that reads nothing stands in for a node that is down.
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	url := FormatURL(id.Public, silent.LocalAddr().(*net.UDPAddr).AddrPort(), wire.UUID{})
	a, err := NewAgent(AgentConfig{Name: "lonely", Node: url})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err = a.Start(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "has not answered the handshake") {
		t.Fatalf("Start: %v", err)
	}
}
