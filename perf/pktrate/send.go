//go:build linux

package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mxp-dataplane/mxp/dataplane"
)

func runSend(args []string) error {
	fs := flag.NewFlagSet("send", flag.ContinueOnError)
	var c commonFlags
	c.register(fs)
	to := fs.String("to", "", "destination IP:port")
	size := fs.Int("size", 1200, "UDP payload bytes per datagram (at least 16)")
	duration := fs.Duration("duration", 3*time.Second, "how long to send")
	pps := fs.Float64("pps", 0, "pace at this many datagrams per second in total (0 = as fast as possible)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dst, err := netip.ParseAddrPort(*to)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	if *size < 16 || *size > 65000 {
		return fmt.Errorf("--size %d: want 16..65000", *size)
	}
	if *duration <= 0 || *duration > 10*time.Minute {
		return fmt.Errorf("--duration %v: want (0, 10m]", *duration)
	}
	r := Result{Role: "send", Backend: c.backend, Label: c.label, Payload: *size, Shards: c.shards,
		TargetPPS: *pps, Offloads: c.offloads(), Destination: dst.String()}
	if c.backend == "naive" {
		r.Shards = 1
		err = sendNaive(&r, dst, *size, *duration, *pps)
	} else {
		var b dataplane.Backend
		if b, err = c.selectBackend(); err == nil {
			r.Backend = b.Name()
			err = sendEngine(&r, b, c, dst, *size, *duration, *pps)
		}
	}
	if err != nil {
		return err
	}
	return writeResult(c.out, r)
}

// stamp writes datagram seq of flow: byte 7 (the connection ID's shard byte
// in MXP) names the flow, so a steering receiver spreads flows over shards.
func stamp(b []byte, flow int, seq uint64) {
	binary.LittleEndian.PutUint64(b[8:], seq)
	b[7] = byte(flow)
}

// generator is the sending Handler: one per shard, one flow each.
type generator struct {
	dst   netip.AddrPort
	size  int
	flow  int
	pps   float64 // this shard's share
	start time.Time
	seq   uint64
}

func (g *generator) Receive([]dataplane.Packet, time.Time) {}

func (g *generator) Transmit(out []dataplane.Packet, now time.Time) int {
	n := len(out)
	if g.pps > 0 {
		if g.start.IsZero() {
			g.start = now
		}
		budget := int64(g.pps*now.Sub(g.start).Seconds()) + 1 - int64(g.seq)
		n = int(max(0, min(int64(n), budget)))
	}
	for i := range n {
		b := out[i].Buf[:g.size]
		stamp(b, g.flow, g.seq)
		g.seq++
		out[i].Buf, out[i].Addr = b, g.dst
	}
	return n
}

func (g *generator) Deadline() time.Time {
	if g.pps <= 0 || g.start.IsZero() {
		return time.Time{}
	}
	return g.start.Add(time.Duration(float64(g.seq+1) / g.pps * float64(time.Second)))
}

func sendEngine(r *Result, b dataplane.Backend, c commonFlags, dst netip.AddrPort, size int, d time.Duration, pps float64) error {
	bind := netip.AddrPortFrom(netip.IPv4Unspecified(), 0)
	if dst.Addr().Is6() && !dst.Addr().Is4In6() {
		bind = netip.AddrPortFrom(netip.IPv6Unspecified(), 0)
	}
	cfg := dataplane.Config{Addr: bind, Shards: c.shards, Batch: c.batch, MaxDatagram: size, DisableGSO: c.noGSO, DisableGRO: c.noGRO}
	// Each shard binds its own port so that each is a flow of its own.
	var engines []*dataplane.Engine
	cpu0, t0 := cpuTime(), time.Now()
	for i := range max(1, c.shards) {
		one := cfg
		one.Shards = 1
		g := &generator{dst: dst, size: size, flow: i, pps: pps / float64(max(1, c.shards))}
		e, err := dataplane.Start(b, one, func(int) dataplane.Handler { return g })
		if err != nil {
			for _, e := range engines {
				e.Stop()
			}
			return err
		}
		engines = append(engines, e)
	}
	time.Sleep(d)
	var st dataplane.Stats
	for _, e := range engines {
		if err := e.Stop(); err != nil {
			return err
		}
		st = st.Add(e.Stats())
	}
	elapsed, cpu := time.Since(t0), cpuTime()-cpu0
	r.finish(st.TxPackets, st.TxBytes, elapsed, cpu)
	r.GSOSends, r.KernelDrops = st.TxGSOSends, st.TxDropped
	return nil
}

func sendNaive(r *Result, dst netip.AddrPort, size int, d time.Duration, pps float64) error {
	conn, err := net.ListenUDP("udp", nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetWriteBuffer(dataplane.DefaultSocketBuffer)
	buf := make([]byte, size)
	cpu0, t0 := cpuTime(), time.Now()
	end := t0.Add(d)
	var seq, bytes uint64
	for now := t0; now.Before(end); now = time.Now() {
		for range 64 {
			if pps > 0 && float64(seq) > pps*now.Sub(t0).Seconds() {
				time.Sleep(time.Duration(float64(time.Second) / pps))
				break
			}
			stamp(buf, 0, seq)
			if _, err := conn.WriteToUDPAddrPort(buf, dst); err != nil {
				continue // ENOBUFS and friends: UDP drops
			}
			seq++
			bytes += uint64(size)
		}
	}
	r.finish(seq, bytes, time.Since(t0), cpuTime()-cpu0)
	return nil
}
