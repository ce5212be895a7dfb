package portable

import (
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/wire"
)

// Limits of one UDP GSO send, as the kernel enforces them.
const (
	// maxGSOSegments is the kernel's UDP_MAX_SEGMENTS on every kernel this
	// backend supports (64 before 6.2; 128 after, but 64 is always safe).
	maxGSOSegments = 64
	// maxGSOBytes bounds the payload of one GSO send: it must fit one IPv6
	// datagram's 16-bit payload length with the UDP header.
	maxGSOBytes = 65535 - 8 - 40
)

// gsoRun returns the end of the longest run pkts[start:end] that the kernel
// can send as one UDP GSO message: one destination, every datagram but the
// last exactly as long as the first (the segment size), the last no longer,
// at most maxSegs datagrams and maxBytes bytes, and one shard byte: the
// receiver's SO_REUSEPORT program steers a GSO message that loopback or GRO
// delivers whole by its first datagram's connection-ID shard byte, so
// datagrams of connections on different shards must not share a message.
// A run always holds at least pkts[start]; an empty first datagram makes a
// run of one.
func gsoRun(pkts []dataplane.Packet, start, maxSegs, maxBytes int) int {
	seg := len(pkts[start].Buf)
	end, total := start+1, seg
	if seg == 0 {
		return end
	}
	shard := shardByte(pkts[start].Buf)
	for end < len(pkts) && end-start < maxSegs {
		n := len(pkts[end].Buf)
		if pkts[end].Addr != pkts[start].Addr || n > seg || n == 0 || total+n > maxBytes || shardByte(pkts[end].Buf) != shard {
			break
		}
		end, total = end+1, total+n
		if n < seg {
			break // a shorter datagram ends the run
		}
	}
	return end
}

// shardByte is the byte the receiver steers a datagram by, or -1 for a
// datagram too short to have one.
func shardByte(b []byte) int {
	if len(b) <= wire.ConnIDShardOffset {
		return -1
	}
	return int(b[wire.ConnIDShardOffset])
}

// groSegment returns the datagram at off in a receive buffer b that the
// kernel coalesced from datagrams of seg bytes each (the last may be
// shorter), and the offset of the next one. seg ≤ 0 means b is one datagram.
func groSegment(b []byte, seg, off int) (datagram []byte, next int) {
	if seg <= 0 || seg >= len(b)-off {
		return b[off:len(b):len(b)], len(b)
	}
	return b[off : off+seg : off+seg], off + seg
}
