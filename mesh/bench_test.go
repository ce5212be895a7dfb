package mesh

import (
	"context"
	"sync"
	"testing"
)

// BenchmarkCalls64: 1 KiB calls from 64 goroutines of one agent to another,
// through a node, over loopback UDP.
func BenchmarkCalls64(b *testing.B) {
	tm := newTestMesh(&testing.T{})
	defer tm.node.Close()
	srv := tm.agent("srv", "echo")
	srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	srv.HandleInline("echo-inline", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	cli := tm.agent("cli")
	ctx := context.Background()
	for _, a := range []*Agent{srv, cli} {
		if err := a.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer a.Close()
	}
	payload := make([]byte, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N/64 + 1
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				if _, err := cli.Call(ctx, srv.ID(), "echo", payload); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(per*64)/b.Elapsed().Seconds(), "calls/s")
}

// BenchmarkCallSequential: 1 KiB calls one after another, agent -> node -> agent.
func BenchmarkCallSequential(b *testing.B) {
	tm := newTestMesh(&testing.T{})
	defer tm.node.Close()
	srv := tm.agent("srv", "echo")
	srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	srv.HandleInline("echo-inline", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	cli := tm.agent("cli")
	ctx := context.Background()
	for _, a := range []*Agent{srv, cli} {
		if err := a.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer a.Close()
	}
	payload := make([]byte, 1024)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := cli.Call(ctx, srv.ID(), "echo", payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTokenStream: 16-byte tokens from one agent to another over a
// stream through the node.
func BenchmarkTokenStream(b *testing.B) {
	tm := newTestMesh(&testing.T{})
	defer tm.node.Close()
	srv := tm.agent("srv", "gen")
	n := b.N
	srv.HandleStream("gen", func(_ context.Context, _ *Request, s *Stream) error {
		tok := make([]byte, 16)
		for range n {
			if err := s.Send(tok); err != nil {
				return err
			}
		}
		return nil
	})
	cli := tm.agent("cli")
	ctx := context.Background()
	for _, a := range []*Agent{srv, cli} {
		if err := a.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer a.Close()
	}
	b.ReportAllocs()
	b.ResetTimer()
	s, err := cli.OpenStream(ctx, srv.ID(), "gen", nil)
	if err != nil {
		b.Fatal(err)
	}
	got := 0
	for {
		if _, err := s.Recv(); err != nil {
			break
		}
		got++
	}
	if got != n {
		b.Fatalf("%d of %d tokens", got, n)
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkCallsDirect64: 1 KiB calls from 64 goroutines of one agent
// straight to another (one hop, one connection), with the packets and
// system calls per call both hosts spent.
func BenchmarkCallsDirect64(b *testing.B) {
	tm := newTestMesh(&testing.T{})
	defer tm.node.Close()
	srv := tm.agent("srv", "echo")
	srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	srv.HandleInline("echo-inline", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	cli := tm.agent("cli")
	cli.cfg.Direct = true
	ctx := context.Background()
	for _, a := range []*Agent{srv, cli} {
		if err := a.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer a.Close()
	}
	if _, err := cli.Discover(ctx, "echo"); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 1024)
	if _, err := cli.Call(ctx, srv.ID(), "echo", payload); err != nil {
		b.Fatal(err)
	}
	for _, method := range []string{"echo", "echo-inline"} {
		b.Run(method, func(b *testing.B) {
			s0 := cli.h.engine.Stats().Add(srv.h.engine.Stats())
			b.ReportAllocs()
			var wg sync.WaitGroup
			per := b.N/64 + 1
			for range 64 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range per {
						if _, err := cli.Call(ctx, srv.ID(), method, payload); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			s1 := cli.h.engine.Stats().Add(srv.h.engine.Stats())
			calls := float64(per * 64)
			b.ReportMetric(calls/b.Elapsed().Seconds(), "calls/s")
			b.ReportMetric(float64(s1.TxPackets-s0.TxPackets)/calls, "txpkts/call")
			b.ReportMetric(float64(s1.TxCalls-s0.TxCalls)/calls, "sendcalls/call")
			b.ReportMetric(float64(s1.RxCalls-s0.RxCalls)/calls, "recvcalls/call")
			b.ReportMetric(float64(s1.Wakeups-s0.Wakeups)/calls, "wakeups/call")
		})
	}
}

// BenchmarkCallDirectSequential: 1 KiB calls one after another, agent ->
// agent over one direct connection.
func BenchmarkCallDirectSequential(b *testing.B) {
	tm := newTestMesh(&testing.T{})
	defer tm.node.Close()
	srv := tm.agent("srv", "echo")
	srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	srv.HandleInline("echo-inline", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	cli := tm.agent("cli")
	cli.cfg.Direct = true
	ctx := context.Background()
	for _, a := range []*Agent{srv, cli} {
		if err := a.Start(ctx); err != nil {
			b.Fatal(err)
		}
		defer a.Close()
	}
	if _, err := cli.Discover(ctx, "echo"); err != nil {
		b.Fatal(err)
	}
	payload := make([]byte, 1024)
	if _, err := cli.Call(ctx, srv.ID(), "echo", payload); err != nil {
		b.Fatal(err)
	}
	for _, method := range []string{"echo", "echo-inline"} {
		b.Run(method, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := cli.Call(ctx, srv.ID(), method, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
