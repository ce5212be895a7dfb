package portable

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/bpf"
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/dptest"
	"github.com/mxp-dataplane/mxp/wire"
)

// With the SK_REUSEPORT program, each datagram reaches the shard its
// connection ID names, even though all come from one flow (which the
// kernel's hash would send to a single shard).
func TestBPFSteersByConnectionID(t *testing.T) {
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprint(n, "shards"), func(t *testing.T) {
			hs := make([]*dptest.ShardChecker, n)
			b := &Backend{Steering: SteerBPF}
			e, err := dataplane.Start(b, dataplane.Config{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Shards: n},
				func(i int) dataplane.Handler { hs[i] = &dptest.ShardChecker{Shard: i, Shards: n}; return hs[i] })
			if errors.Is(err, bpf.ErrPermission) || errors.Is(err, bpf.ErrNotSupported) || errors.Is(err, bpf.ErrMemlock) {
				t.Skipf("SK_REUSEPORT steering unavailable here: %v", err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer e.Stop()
			if f, _ := FeaturesOf(e.Conn(0)); !f.SteeredByBPF {
				t.Fatal("SteerBPF opened without BPF steering")
			}
			conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(e.Conn(0).LocalAddr()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			const total = 4000
			hdr := make([]byte, 32)
			for i := range total {
				cid := wire.MakeConnID(i%256, uint64(i)*0x9E3779B97F4A7C15)
				for k := range 8 {
					hdr[k] = byte(cid >> (8 * k))
				}
				if _, err := conn.Write(hdr); err != nil {
					t.Fatal(err)
				}
				if i%256 == 255 {
					time.Sleep(time.Millisecond) // stay well inside the socket buffers
				}
			}
			sum := func() (got, wrong int64) {
				for _, h := range hs {
					got, wrong = got+h.Got.Load(), wrong+h.Wrong.Load()
				}
				return
			}
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
				if got, _ := sum(); got == total {
					break
				}
			}
			got, wrong := sum()
			if got != total || wrong != 0 {
				t.Fatalf("%d of %d datagrams arrived, %d on the wrong shard", got, total, wrong)
			}
			for i, h := range hs {
				if h.Got.Load() != total/int64(n) {
					t.Errorf("shard %d got %d datagrams, want %d", i, h.Got.Load(), total/n)
				}
			}
		})
	}
}

// Without BPF (forced), the backend says how it steers instead.
func TestHashSteeringIsReported(t *testing.T) {
	b := &Backend{Steering: SteerHash}
	conns, err := b.Open(dataplane.Config{Addr: netip.MustParseAddrPort("127.0.0.1:0"), Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range conns {
		defer c.Close()
	}
	if f, _ := FeaturesOf(conns[0]); f.SteeredByBPF {
		t.Fatal("SteerHash attached the BPF program")
	}
	if conns[0].LocalAddr() != conns[1].LocalAddr() {
		t.Fatalf("shards bound %v and %v, want one port", conns[0].LocalAddr(), conns[1].LocalAddr())
	}
}
