// Package backends lists every dataplane backend of this build, best first,
// for dataplane.Select: AF_XDP, the portable sockets, then io_uring.
//
// The portable backend ranks above io_uring on measurement: in the agent
// mesh (request/response with goroutine hand-offs, Go's network poller)
// io_uring is at best level with it (direct calls) and behind through a
// node (docs/uring.md has the figures), and its raw packet-rate
// lead needs a thread locked per shard (uring.Backend.ThreadPerShard), which
// costs the mesh more than it gains. Name "uring" to use it.
package backends

import (
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
	"github.com/mxp-dataplane/mxp/dataplane/uring"
	"github.com/mxp-dataplane/mxp/dataplane/xdp"
)

// Names are the backend names accepted besides "auto", best first.
var Names = []string{"xdp", "portable", "uring"}

// Candidates returns the backends to probe, best first.
func Candidates() []dataplane.Candidate {
	return []dataplane.Candidate{
		{Name: "xdp", Probe: xdp.Probe},
		{Name: "portable", Probe: portable.Probe},
		{Name: "uring", Probe: uring.Probe},
	}
}
