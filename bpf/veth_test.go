package bpf

import (
	"fmt"
	"net"
	"testing"

	"github.com/mxp-dataplane/mxp/testnet"
)

// vethRig puts the reuseport group in host b of a two-host testnet topology
// and sends from host a, so datagrams cross a veth pair and the IP stack's
// receive path from a (virtual) NIC rather than loopback.
func vethRig(ipv6 bool) func(t *testing.T, n int) rig {
	return func(t *testing.T, n int) rig {
		testnet.Require(t)
		topo, err := testnet.New(testnet.Config{Prefix: "mxpbpf", Queues: 2, IPv6: ipv6})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := topo.Close(); err != nil {
				t.Errorf("topology Close: %v", err)
			}
		})
		a, b := topo.Hosts[0], topo.Hosts[1]
		ip := b.IPv4
		if ipv6 {
			ip = b.IPv6
		}
		var conns []*net.UDPConn
		if err := b.Do(func() (err error) {
			conns, err = openGroup(ip.String(), n)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		for _, c := range conns {
			t.Cleanup(func() { c.Close() })
		}
		var tx *net.UDPConn
		if err := a.Do(func() (err error) {
			tx, err = net.DialUDP("udp", nil, conns[0].LocalAddr().(*net.UDPAddr))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tx.Close() })
		return rig{conns, func(dgs [][]byte) received { return sendFrom(t, tx, conns, dgs) }}
	}
}

func TestSteeringAcrossVeth(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, n := range []int{2, 4} {
			t.Run(fmt.Sprintf("ipv6=%v/%d", v6, n), func(t *testing.T) { testSteering(t, n, vethRig(v6)) })
		}
	}
}
