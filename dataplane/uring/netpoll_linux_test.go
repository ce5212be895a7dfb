package uring

import (
	"context"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/dptest"
	"github.com/mxp-dataplane/mxp/testnet"
)

// openOne opens one shard on loopback with b and cfg.
func openOne(t *testing.T, b *Backend, cfg dataplane.Config) *shardConn {
	t.Helper()
	return dptest.OpenOne(t, b, cfg).(*shardConn)
}

// sendTo sends n datagrams of 100 bytes to dst from a plain socket.
func sendTo(t *testing.T, dst netip.AddrPort, n int) {
	t.Helper()
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	b := make([]byte, 100)
	for i := range n {
		dptest.FillPattern(b, uint64(i))
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
	}
}

// receiveAll receives n datagrams with Recv and Wait (no deadline, as the
// engine waits), failing after limit.
func receiveAll(t *testing.T, c *shardConn, n int, limit time.Duration) {
	t.Helper()
	pkts := make([]dataplane.Packet, 64)
	got := 0
	for start := time.Now(); got < n; {
		if time.Since(start) > limit {
			t.Fatalf("received %d of %d datagrams in %v", got, n, limit)
		}
		k, err := c.Recv(pkts)
		if err != nil {
			t.Fatal(err)
		}
		got += k
		c.Release(pkts[:k])
		if k == 0 {
			if err := c.Wait(time.Now().Add(limit), time.Time{}); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// By default a shard waits in the network poller on its socket and may
// move between threads, its receives draining the socket without waiting;
// ThreadPerShard, Pin and SQPoll keep a thread, a multishot receive armed
// and the eventfd wake read.
func TestNetpollIsTheDefault(t *testing.T) {
	requireURing(t)
	c := openOne(t, &Backend{}, dataplane.Config{})
	if f, _ := FeaturesOf(c); !f.Netpoll || len(f.Disabled) != 0 || c.ThreadAffine() || !c.rx.drain {
		t.Errorf("default shard: netpoll %v, disabled %v, thread-affine %v, drain %v", f.Netpoll, f.Disabled, c.ThreadAffine(), c.rx.drain)
	}
	for _, tc := range []struct {
		b   *Backend
		cfg dataplane.Config
	}{{&Backend{ThreadPerShard: true}, dataplane.Config{}}, {&Backend{}, dataplane.Config{Pin: true}}, {&Backend{SQPoll: true}, dataplane.Config{}}} {
		c := openOne(t, tc.b, tc.cfg)
		if f, _ := FeaturesOf(c); f.Netpoll || !c.ThreadAffine() || c.rx.drain {
			t.Errorf("%+v %+v: netpoll %v, thread-affine %v, drain %v", *tc.b, tc.cfg, f.Netpoll, c.ThreadAffine(), c.rx.drain)
		}
	}
}

// A request that waits for its socket belongs to the thread that submitted
// it, which runs its task work. The shard's goroutine moves between threads
// and the thread that first received may sleep (parked by the Go
// scheduler, in futex), compute without entering the kernel, or exit:
// datagrams must still arrive, and no receive is left waiting in the ring
// for that thread to run (each drains the socket and ends within its
// io_uring_enter).
func TestCompletionsWhenTheArmingThreadIsElsewhere(t *testing.T) {
	requireURing(t)
	for _, mode := range []string{"sleeps", "spins", "exits"} {
		t.Run(mode, func(t *testing.T) {
			c := openOne(t, &Backend{}, dataplane.Config{DisableGRO: true})
			armed := make(chan int)
			release := make(chan struct{})
			var stop atomic.Bool
			done := make(chan struct{})
			go func() {
				defer close(done)
				runtime.LockOSThread()
				pkts := make([]dataplane.Packet, 8)
				if _, err := c.Recv(pkts); err != nil { // arms the receive on this thread
					t.Error(err)
				}
				armed <- unix.Gettid()
				switch mode {
				case "sleeps":
					<-release
				case "spins":
					for x := 0; !stop.Load(); x++ {
					}
				case "exits":
					return // still locked: the thread exits with the goroutine
				}
				runtime.UnlockOSThread()
			}()
			armer := <-armed
			if mode == "exits" {
				<-done
			}
			// Receive on this goroutine, on other threads than the armer's
			// (checked: a goroutine locked to a thread shares it with no one).
			for round := range 5 {
				var tid int
				ok := make(chan struct{})
				go func() {
					defer close(ok)
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
					tid = unix.Gettid()
					sendTo(t, c.LocalAddr(), 50)
					receiveAll(t, c, 50, 5*time.Second)
				}()
				<-ok
				if tid == armer {
					t.Fatalf("round %d ran on the arming thread", round)
				}
				if t.Failed() {
					return
				}
			}
			stop.Store(true)
			close(release)
			<-done
			if got := c.Stats().RxPackets; got != 250 {
				t.Errorf("RxPackets %d, want 250", got)
			}
			checkAccounting(t, c)
			if c.rx.armed {
				t.Error("a receive is still in flight after Recv")
			}
			if c.rx.arms < 5 {
				t.Errorf("%d receives for 5 rounds", c.rx.arms)
			}
		})
	}
}

// A Wake reaches a parked shard quickly: the time from Wake to Wait's
// return, over many rounds, has a bounded median and maximum.
func TestWakeLatency(t *testing.T) {
	requireURing(t)
	for _, b := range []*Backend{{}, {ThreadPerShard: true}} {
		t.Run(mode(b), func(t *testing.T) {
			c := openOne(t, b, dataplane.Config{})
			lat := make([]time.Duration, 0, 200)
			for range cap(lat) {
				// Settle: consume a wake-up left by the previous round.
				c.Wait(time.Now().Add(time.Millisecond), time.Time{})
				var woke atomic.Int64
				go func() {
					time.Sleep(200 * time.Microsecond)
					woke.Store(time.Now().UnixNano())
					c.Wake()
				}()
				if err := c.Wait(time.Now().Add(5*time.Second), time.Time{}); err != nil {
					t.Fatal(err)
				}
				end := time.Now().UnixNano()
				for woke.Load() == 0 { // returned early (a stale completion): wait for the Wake
					if err := c.Wait(time.Now().Add(5*time.Second), time.Time{}); err != nil {
						t.Fatal(err)
					}
					end = time.Now().UnixNano()
				}
				lat = append(lat, time.Duration(end-woke.Load()))
			}
			slices.Sort(lat)
			p50, worst := lat[len(lat)/2], lat[len(lat)-1]
			t.Logf("Wake to Wait return: p50 %v, p90 %v, max %v", p50, lat[len(lat)*9/10], worst)
			if p50 > 2*time.Millisecond || worst > time.Second {
				t.Errorf("Wake to Wait return: p50 %v, max %v", p50, worst)
			}
		})
	}
}

func mode(b *Backend) string {
	if b.ThreadPerShard {
		return "thread"
	}
	return "netpoll"
}

// No Wake is lost: goroutines hand the shard work and Wake it, many times
// and concurrently, while the shard takes the work and waits with no
// deadline but a watchdog's. A Wait that lasts until the watchdog while work
// is pending lost a wake-up.
func TestNoLostWakeups(t *testing.T) {
	requireURing(t)
	for _, b := range []*Backend{{}, {ThreadPerShard: true}} {
		t.Run(mode(b), func(t *testing.T) {
			c := openOne(t, b, dataplane.Config{})
			const wakers, each = 4, 20000
			var pending atomic.Int64
			var wg sync.WaitGroup
			for w := range wakers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						pending.Add(1)
						c.Wake()
						if (i+w)%64 == 0 {
							time.Sleep(time.Duration(i%7) * time.Microsecond)
						}
					}
				}()
			}
			const watchdog = 3 * time.Second
			taken, waits := int64(0), 0
			for taken < wakers*each {
				taken += pending.Swap(0)
				if taken == wakers*each {
					break
				}
				start := time.Now()
				if err := c.Wait(start.Add(watchdog), time.Time{}); err != nil {
					t.Fatal(err)
				}
				waits++
				if time.Since(start) >= watchdog && pending.Load() > 0 {
					t.Fatalf("Wait slept %v with %d work items handed over: a Wake was lost (%d of %d taken)", watchdog, pending.Load(), taken, wakers*each)
				}
			}
			wg.Wait()
			t.Logf("%d work items taken in %d waits", taken, waits)
		})
	}
}

// The old mode still carries traffic through the engine.
func TestThreadPerShardPingPong(t *testing.T) {
	requireURing(t)
	cfg := dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0)}
	b := &Backend{ThreadPerShard: true}
	r := dptest.PingPong(t, b, cfg, &Backend{}, cfg, 1200, 20000)
	if r.Server.RxPackets != 20000 || r.Server.TxPackets != 20000 {
		t.Fatalf("server counters %+v", r.Server)
	}
}

// A shard that parks with sends in flight reaps their completions while
// parked (its counters and chunks catch up, at least every sendWaitMax);
// and a shard whose chunks were all in flight (TxBuffers gave none) returns
// from Wait when one is free, without spinning. The sender's link is throttled
// (a tbf qdisc) and its socket buffer small, so most sends wait in io_uring
// for room and complete long after Send.
func TestParkedWithSendsInFlight(t *testing.T) {
	testnet.Require(t)
	requireURing(t)
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("tc not installed")
	}
	topo := testnet.NewT(t, testnet.Config{Prefix: "mxpuringtx"})
	a, b := topo.Hosts[0], topo.Hosts[1]
	if out, err := a.Exec(context.Background(), "tc", "qdisc", "add", "dev", a.Link, "root", "tbf", "rate", "20mbit", "burst", "15000", "limit", "10000000"); err != nil {
		t.Skipf("tbf qdisc: %v: %s", err, out)
	}
	conns, err := (&dptest.InNetns{Backend: &Backend{}, Host: a}).Open(dataplane.Config{
		Addr: netip.AddrPortFrom(a.IPv4, 0), DisableGSO: true, SocketBuffer: 32 << 10})
	if err != nil {
		t.Fatal(err)
	}
	c := conns[0].(*shardConn)
	t.Cleanup(func() { c.Close() })
	dst := netip.AddrPortFrom(b.IPv4, 9) // nothing listens: the datagrams are dropped there
	tx := make([]dataplane.Packet, 64)
	send := func() {
		t.Helper()
		n := c.TxBuffers(tx)
		if n != len(tx) {
			t.Fatalf("%d send buffers", n)
		}
		for i := range n {
			tx[i].Buf, tx[i].Addr = tx[i].Buf[:1200], dst
		}
		if _, err := c.Send(tx[:n]); err != nil {
			t.Fatal(err)
		}
	}

	send()
	c.reap()
	if c.tx.idle() {
		t.Fatal("every send completed at once: the link is not throttled enough to test waiting")
	}
	counted := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		for c.Stats().TxPackets < 64 && time.Since(start) < 5*time.Second {
			time.Sleep(100 * time.Microsecond)
		}
		counted <- time.Since(start)
		c.Wake()
	}()
	var d time.Duration
	waits := 0
wait: // Wait may return early (a stale wake read): wait again, as the engine does
	for {
		if err := c.Wait(start.Add(10*time.Second), time.Time{}); err != nil {
			t.Fatal(err)
		}
		waits++
		select {
		case d = <-counted:
			break wait
		default:
		}
	}
	if d >= 5*time.Second {
		t.Fatalf("%d of 64 sends counted after %v in Wait", c.Stats().TxPackets, d)
	}
	if limit := int(d/sendWaitMax) + 10; waits > limit {
		t.Errorf("%d Wait calls in %v: Wait returns at once with sends in flight instead of parking", waits, d)
	}
	t.Logf("64 throttled sends counted %v after Send, reaped by a parked Wait (%d waits)", d, waits)

	// Every chunk in flight: the one sent, the others pretended.
	others := append([]int(nil), c.tx.free...)
	c.tx.free = others[len(others)-1:]
	send()
	if n := c.TxBuffers(tx); n != 0 {
		t.Fatalf("%d buffers with every chunk in flight", n)
	}
	start, waits = time.Now(), 0
	for len(c.tx.free) == 0 {
		if err := c.Wait(start.Add(10*time.Second), time.Time{}); err != nil {
			t.Fatal(err)
		}
		waits++
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Wait with every chunk in flight still waiting after %v", d)
		}
	}
	if limit := int(time.Since(start)/sendWaitMax) + 10; waits > limit {
		t.Errorf("%d Wait calls in %v: Wait returns at once with every chunk in flight instead of waiting", waits, time.Since(start))
	}
	t.Logf("a chunk came back after %v and %d waits", time.Since(start), waits)
	c.tx.free = append(others[:len(others)-1], c.tx.free...)
	checkAccounting(t, c)
}
