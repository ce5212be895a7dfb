package uring

import (
	"encoding/binary"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/internal/udpsock"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
	"github.com/mxp-dataplane/mxp/dataplane/uring/ring"
)

const (
	segCmsgLen  = cmsgHdrLen + 2
	segCmsgArea = 24 // CMSG_SPACE(sizeof(uint16))
)

// txChunk is one batch of send buffers with the msghdrs, iovecs, addresses
// and cmsgs of its messages. A chunk is handed out whole by TxBuffers and
// stays in flight, untouched, until every message of its Send completed:
// the kernel reads the payload (and, for a retried send, the cmsg) until
// then.
type txChunk struct {
	slab     []byte
	hdrs     []unix.Msghdr
	iovs     []unix.Iovec
	names    []byte
	ctrl     []byte
	msgs     []int32 // datagrams in each message
	inflight int     // messages not yet completed
}

type txState struct {
	batch, size int
	chunks      []txChunk
	free        []int // free chunk indexes (a stack)
	handed      int   // the chunk of the last TxBuffers, -1 if none
}

// txTally sums send completions over one reap.
type txTally struct{ packets, bytes, gso, dropped uint64 }

func (t *txTally) add(s *dataplane.Counters) {
	if t.packets > 0 {
		s.TxPackets.Add(t.packets)
		s.TxBytes.Add(t.bytes)
	}
	if t.gso > 0 {
		s.TxGSOSends.Add(t.gso)
	}
	if t.dropped > 0 {
		s.TxDropped.Add(t.dropped)
	}
}

func (t *txState) init(batch, size int) {
	t.batch, t.size, t.handed = batch, size, -1
	t.chunks = make([]txChunk, txChunks)
	for i := range t.chunks {
		ch := &t.chunks[i]
		ch.slab = make([]byte, batch*size)
		ch.hdrs = make([]unix.Msghdr, batch)
		ch.iovs = make([]unix.Iovec, batch)
		ch.names = make([]byte, batch*udpsock.NameLen)
		ch.ctrl = make([]byte, batch*segCmsgArea)
		ch.msgs = make([]int32, batch)
		for m := range batch {
			cm := ch.ctrl[m*segCmsgArea:]
			binary.NativeEndian.PutUint64(cm[0:], segCmsgLen)
			binary.NativeEndian.PutUint32(cm[8:], unix.SOL_UDP)
			binary.NativeEndian.PutUint32(cm[12:], unix.UDP_SEGMENT)
		}
		t.free = append(t.free, txChunks-1-i)
	}
}

// idle reports that no send is in flight.
func (t *txState) idle() bool { return len(t.free)+boolInt(t.handed >= 0) == len(t.chunks) }

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// complete takes one send CQE.
func (t *txState) complete(cqe *ring.CQE, tally *txTally, gso *bool) {
	ci, m := int(cqe.UserData>>16&0xffff), int(cqe.UserData&0xffff)
	if ci >= len(t.chunks) || m >= t.batch {
		return
	}
	ch := &t.chunks[ci]
	n := uint64(ch.msgs[m])
	if cqe.Res >= 0 {
		tally.packets += n
		tally.bytes += uint64(cqe.Res)
		if n > 1 {
			tally.gso++
		}
	} else {
		tally.dropped += n
		if cqe.Res == -int32(unix.EIO) && n > 1 {
			*gso = false // the device cannot segment: send plainly from now on
		}
	}
	if ch.inflight--; ch.inflight == 0 {
		t.free = append(t.free, ci)
	}
}

// TxBuffers hands out the send buffers of one free chunk: MaxDatagram bytes
// each, up to Batch. It returns 0 when every chunk is in flight.
func (c *shardConn) TxBuffers(pkts []dataplane.Packet) int {
	t := &c.tx
	if t.handed < 0 {
		if len(t.free) == 0 {
			c.reap()
			if len(t.free) == 0 {
				c.txStarved = true
				return 0
			}
		}
		c.txStarved = false
		t.handed = t.free[len(t.free)-1]
		t.free = t.free[:len(t.free)-1]
	}
	ch := &t.chunks[t.handed]
	n := min(len(pkts), t.batch)
	for i := range n {
		pkts[i].Buf = ch.slab[i*t.size : i*t.size : (i+1)*t.size]
	}
	return n
}

// Send queues one IORING_OP_SENDMSG per GSO run (per datagram without GSO)
// and submits them with one io_uring_enter. It returns how many datagrams
// were submitted; the counters count them sent or dropped as they complete.
func (c *shardConn) Send(pkts []dataplane.Packet) (int, error) {
	t := &c.tx
	if t.handed < 0 {
		if len(pkts) > 0 {
			c.stats.TxDropped.Add(uint64(len(pkts))) // no TxBuffers before: not our buffers
		}
		return 0, nil
	}
	ci := t.handed
	ch := &t.chunks[ci]
	t.handed = -1
	pkts = pkts[:min(len(pkts), t.batch)]
	submitted, dropped, m := 0, 0, 0
	for i := 0; i < len(pkts); {
		nl, ok := udpsock.PutName(ch.names[m*udpsock.NameLen:(m+1)*udpsock.NameLen], pkts[i].Addr, c.v6)
		if !ok || len(pkts[i].Buf) > c.maxDgram {
			dropped++
			i++
			continue
		}
		end := i + 1
		if c.gso {
			end = portable.GSORun(pkts, i, portable.MaxGSOSegments, portable.MaxGSOBytes)
		}
		sqe := c.getSQE()
		if sqe == nil {
			dropped += len(pkts) - i
			break
		}
		for j := i; j < end; j++ {
			ch.iovs[j] = unix.Iovec{}
			if b := pkts[j].Buf; len(b) > 0 {
				ch.iovs[j].Base = &b[0]
				ch.iovs[j].SetLen(len(b))
			}
		}
		h := &ch.hdrs[m]
		*h = unix.Msghdr{Name: &ch.names[m*udpsock.NameLen], Namelen: nl, Iov: &ch.iovs[i]}
		h.SetIovlen(end - i)
		if end-i > 1 {
			off := m * segCmsgArea
			binary.NativeEndian.PutUint16(ch.ctrl[off+cmsgHdrLen:], uint16(len(pkts[i].Buf)))
			h.Control = &ch.ctrl[off]
			h.SetControllen(segCmsgArea)
		}
		ch.msgs[m] = int32(end - i)
		ring.PrepSendmsg(sqe, fileSocket, true, h, 0, udSend|uint64(ci)<<16|uint64(m))
		submitted += end - i
		m++
		i = end
	}
	if dropped > 0 {
		c.stats.TxDropped.Add(uint64(dropped))
	}
	ch.inflight = m
	if m == 0 {
		t.free = append(t.free, ci)
		return 0, nil
	}
	c.stats.TxCalls.Add(1)
	if err := c.submit(); err != nil {
		return submitted, err
	}
	return submitted, nil
}
