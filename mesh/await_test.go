package mesh

import (
	"context"
	"sync"
	"testing"
)

// An agent that only calls waits for its replies by running its shard's
// turns itself (the shard lends it its wait): nearly every sequential call
// is one borrow of its engine, and none is lost. An agent that serves
// never lends its wait, so what others send it unasked is read at once:
// its calls borrow nothing, and calls to it meanwhile succeed.
func TestSequentialCallsBorrowTheWait(t *testing.T) {
	tm := newTestMesh(t)
	srv := tm.agent("srv", "echo")
	srv.HandleInline("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	start(t, srv)
	caller := tm.agent("caller")
	caller.cfg.Direct = true
	start(t, caller)
	server := tm.agent("server", "busy")
	server.cfg.Direct = true
	server.Handle("ping", func(context.Context, *Request) ([]byte, error) { return []byte("pong"), nil })
	start(t, server)
	ctx := context.Background()
	for _, a := range []*Agent{caller, server} {
		if _, err := a.Discover(ctx, "echo"); err != nil {
			t.Fatal(err)
		}
	}

	const n = 2000
	body := []byte("0123456789abcdef")
	calls := func(a *Agent) (borrows uint64) {
		t.Helper()
		for range 3 { // dial the direct connection, and let the shard lend
			if _, err := a.Call(ctx, srv.ID(), "echo", body); err != nil {
				t.Fatal(err)
			}
		}
		b0 := a.h.engine().Stats().Borrows
		for i := range n {
			out, err := a.Call(ctx, srv.ID(), "echo", body)
			if err != nil || string(out) != string(body) {
				t.Fatalf("%s: call %d: %q %v", a.cfg.Name, i, out, err)
			}
		}
		return a.h.engine().Stats().Borrows - b0
	}
	if b := calls(caller); b < n/2 {
		t.Errorf("%d of %d sequential calls of an agent that only calls waited by running the shard's turns, want most", b, n)
	}

	// The serving agent calls while the caller calls it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	pings := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, err := caller.Call(ctx, server.ID(), "ping", nil)
			if err != nil || string(out) != "pong" {
				t.Errorf("ping: %q %v", out, err)
				return
			}
			pings++
		}
	}()
	b := calls(server)
	close(stop)
	wg.Wait()
	if b != 0 {
		t.Errorf("an agent that serves lent its shard's wait to %d of its calls", b)
	}
	if pings == 0 {
		t.Error("no call to the serving agent completed while it called")
	}
	t.Logf("%d calls: %d borrows by the serving agent; %d pings to it meanwhile", n, b, pings)
}
