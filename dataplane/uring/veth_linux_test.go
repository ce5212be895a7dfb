package uring

import (
	"net/netip"
	"testing"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/dptest"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
	"github.com/mxp-dataplane/mxp/testnet"
)

// Across a veth pair between two namespaces: every datagram arrives intact
// with the offloads on and off, over IPv6, and with a portable peer. The
// rings are opened on Do's short-lived threads and used from the shards'.
func TestAcrossVeth(t *testing.T) {
	testnet.Require(t)
	requireURing(t)
	topo := testnet.NewT(t, testnet.Config{Prefix: "mxpuring", IPv6: true})
	a, b := topo.Hosts[0], topo.Hosts[1]
	off := dataplane.Config{DisableGSO: true, DisableGRO: true}
	for _, c := range []struct {
		name         string
		cfg          dataplane.Config
		noGRO        bool // on the server only
		v6           bool
		size         int
		portablePeer bool
		wantGSO      bool
		wantNone     bool
	}{
		{name: "1200B-offloads", size: 1200, wantGSO: true},
		{name: "64B-offloads", size: 64, wantGSO: true},
		{name: "1200B-no-offloads", cfg: off, size: 1200, wantNone: true},
		{name: "1200B-ipv6", size: 1200, v6: true, wantGSO: true},
		{name: "1200B-gso-to-no-gro", size: 1200, noGRO: true, wantGSO: true},
		{name: "1200B-portable-client", size: 1200, portablePeer: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv, cli := c.cfg, c.cfg
			srv.DisableGRO = srv.DisableGRO || c.noGRO
			srv.Addr, cli.Addr = netip.AddrPortFrom(b.IPv4, 0), netip.AddrPortFrom(a.IPv4, 0)
			if c.v6 {
				srv.Addr, cli.Addr = netip.AddrPortFrom(b.IPv6, 0), netip.AddrPortFrom(a.IPv6, 0)
			}
			var cb dataplane.Backend = &dptest.InNetns{Backend: &Backend{}, Host: a}
			if c.portablePeer {
				cb = &dptest.InNetns{Backend: &portable.Backend{}, Host: a}
			}
			r := dptest.PingPong(t, &dptest.InNetns{Backend: &Backend{}, Host: b}, srv, cb, cli, c.size, 20000)
			if c.wantGSO && r.Client.TxGSOSends == 0 {
				t.Errorf("no GSO sends across veth: %+v", r.Client)
			}
			if c.wantNone && (r.Client.TxGSOSends != 0 || r.Server.RxGROSplits != 0) {
				t.Errorf("offloads used while disabled: client %+v server %+v", r.Client, r.Server)
			}
			if c.noGRO && r.Server.RxGROSplits != 0 {
				t.Errorf("server without GRO split %d buffers", r.Server.RxGROSplits)
			}
			if r.Server.RxPackets != 20000 || r.Server.TxPackets != 20000 {
				t.Errorf("server counters %+v", r.Server)
			}
			t.Logf("client %s", dptest.FormatStats(r.Client))
			t.Logf("server %s", dptest.FormatStats(r.Server))
		})
	}
}
