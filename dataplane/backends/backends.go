// Package backends lists every dataplane backend of this build, best first,
// for dataplane.Select: AF_XDP, io_uring, then the portable sockets.
package backends

import (
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
	"github.com/mxp-dataplane/mxp/dataplane/uring"
	"github.com/mxp-dataplane/mxp/dataplane/xdp"
)

// Names are the backend names accepted besides "auto", best first.
var Names = []string{"xdp", "uring", "portable"}

// Candidates returns the backends to probe, best first.
func Candidates() []dataplane.Candidate {
	return []dataplane.Candidate{
		{Name: "xdp", Probe: xdp.Probe},
		{Name: "uring", Probe: uring.Probe},
		{Name: "portable", Probe: portable.Probe},
	}
}
