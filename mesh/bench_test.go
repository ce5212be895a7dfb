package mesh

import (
	"context"
	"sync"
	"testing"

	"github.com/mxp-dataplane/mxp/dataplane"
)

// benchPair starts a test mesh with a server agent answering "echo" (a
// goroutine per call) and "echo-inline" (HandleInline), and a client agent
// that calls it through the node, or directly when direct is set.
func benchPair(b *testing.B, direct bool) (srv, cli *Agent) {
	b.Helper()
	tm := newTestMesh(&testing.T{})
	b.Cleanup(func() { tm.node.Close() })
	srv = tm.agent("srv", "echo")
	srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	srv.HandleInline("echo-inline", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	cli = tm.agent("cli")
	cli.cfg.Direct = direct
	ctx := context.Background()
	for _, a := range []*Agent{srv, cli} {
		if err := a.Start(ctx); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { a.Close() })
	}
	if _, err := cli.Discover(ctx, "echo"); err != nil {
		b.Fatal(err)
	}
	if _, err := cli.Call(ctx, srv.ID(), "echo", nil); err != nil { // dials a direct connection
		b.Fatal(err)
	}
	return srv, cli
}

var benchRoutes = []struct {
	name   string
	direct bool
}{{"node", false}, {"direct", true}}

var benchMethods = []string{"echo", "echo-inline"}

// reportHostStats starts counting the hosts' packets, system calls and
// parks; the function it returns reports them per call (and calls/s) for
// the calls made since.
func reportHostStats(b *testing.B, hosts []*host) func(calls int) {
	sum := func() (s dataplane.Stats) {
		for _, h := range hosts {
			s = s.Add(h.engine().Stats())
		}
		return s
	}
	s0 := sum()
	return func(calls int) {
		d := sum().Sub(s0)
		n := float64(calls)
		b.ReportMetric(n/b.Elapsed().Seconds(), "calls/s")
		b.ReportMetric(float64(d.TxPackets)/n, "agent-txpkts/call")
		b.ReportMetric(float64(d.TxCalls)/n, "agent-sendcalls/call")
		b.ReportMetric(float64(d.RxCalls)/n, "agent-recvcalls/call")
		b.ReportMetric(float64(d.Wakeups)/n, "agent-parks/call")
		b.ReportMetric(float64(d.Borrows)/n, "agent-awaits/call")
	}
}

// benchCalls runs body for each route (through the node, direct) and
// method (goroutine handler, inline), with call making one 1 KiB call from
// one agent to the other, and reports the packets, system calls, parks and
// awaits per call of both hosts; body returns how many calls it made.
func benchCalls(b *testing.B, body func(b *testing.B, call func() error) int) {
	for _, route := range benchRoutes {
		srv, cli := benchPair(b, route.direct)
		hosts := []*host{srv.h, cli.h}
		payload := make([]byte, 1024)
		for _, method := range benchMethods {
			b.Run(route.name+"/"+method, func(b *testing.B) {
				call := func() error {
					_, err := cli.Call(context.Background(), srv.ID(), method, payload)
					return err
				}
				done := reportHostStats(b, hosts)
				b.ReportAllocs()
				n := body(b, call)
				b.StopTimer()
				done(n)
			})
		}
	}
}

// BenchmarkCalls64: 1 KiB calls from 64 goroutines of one agent to another
// over one connection.
func BenchmarkCalls64(b *testing.B) {
	benchCalls(b, func(b *testing.B, call func() error) int {
		var wg sync.WaitGroup
		per := b.N/64 + 1
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range per {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return per * 64
	})
}

// BenchmarkCallSequential: 1 KiB calls one after another over one
// connection.
func BenchmarkCallSequential(b *testing.B) {
	benchCalls(b, func(b *testing.B, call func() error) int {
		for range b.N {
			if err := call(); err != nil {
				b.Fatal(err)
			}
		}
		return b.N
	})
}
