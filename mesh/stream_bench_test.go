package mesh

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/wire"
)

// tokenPair is a stream server ("gen": sends the number of 16-byte tokens
// its request names) and a client, through a node or direct.
type tokenPair struct {
	tm       *testMesh
	srv, cli *Agent
	ownNode  bool // close stops the node (no test cleanup does)
}

// Placement of the two agents' connections on the node's two shards.
const (
	anyShards   = iota
	sameShard   // the node relays on one shard
	crossShards // the node hands each message from one shard to the other
)

func newTokenPair(tb testing.TB, direct bool) *tokenPair {
	return newTokenPairOn(tb, direct, anyShards)
}

// nodeShard is the node shard that serves a's connection.
func nodeShard(a *Agent) int {
	ch := make(chan uint64, 1)
	a.sh.do(func(time.Time) { ch <- a.conn.ConnID() })
	return wire.ConnIDShard(<-ch, 2)
}

func newTokenPairOn(tb testing.TB, direct bool, place int) *tokenPair {
	tb.Helper()
	t, ok := tb.(*testing.T)
	if !ok {
		t = &testing.T{} // newTestMesh's cleanups never run: close by hand
	}
	tm := newTestMesh(t)
	srv := tm.agent("srv", "gen")
	srv.HandleStream("gen", func(_ context.Context, r *Request, s *Stream) error {
		n := decodeCount(r.Body)
		tok := make([]byte, 16)
		for i := range n {
			tok[0], tok[1], tok[2], tok[3] = byte(i), byte(i>>8), byte(i>>16), byte(i>>24)
			if err := s.Send(tok); err != nil {
				return err
			}
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	var cli *Agent
	for try := 0; ; try++ {
		cli = tm.agent("cli")
		cli.cfg.Direct = direct
		if err := cli.Start(ctx); err != nil {
			tb.Fatal(err)
		}
		same := nodeShard(cli) == nodeShard(srv)
		if place == anyShards || same == (place == sameShard) {
			break
		}
		cli.Close()
		if try == 30 {
			tb.Fatal("no client agent on the wanted node shard in 30 tries")
		}
	}
	if direct {
		if _, err := cli.Discover(ctx, "gen"); err != nil {
			tb.Fatal(err)
		}
	}
	return &tokenPair{tm: tm, srv: srv, cli: cli, ownNode: !ok}
}

func (p *tokenPair) close() {
	p.cli.Close()
	p.srv.Close()
	if p.ownNode {
		p.tm.node.Close()
	}
}

func encodeCount(n int) []byte {
	return []byte{byte(n), byte(n >> 8), byte(n >> 16), byte(n >> 24), byte(n >> 32)}
}

func decodeCount(b []byte) int {
	n := 0
	for i := len(b) - 1; i >= 0; i-- {
		n = n<<8 | int(b[i])
	}
	return n
}

// cpuTime is the CPU time the process spent so far (user and system):
// per token, a figure other load on the machine does not inflate as much
// as the elapsed time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// stats is what the dataplanes of the agents and the node did.
func (p *tokenPair) stats() dataplane.Stats {
	return p.cli.h.engine().Stats().Add(p.srv.h.engine().Stats()).Add(p.tm.node.h.engine().Stats())
}

// receive reads n tokens and EOF from s, checking their order.
func receiveTokens(tb testing.TB, s *Stream, n int) {
	for i := range n {
		tok, err := s.Recv()
		if err != nil {
			tb.Fatalf("token %d of %d: %v", i, n, err)
		}
		if len(tok) != 16 || int(tok[0])|int(tok[1])<<8|int(tok[2])<<16|int(tok[3])<<24 != i&0xFFFFFFFF {
			tb.Fatalf("token %d: got %x", i, tok)
		}
	}
	if _, err := s.Recv(); err == nil {
		tb.Fatalf("more than %d tokens", n)
	}
}

func benchTokens(b *testing.B, direct bool, place int) {
	p := newTokenPairOn(b, direct, place)
	defer p.close()
	ctx := context.Background()
	// Warm up: the connections' congestion windows, the buffers.
	s, err := p.cli.OpenStream(ctx, p.srv.ID(), "gen", encodeCount(100000))
	if err != nil {
		b.Fatal(err)
	}
	receiveTokens(b, s, 100000)
	s.CloseSend()
	s0, cpu0 := p.stats(), cpuTime()
	b.ReportAllocs()
	b.ResetTimer()
	s, err = p.cli.OpenStream(ctx, p.srv.ID(), "gen", encodeCount(b.N))
	if err != nil {
		b.Fatal(err)
	}
	receiveTokens(b, s, b.N)
	b.StopTimer()
	s.CloseSend()
	s1, cpu1 := p.stats(), cpuTime()
	n := float64(b.N)
	b.ReportMetric(float64(cpu1-cpu0)/n, "cpu-ns/tok")
	b.ReportMetric(n/b.Elapsed().Seconds(), "tokens/s")
	d := s1.Sub(s0)
	b.ReportMetric(float64(d.TxPackets)/n, "txpkts/tok")
	b.ReportMetric(float64(d.TxCalls+d.RxCalls)/n, "syscalls/tok")
	b.ReportMetric(float64(d.Wakeups)/n, "wakeups/tok")
}

// BenchmarkStreamTokens: 16-byte tokens on one stream, agent → node →
// agent, over loopback UDP; the packets, system calls and wake-ups are the
// three hosts' together. The node has two shards: the agents' connections
// on one (same) or on both (cross: every message changes shards).
func BenchmarkStreamTokens(b *testing.B) {
	b.Run("same", func(b *testing.B) { benchTokens(b, false, sameShard) })
	b.Run("cross", func(b *testing.B) { benchTokens(b, false, crossShards) })
}

// BenchmarkStreamTokensDirect: the same, agent → agent (one hop, no node).
func BenchmarkStreamTokensDirect(b *testing.B) { benchTokens(b, true, anyShards) }
