//go:build !linux

package portable

import "github.com/mxp-dataplane/mxp/dataplane"

// Probe reports that the portable backend runs on Linux only.
func Probe(dataplane.Config) (dataplane.Backend, error) {
	return nil, &dataplane.UnavailableError{Backend: "portable", Feature: "portable", Reason: "the portable backend is Linux only"}
}

// FeaturesOf reports nothing: no ShardConn opens off Linux.
func FeaturesOf(dataplane.ShardConn) (Features, bool) { return Features{}, false }
