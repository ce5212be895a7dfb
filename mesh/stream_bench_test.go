package mesh

import (
	"context"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/dataplane"
)

// tokenPair is a stream server ("gen": sends the number of 16-byte tokens
// its request names) and a client, through a node or direct.
type tokenPair struct {
	tm       *testMesh
	srv, cli *Agent
	ownNode  bool // close stops the node (no test cleanup does)
}

func newTokenPair(tb testing.TB, direct bool) *tokenPair {
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
	cli := tm.agent("cli")
	cli.cfg.Direct = direct
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, a := range []*Agent{srv, cli} {
		if err := a.Start(ctx); err != nil {
			tb.Fatal(err)
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

// stats is what the dataplanes of the agents and the node did.
func (p *tokenPair) stats() dataplane.Stats {
	return p.cli.h.engine.Stats().Add(p.srv.h.engine.Stats()).Add(p.tm.node.h.engine.Stats())
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

func benchTokens(b *testing.B, direct bool) {
	p := newTokenPair(b, direct)
	defer p.close()
	ctx := context.Background()
	// Warm up: the connections' congestion windows, the buffers.
	s, err := p.cli.OpenStream(ctx, p.srv.ID(), "gen", encodeCount(100000))
	if err != nil {
		b.Fatal(err)
	}
	receiveTokens(b, s, 100000)
	s.CloseSend()
	s0 := p.stats()
	b.ReportAllocs()
	b.ResetTimer()
	s, err = p.cli.OpenStream(ctx, p.srv.ID(), "gen", encodeCount(b.N))
	if err != nil {
		b.Fatal(err)
	}
	receiveTokens(b, s, b.N)
	b.StopTimer()
	s.CloseSend()
	s1 := p.stats()
	n := float64(b.N)
	b.ReportMetric(n/b.Elapsed().Seconds(), "tokens/s")
	b.ReportMetric(float64(s1.TxPackets-s0.TxPackets)/n, "txpkts/tok")
	b.ReportMetric(float64(s1.TxCalls-s0.TxCalls+s1.RxCalls-s0.RxCalls)/n, "syscalls/tok")
	b.ReportMetric(float64(s1.Wakeups-s0.Wakeups)/n, "wakeups/tok")
}

// BenchmarkStreamTokens: 16-byte tokens on one stream, agent → node →
// agent, over loopback UDP; the packets, system calls and wake-ups are the
// three hosts' together.
func BenchmarkStreamTokens(b *testing.B) { benchTokens(b, false) }

// BenchmarkStreamTokensDirect: the same, agent → agent (one hop, no node).
func BenchmarkStreamTokensDirect(b *testing.B) { benchTokens(b, true) }
