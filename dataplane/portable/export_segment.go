package portable

import "github.com/mxp-dataplane/mxp/dataplane"

// Exported forms of the pure GSO/GRO helpers, for the other socket backends
// (dataplane/uring) so the segmentation rules live in one place.

// MaxGSOSegments and MaxGSOBytes bound one UDP GSO send (see gsoRun).
const (
	MaxGSOSegments = maxGSOSegments
	MaxGSOBytes    = maxGSOBytes
)

// GSORun returns the end of the longest run pkts[start:end] that the kernel
// can send as one UDP GSO message (one destination, equal sizes but a
// shorter last one, at most maxSegs datagrams and maxBytes bytes).
func GSORun(pkts []dataplane.Packet, start, maxSegs, maxBytes int) int {
	return gsoRun(pkts, start, maxSegs, maxBytes)
}

// GROSegment returns the datagram at off in a buffer that the kernel
// coalesced from datagrams of seg bytes, and the offset of the next one.
func GROSegment(b []byte, seg, off int) (datagram []byte, next int) {
	return groSegment(b, seg, off)
}
