package mesh

import (
	"context"
	"crypto/rand"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
)

// replayProxy relays one client's datagrams to the node and, 20 ms later,
// sends each again: a replay attacker on the path.
type replayProxy struct {
	front *net.UDPConn // the agent talks to this
	back  *net.UDPConn // this talks to the node
	wg    sync.WaitGroup

	mu   sync.Mutex
	seen [][]byte // what the client sent, in order
}

// sent returns a copy of what the client sent so far.
func (p *replayProxy) sent() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.seen...)
}

func newReplayProxy(t *testing.T, node netip.AddrPort) *replayProxy {
	front, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(node))
	if err != nil {
		t.Fatal(err)
	}
	p := &replayProxy{front: front, back: back}
	var client net.Addr
	var mu sync.Mutex
	p.wg.Add(2)
	go func() { // agent -> node, and the replays
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			client = from
			mu.Unlock()
			pkt := append([]byte(nil), buf[:n]...)
			p.mu.Lock()
			p.seen = append(p.seen, pkt)
			p.mu.Unlock()
			back.Write(pkt)
			time.AfterFunc(20*time.Millisecond, func() { back.Write(pkt) })
		}
	}()
	go func() { // node -> agent
		defer p.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			c := client
			mu.Unlock()
			if c != nil {
				front.WriteTo(buf[:n], c)
			}
		}
	}()
	t.Cleanup(func() { front.Close(); back.Close(); p.wg.Wait() })
	return p
}

// Garbage, replays, oversized datagrams and a handshake with the wrong key
// are dropped and counted while honest agents' calls keep succeeding.
func TestHostileTrafficIsDroppedAndCounted(t *testing.T) {
	tm := newTestMesh(t)
	srv := tm.agent("server", "echo")
	srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) { return r.Body, nil })
	start(t, srv)

	// An honest agent whose every datagram is replayed by the proxy.
	proxy := newReplayProxy(t, tm.node.Addr())
	replayed, err := NewAgent(AgentConfig{Name: "replayed", Node: FormatURL(tm.node.PublicKey(), netip.MustParseAddrPort(proxy.front.LocalAddr().String()), [16]byte{}), HeartbeatInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start(t, replayed)

	// The attacker: garbage, oversized datagrams, and a hello to the wrong key.
	atk, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(tm.node.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer atk.Close()
	stopAttack := make(chan struct{})
	var attackWG sync.WaitGroup
	attackWG.Add(1)
	go func() {
		defer attackWG.Done()
		junk := make([]byte, 1200)
		big := make([]byte, 60000)
		for i := 0; ; i++ {
			select {
			case <-stopAttack:
				return
			default:
			}
			rand.Read(junk)
			junk[16] &^= 0x01 // looks like a protected packet
			atk.Write(junk[:1+i%1200])
			if i%10 == 0 {
				atk.Write(big)
			}
			if i%50 == 0 {
				junk[16] |= 0x01 // a "handshake" that is not one
				atk.Write(junk)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	wrongKey, _ := crypto.GenerateIdentity(nil)
	impostor, err := NewAgent(AgentConfig{Name: "impostor", Node: FormatURL(wrongKey.Public, tm.node.Addr(), [16]byte{})})
	if err != nil {
		t.Fatal(err)
	}
	ictx, icancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	if err := impostor.Start(ictx); err == nil {
		t.Fatal("an agent expecting the wrong node key registered")
	}
	icancel()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 300 {
		for _, a := range []*Agent{replayed} {
			out, err := a.Call(ctx, srv.ID(), "echo", []byte{byte(i)})
			if err != nil || len(out) != 1 || out[0] != byte(i) {
				t.Fatalf("call %d under attack: %q %v", i, out, err)
			}
		}
	}
	close(stopAttack)
	attackWG.Wait()

	var unknown, badHS uint64
	for _, sh := range tm.node.h.shards {
		st, _, ok := sh.snapshot()
		if !ok {
			t.Fatal("no snapshot")
		}
		unknown += st.UnknownConn
		badHS += st.BadHandshake
	}
	var replaysDropped uint64
	for _, sh := range tm.node.h.shards {
		ch := make(chan uint64, 1)
		sh.do(func(time.Time) {
			var n uint64
			for _, c := range sh.ep.Conns() {
				n += c.Stats().PacketsDropped
			}
			ch <- n
		})
		replaysDropped += <-ch
	}
	t.Logf("dropped: %d unknown-connection packets, %d bad handshakes, %d replayed packets", unknown, badHS, replaysDropped)
	if unknown == 0 || badHS == 0 || replaysDropped == 0 {
		t.Fatalf("attack not counted: unknown %d, bad handshake %d, replays %d", unknown, badHS, replaysDropped)
	}
}
