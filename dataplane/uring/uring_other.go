//go:build !linux

package uring

import "github.com/mxp-dataplane/mxp/dataplane"

// Probe reports that io_uring exists on Linux only.
func Probe(dataplane.Config) (dataplane.Backend, error) {
	return nil, &dataplane.UnavailableError{Backend: "uring", Feature: "io_uring", Reason: "io_uring is Linux only"}
}
