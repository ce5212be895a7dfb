//go:build !linux

package xdp

import "github.com/mxp-dataplane/mxp/dataplane"

// Probe reports that the xdp backend runs on Linux only.
func Probe(dataplane.Config) (dataplane.Backend, error) {
	return nil, &dataplane.UnavailableError{Backend: "xdp", Feature: "xdp", Reason: "the xdp backend is Linux only"}
}
