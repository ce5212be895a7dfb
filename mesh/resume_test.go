package mesh

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/wire"
)

// waitTicket waits until the clients' host holds a ticket for the peer at
// url (the responder issues it once the handshake is confirmed).
func waitTicket(t *testing.T, c *Client) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); !c.ch.h.tickets.has(c.target.Key, c.target.Addr); {
		if time.Now().After(end) {
			t.Fatal("no session ticket from the peer")
		}
		time.Sleep(time.Millisecond)
	}
}

// A Client dialled WithZeroRTT after an earlier connection to the same peer
// returns at once and sends its first call inside the handshake's first
// packet; the peer takes it as 0-RTT data and runs it once. Directly and
// through the node.
func TestZeroRTTResumption(t *testing.T) {
	tm := newTestMesh(t)
	srv := tm.agent("server", "echo")
	var runs atomic.Int64
	srv.Handle("echo", func(_ context.Context, r *Request) ([]byte, error) {
		runs.Add(1)
		return append([]byte(nil), r.Body...), nil
	})
	start(t, srv)
	for name, tc := range map[string]struct {
		url  string
		host *host
	}{
		"direct":   {srv.URL(), srv.h},
		"via-node": {FormatURL(tm.node.PublicKey(), tm.node.Addr(), srv.ID()), tm.node.h},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			first := dialT(t, tc.url, WithZeroRTT()) // no ticket yet: a full handshake
			if first.resume {
				t.Fatal("resumed without a ticket")
			}
			if out, err := first.Call(ctx, "echo", []byte("one")); err != nil || string(out) != "one" {
				t.Fatalf("first call: %q %v", out, err)
			}
			waitTicket(t, first)
			taken, ran := tc.host.earlyTaken.Load(), runs.Load()
			c := dialT(t, tc.url, WithZeroRTT())
			if !c.resume {
				t.Fatal("a ticket is held, but Dial ran a handshake")
			}
			body := bytes.Repeat([]byte{7}, 500)
			if out, err := c.Call(ctx, "echo", body); err != nil || !bytes.Equal(out, body) {
				t.Fatalf("0-RTT call: %d bytes, %v", len(out), err)
			}
			if got := tc.host.earlyTaken.Load() - taken; got != 1 || !c.ZeroRTT() || first.ZeroRTT() {
				t.Fatalf("the peer took %d 0-RTT messages, want 1 (client says %v; the first %v)", got, c.ZeroRTT(), first.ZeroRTT())
			}
			if got := runs.Load() - ran; got != 1 {
				t.Fatalf("the handler ran %d times for one call", got)
			}
			// The connection goes on as any other, with a new ticket.
			if out, err := c.Call(ctx, "echo", []byte("two")); err != nil || string(out) != "two" {
				t.Fatalf("call after resuming: %q %v", out, err)
			}
			waitTicket(t, c)
		})
	}
}

// A ticket whose 0-RTT data the peer refuses (here: used before, so the
// strike register has it — as after a replay) costs nothing but the round
// trip: the call goes again under the new keys and runs once.
func TestZeroRTTRefusedIsSentAgain(t *testing.T) {
	_, srv := clientServer(t)
	var runs atomic.Int64
	srv.Handle("count", func(_ context.Context, r *Request) ([]byte, error) {
		runs.Add(1)
		return r.Body, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first := dialT(t, srv.URL())
	if _, err := first.Call(ctx, "echo", nil); err != nil {
		t.Fatal(err)
	}
	waitTicket(t, first)
	st := &first.ch.h.tickets
	st.mu.Lock()
	ts := st.m[ticketPeer{first.target.Key, first.target.Addr}]
	used := *ts[len(ts)-1] // the ticket the next resumption takes
	st.mu.Unlock()
	taken := srv.h.earlyTaken.Load()
	c := dialT(t, srv.URL(), WithZeroRTT())
	if out, err := c.Call(ctx, "count", []byte("a")); err != nil || string(out) != "a" {
		t.Fatalf("0-RTT call: %q %v", out, err)
	}
	// c's own next ticket may be stored after its call returned (the
	// shard drains events after handing over the answer): wait for it, so
	// that the ticket put back below is the one the next dial takes.
	waitTicket(t, c)
	st.put(first.target.Addr, &used) // hand out the same ticket again
	again := dialT(t, srv.URL(), WithZeroRTT())
	if !again.resume {
		t.Fatal("not resuming")
	}
	if out, err := again.Call(ctx, "count", []byte("b")); err != nil || string(out) != "b" {
		t.Fatalf("call whose 0-RTT data was refused: %q %v", out, err)
	}
	if !c.ZeroRTT() || again.ZeroRTT() {
		t.Fatalf("ZeroRTT: %v for the taken call, %v for the refused one", c.ZeroRTT(), again.ZeroRTT())
	}
	if got := srv.h.earlyTaken.Load() - taken; got != 1 {
		t.Fatalf("the peer took %d 0-RTT messages, want 1 (the reused ticket's refused)", got)
	}
	if runs.Load() != 2 {
		t.Fatalf("handler ran %d times for two calls", runs.Load())
	}
}

// With the peer gone, Dial WithZeroRTT still returns at once (it holds a
// ticket); the first Call fails after the handshake timeout, and says why.
func TestZeroRTTPeerGone(t *testing.T) {
	_, srv := clientServer(t)
	url := srv.URL()
	first := dialT(t, url)
	if _, err := first.Call(context.Background(), "echo", nil); err != nil {
		t.Fatal(err)
	}
	waitTicket(t, first)
	srv.Close()
	c, err := Dial(context.Background(), url, WithZeroRTT(), WithHandshakeTimeout(200*time.Millisecond))
	if err != nil {
		t.Fatal("Dial with a ticket:", err)
	}
	defer c.Close()
	start := time.Now()
	_, err = c.Call(context.Background(), "echo", []byte("x"))
	if !errors.Is(err, ErrHandshakeNoAnswer) {
		t.Fatalf("call to a closed peer: %v, want ErrHandshakeNoAnswer", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("it took %v to give up with a 200 ms handshake timeout", d)
	}
}

// A replay attacker on the path sends every datagram of a resumption again
// (the hello with its 0-RTT call, and what follows): the call runs once.
func TestZeroRTTReplayedRunsOnce(t *testing.T) {
	tm := newTestMesh(t)
	srv := tm.agent("server")
	var runs atomic.Int64
	srv.Handle("count", func(_ context.Context, r *Request) ([]byte, error) {
		runs.Add(1)
		return r.Body, nil
	})
	start(t, srv)
	proxy := newReplayProxy(t, srv.h.Addr())
	url := FormatURL(srv.cfg.Identity.Public, netip.MustParseAddrPort(proxy.front.LocalAddr().String()), srv.ID())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	first := dialT(t, url)
	if _, err := first.Call(ctx, "count", []byte("1")); err != nil {
		t.Fatal(err)
	}
	waitTicket(t, first)
	c := dialT(t, url, WithZeroRTT())
	if out, err := c.Call(ctx, "count", []byte("2")); err != nil || string(out) != "2" {
		t.Fatalf("0-RTT call through the replaying proxy: %q %v", out, err)
	}
	if !c.ZeroRTT() {
		t.Fatal("the call did not go as 0-RTT data")
	}
	time.Sleep(100 * time.Millisecond) // every replay has arrived (20 ms behind)
	if n := runs.Load(); n != 2 {
		t.Fatalf("the handler ran %d times for two calls, each datagram sent twice", n)
	}
	// Later, with the connection gone at the server, the resuming hello
	// once more, straight to the server: a new handshake, whose 0-RTT data
	// the strike register refuses.
	var hello []byte
	for _, d := range proxy.sent() {
		if len(d) >= 1200 && d[wire.PacketOffsetFlags]&wire.PacketFlagHandshake != 0 {
			hello = d // the last hello the client sent: the resuming one
		}
	}
	if hello == nil {
		t.Fatal("no hello seen")
	}
	c.Close()
	first.Close()
	refused := func() (n uint64) {
		for _, sh := range srv.h.shards {
			es, _, _ := sh.snapshot()
			n += es.EarlyRefused
		}
		return n
	}
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, conns, _ := srv.h.shards[0].snapshot()
		if conns <= 1 { // the one to the node
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the server still has %d connections after both clients closed", conns)
		}
	}
	before := refused()
	raw, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv.h.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write(hello); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(2 * time.Second); refused() == before && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	if refused() != before+1 || runs.Load() != 2 {
		t.Fatalf("a replayed resuming hello: refused %d -> %d, handler runs %d (want one refusal, 2 runs)", before, refused(), runs.Load())
	}
}
