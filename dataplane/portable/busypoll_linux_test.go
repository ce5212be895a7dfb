package portable

import (
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/dptest"
)

// One datagram in flight at a time: a shard that parks between datagrams
// parks once per round trip; one that busy-polls reads the next datagram
// while polling and hardly parks at all.
func TestBusyPollReadsWithoutParking(t *testing.T) {
	const total = 2000
	run := func(poll time.Duration) dataplane.Stats {
		cfg := dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0), BusyPoll: poll}
		srv, err := dataplane.Start(&Backend{}, cfg, func(int) dataplane.Handler { return &dptest.Echo{} })
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Stop()
		p := &dptest.Pinger{Dst: srv.Conn(0).LocalAddr(), Size: 64, Total: total, Window: 1}
		cli, err := dataplane.Start(&Backend{}, cfg, func(int) dataplane.Handler { return p })
		if err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(20 * time.Second); p.Got.Load() < total && p.Err() == nil && time.Now().Before(end); {
			time.Sleep(2 * time.Millisecond)
		}
		cli.Stop()
		if err := p.Err(); err != nil {
			t.Fatal(err)
		}
		if p.Got.Load() != total {
			t.Fatalf("busy poll %v: %d of %d echoes", poll, p.Got.Load(), total)
		}
		return srv.Stats()
	}
	parked := run(0).Wakeups
	polled := run(time.Millisecond).Wakeups
	t.Logf("server parks for %d sequential round trips: %d without busy polling, %d with 1 ms", total, parked, polled)
	if parked < total/2 {
		t.Errorf("without busy polling the server parked only %d times in %d round trips", parked, total)
	}
	if polled > total/4 {
		t.Errorf("with busy polling the server still parked %d times in %d round trips", polled, total)
	}
}

// wakeSender sends one datagram to dst per Wake-announced request.
type wakeSender struct {
	dst          netip.AddrPort
	queued, sent atomic.Int64
}

func (w *wakeSender) Receive([]dataplane.Packet, time.Time) {}
func (w *wakeSender) Transmit(out []dataplane.Packet, _ time.Time) int {
	n := 0
	for n < len(out) && w.sent.Load() < w.queued.Load() {
		out[n] = dataplane.Packet{Buf: append(out[n].Buf[:0], "wake"...), Addr: w.dst}
		w.sent.Add(1)
		n++
	}
	return n
}
func (w *wakeSender) Deadline() time.Time { return time.Time{} }

// A Wake reaches a shard that is busy polling (it does not wait for the
// polling budget to run out), and a shard idle for longer than its budget
// parks.
func TestBusyPollWakeAndPark(t *testing.T) {
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	w := &wakeSender{dst: sink.LocalAddr().(*net.UDPAddr).AddrPort()}
	e, err := dataplane.Start(&Backend{}, dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0), BusyPoll: 10 * time.Second},
		func(int) dataplane.Handler { return w })
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			e.Stop()
		}
	}()
	time.Sleep(20 * time.Millisecond) // the shard is polling now, for the next 10 s
	buf := make([]byte, 64)
	for i := range 3 {
		w.queued.Add(1)
		e.Wake(0)
		sink.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := sink.ReadFromUDP(buf); err != nil {
			t.Fatalf("datagram %d after Wake of a polling shard: %v", i, err)
		}
	}
	if p := e.Stats().Wakeups; p != 0 {
		t.Errorf("the shard parked %d times within its 10 s polling budget", p)
	}
	e.Stop()
	stopped = true

	e2, err := dataplane.Start(&Backend{}, dataplane.Config{Addr: netip.AddrPortFrom(loopback4, 0), BusyPoll: time.Millisecond},
		func(int) dataplane.Handler { return &dptest.Echo{} })
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for e2.Stats().Wakeups == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if e2.Stats().Wakeups == 0 {
		t.Error("an idle shard with a 1 ms polling budget never parked")
	}
}
