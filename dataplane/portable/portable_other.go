//go:build !linux

package portable

import (
	"net/netip"

	"github.com/mxp-dataplane/mxp/dataplane"
)

// Probe reports that the portable backend runs on Linux only.
func Probe(dataplane.Config) (dataplane.Backend, error) {
	return nil, &dataplane.UnavailableError{Backend: "portable", Feature: "portable", Reason: "the portable backend is Linux only"}
}

// FeaturesOf reports nothing: no ShardConn opens off Linux.
func FeaturesOf(dataplane.ShardConn) (Features, bool) { return Features{}, false }

// ConnectedPeer reports nothing: no ShardConn opens off Linux.
func ConnectedPeer(dataplane.ShardConn) (netip.AddrPort, bool) { return netip.AddrPort{}, false }
