//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/mxp-dataplane/mxp/dataplane"
)

func runRecv(args []string) error {
	fs := flag.NewFlagSet("recv", flag.ContinueOnError)
	var c commonFlags
	c.register(fs)
	addr := fs.String("addr", "0.0.0.0:9100", "listen IP:port")
	idle := fs.Duration("idle", time.Second, "stop after this long without a datagram (once one arrived)")
	maxDur := fs.Duration("max-duration", 60*time.Second, "stop after this long in any case")
	ready := fs.String("ready", "", "create this file once listening (for scripts)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(*addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	r := Result{Role: "recv", Backend: c.backend, Label: c.label, Shards: c.shards, Offloads: c.offloads(), ListenAddr: ap.String()}
	if c.backend == "naive" {
		r.Shards = 1
		err = recvNaive(&r, ap, *idle, *maxDur, *ready)
	} else {
		var b dataplane.Backend
		if b, err = c.selectBackend(); err == nil {
			r.Backend = b.Name()
			err = recvEngine(&r, b, c, ap, *idle, *maxDur, *ready)
		}
	}
	if err != nil {
		return err
	}
	return writeResult(c.out, r)
}

// counter is the receiving Handler: it counts and notes the payload size and
// the times of the first and last datagram.
type counter struct {
	packets, bytes atomic.Uint64
	first, last    atomic.Int64 // UnixNano
	size           atomic.Int64
}

func (c *counter) Receive(pkts []dataplane.Packet, now time.Time) {
	var b uint64
	for _, p := range pkts {
		b += uint64(len(p.Buf))
	}
	if c.packets.Load() == 0 {
		c.first.Store(now.UnixNano())
		c.size.Store(int64(len(pkts[0].Buf)))
	}
	c.packets.Add(uint64(len(pkts)))
	c.bytes.Add(b)
	c.last.Store(time.Now().UnixNano())
}

func (*counter) Transmit([]dataplane.Packet, time.Time) int { return 0 }
func (*counter) Deadline() time.Time                        { return time.Time{} }

func touch(path string) {
	if path != "" {
		os.WriteFile(path, nil, 0o644)
	}
}

// waitDone polls until idle passed since the last datagram, or maxDur.
func waitDone(start time.Time, idle, maxDur time.Duration, last func() int64) {
	for time.Since(start) < maxDur {
		time.Sleep(20 * time.Millisecond)
		if l := last(); l != 0 && time.Since(time.Unix(0, l)) > idle {
			return
		}
	}
}

func recvEngine(r *Result, b dataplane.Backend, c commonFlags, ap netip.AddrPort, idle, maxDur time.Duration, ready string) error {
	counters := make([]*counter, max(1, c.shards))
	cfg := dataplane.Config{Addr: ap, Shards: c.shards, Batch: c.batch, MaxDatagram: 65000, DisableGSO: c.noGSO, DisableGRO: c.noGRO}
	cpu0, t0 := cpuTime(), time.Now()
	e, err := dataplane.Start(b, cfg, func(i int) dataplane.Handler {
		counters[i] = &counter{}
		return counters[i]
	})
	if err != nil {
		return err
	}
	if v, ok := b.(interface{ Variant() string }); ok {
		r.Backend = v.Variant() // e.g. xdp-copy or xdp-zerocopy, known once open
	}
	if m, ok := b.(interface{ AttachMode() string }); ok {
		r.Offloads = m.AttachMode() // native or generic XDP
	}
	touch(ready)
	lastOf := func() (l int64) {
		for _, c := range counters {
			l = max(l, c.last.Load())
		}
		return l
	}
	waitDone(t0, idle, maxDur, lastOf)
	if err := e.Stop(); err != nil {
		return err
	}
	var packets, bytes uint64
	first, last := int64(0), lastOf()
	for _, c := range counters {
		packets += c.packets.Load()
		bytes += c.bytes.Load()
		if f := c.first.Load(); f != 0 && (first == 0 || f < first) {
			first = f
		}
		if r.Payload == 0 {
			r.Payload = int(c.size.Load())
		}
	}
	st := e.Stats()
	r.GROSplits, r.KernelDrops = st.RxGROSplits, st.RxDropped
	r.finish(packets, bytes, time.Duration(last-first), cpuTime()-cpu0)
	return nil
}

func recvNaive(r *Result, ap netip.AddrPort, idle, maxDur time.Duration, ready string) error {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadBuffer(dataplane.DefaultSocketBuffer)
	touch(ready)
	buf := make([]byte, 65536)
	var packets, bytes uint64
	var first, last time.Time
	cpu0, t0 := cpuTime(), time.Now()
	for time.Since(t0) < maxDur {
		wait := idle
		if packets == 0 {
			wait = maxDur - time.Since(t0)
		}
		conn.SetReadDeadline(time.Now().Add(wait))
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			return err
		}
		last = time.Now()
		if packets == 0 {
			first, r.Payload = last, n
		}
		packets++
		bytes += uint64(n)
	}
	r.finish(packets, bytes, last.Sub(first), cpuTime()-cpu0)
	return nil
}
