package mesh

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/wire"
)

// DefaultPort is MXP's UDP port.
const DefaultPort = 9000

// Target is a parsed mxp:// URL: mxp://<node key>@host[:port][/agent-id].
// The node key (crypto.PublicKey text, "mxpk_...") authenticates the node;
// the optional agent ID names an agent behind it.
type Target struct {
	Key   crypto.PublicKey
	Addr  netip.AddrPort
	Agent wire.UUID
}

// ParseURL parses an mxp:// URL. Host names are resolved.
func ParseURL(s string) (Target, error) {
	var t Target
	u, err := url.Parse(s)
	if err != nil {
		return t, fmt.Errorf("mxp URL %q: %w", s, err)
	}
	if u.Scheme != "mxp" {
		return t, fmt.Errorf("mxp URL %q: scheme must be mxp", s)
	}
	if u.User == nil || u.User.Username() == "" {
		return t, fmt.Errorf("mxp URL %q: the node's key is missing (mxp://mxpk_...@host:port)", s)
	}
	if t.Key, err = crypto.ParsePublicKey(u.User.Username()); err != nil {
		return t, fmt.Errorf("mxp URL %q: node key: %w", s, err)
	}
	port := DefaultPort
	if p := u.Port(); p != "" {
		if _, err := fmt.Sscanf(p, "%d", &port); err != nil || port <= 0 || port > 65535 {
			return t, fmt.Errorf("mxp URL %q: bad port", s)
		}
	}
	host := u.Hostname()
	addr, err := netip.ParseAddr(host)
	if err != nil {
		ips, lerr := net.LookupIP(host)
		if lerr != nil || len(ips) == 0 {
			return t, fmt.Errorf("mxp URL %q: cannot resolve %q: %v", s, host, lerr)
		}
		addr, _ = netip.AddrFromSlice(ips[0])
	}
	t.Addr = netip.AddrPortFrom(addr.Unmap(), uint16(port))
	if p := strings.Trim(u.Path, "/"); p != "" {
		if t.Agent, err = wire.ParseUUID(p); err != nil {
			return t, fmt.Errorf("mxp URL %q: agent ID: %w", s, err)
		}
	}
	return t, nil
}

// FormatURL renders an mxp:// URL; a zero agent is left out.
func FormatURL(key crypto.PublicKey, addr netip.AddrPort, agent wire.UUID) string {
	s := "mxp://" + key.String() + "@" + addr.String()
	if agent != (wire.UUID{}) {
		s += "/" + agent.String()
	}
	return s
}
