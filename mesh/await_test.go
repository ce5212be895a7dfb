package mesh

import (
	"context"
	"sync"
	"testing"
	"time"
)

// A caller making calls one after another waits for its replies by running
// its shard's turns itself (the shard lends it its wait): nearly every call
// is one borrow of the client's engine, none is lost, and the agent still
// serves the calls others make to it meanwhile, and its stream.
func TestSequentialCallsBorrowTheWait(t *testing.T) {
	tm := newTestMesh(t)
	srv := tm.agent("srv", "echo")
	srv.HandleInline("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	start(t, srv)
	cli := tm.agent("cli", "busy")
	cli.cfg.Direct = true
	cli.Handle("ping", func(context.Context, *Request) ([]byte, error) { return []byte("pong"), nil })
	start(t, cli)
	other := tm.agent("other")
	start(t, other)
	ctx := context.Background()
	if _, err := cli.Discover(ctx, "echo"); err != nil {
		t.Fatal(err)
	}
	for range 3 { // dial the direct connection, and let the shard lend
		if _, err := cli.Call(ctx, srv.ID(), "echo", []byte("warm")); err != nil {
			t.Fatal(err)
		}
	}

	// Others call the busy caller meanwhile.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var slowest time.Duration
	var pings int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			t0 := time.Now()
			out, err := other.Call(ctx, cli.ID(), "ping", nil)
			if err != nil || string(out) != "pong" {
				t.Errorf("ping: %q %v", out, err)
				return
			}
			slowest = max(slowest, time.Since(t0))
			pings++
			time.Sleep(time.Millisecond)
		}
	}()

	const n = 2000
	b0 := cli.h.engine.Stats().Borrows
	body := []byte("0123456789abcdef")
	for i := range n {
		out, err := cli.Call(ctx, srv.ID(), "echo", body)
		if err != nil || string(out) != string(body) {
			t.Fatalf("call %d: %q %v", i, out, err)
		}
	}
	borrows := cli.h.engine.Stats().Borrows - b0
	close(stop)
	wg.Wait()
	if borrows < n/2 {
		t.Errorf("%d of %d sequential calls waited by running the shard's turns, want most", borrows, n)
	}
	if pings == 0 {
		t.Error("no call to the busy caller completed meanwhile")
	}
	if slowest > time.Second {
		t.Errorf("a call to the busy caller took %v", slowest)
	}
	t.Logf("%d calls: %d borrows; %d pings to the caller meanwhile, slowest %v", n, borrows, pings, slowest)
}
