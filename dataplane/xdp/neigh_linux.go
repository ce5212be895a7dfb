package xdp

import (
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// How long a neighbour lookup is trusted. A known MAC is re-read from the
// kernel's table every neighKnownTTL (the kernel keeps it fresh only while
// its own stack talks to the peer, so a changed MAC is noticed at most
// that late); an unknown one is retried every neighMissTTL, its datagrams
// going out through the UDP socket meanwhile, which makes the kernel
// resolve it.
const (
	neighKnownTTL = time.Second
	neighMissTTL  = 20 * time.Millisecond
)

type neighEntry struct {
	mac     [6]byte
	src     netip.Addr // the route's preferred source, if any
	ok      bool
	expires time.Time
}

// neighbours resolves destinations to next-hop MAC addresses from the
// kernel's routing and neighbour tables, through a netlink handle opened in
// the backend's network namespace, with a per-shard cache.
type neighbours struct {
	nl      *netlink.Handle
	ifindex int
	cache   map[netip.Addr]*neighEntry
	last    netip.Addr
	lastE   *neighEntry
	lookups uint64
}

func newNeighbours(nl *netlink.Handle, ifindex int) *neighbours {
	return &neighbours{nl: nl, ifindex: ifindex, cache: make(map[netip.Addr]*neighEntry)}
}

// lookup returns the MAC for dst (and the route's source address when it
// names one), or ok false when the kernel does not know it yet or the route
// leaves by another interface.
func (n *neighbours) lookup(dst netip.Addr, now time.Time) (e *neighEntry) {
	if n.lastE != nil && dst == n.last && now.Before(n.lastE.expires) {
		return n.lastE
	}
	e = n.cache[dst]
	if e == nil || !now.Before(e.expires) {
		if e == nil {
			if len(n.cache) >= 4096 { // bound the cache: drop it all, it refills
				clear(n.cache)
			}
			e = &neighEntry{}
			n.cache[dst] = e
		}
		n.resolve(dst, e)
		ttl := neighMissTTL
		if e.ok {
			ttl = neighKnownTTL
		}
		e.expires = now.Add(ttl)
	}
	n.last, n.lastE = dst, e
	return e
}

func (n *neighbours) resolve(dst netip.Addr, e *neighEntry) {
	n.lookups++
	e.ok = false
	routes, err := n.nl.RouteGet(net.IP(dst.AsSlice()))
	if err != nil || len(routes) == 0 || routes[0].LinkIndex != n.ifindex {
		return
	}
	r := routes[0]
	hop := dst
	if r.Gw != nil {
		if gw, ok := netip.AddrFromSlice(r.Gw); ok {
			hop = gw.Unmap()
		}
	}
	e.src = netip.Addr{}
	if r.Src != nil {
		if s, ok := netip.AddrFromSlice(r.Src); ok {
			e.src = s.Unmap()
		}
	}
	family := netlink.FAMILY_V4
	if hop.Is6() {
		family = netlink.FAMILY_V6
	}
	neighs, err := n.nl.NeighList(n.ifindex, family)
	if err != nil {
		return
	}
	const usable = unix.NUD_REACHABLE | unix.NUD_STALE | unix.NUD_DELAY | unix.NUD_PROBE | unix.NUD_PERMANENT | unix.NUD_NOARP
	for _, ne := range neighs {
		ip, ok := netip.AddrFromSlice(ne.IP)
		if !ok || ip.Unmap() != hop || ne.State&usable == 0 || len(ne.HardwareAddr) != 6 {
			continue
		}
		copy(e.mac[:], ne.HardwareAddr)
		e.ok = true
		return
	}
}
