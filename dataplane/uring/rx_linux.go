package uring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/internal/udpsock"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
	"github.com/mxp-dataplane/mxp/dataplane/uring/ring"
)

// Layout of a provided receive buffer, as the multishot recvmsg fills it:
// the io_uring_recvmsg_out header, a name area big enough for a
// sockaddr_in6 (rounded up to keep what follows 8-byte aligned), a control
// area for the UDP_GRO cmsg when GRO is on, then the payload.
const (
	nameArea    = 32
	groCtrlArea = 24 // CMSG_SPACE(sizeof(int))
	bufGroup    = 0
	// rxBudget bounds the receive buffers of a shard. The buffers cycle
	// through the ring in order, so their total is the working set the
	// kernel's copies and the handler's reads sweep: with GRO, 64 buffers
	// of 64 KiB received 1200-byte datagrams measurably faster (less CPU
	// per datagram) than 256.
	rxBudget   = 8 << 20
	cmsgHdrLen = 16 // CMSG_LEN(0) on 64-bit
)

// rxGeometry returns the number of provided buffers and the size of each:
// a whole GRO super-datagram when GRO is on, else one datagram plus a byte
// to detect truncation.
func rxGeometry(gro bool, maxDgram, want int) (n, size int) {
	payload := maxDgram + 1
	ctrl := 0
	if gro {
		payload, ctrl = 65535, groCtrlArea
	}
	size = (ring.SizeofRecvmsgOut + nameArea + ctrl + payload + 63) &^ 63
	if want > 0 {
		n = 1
		for n < want && n < 1<<15 {
			n <<= 1
		}
		return n, size
	}
	n = 64
	for n < 1024 && 2*n*size <= rxBudget {
		n <<= 1
	}
	return n, size
}

// rxEntry is a completed receive not yet split into datagrams.
type rxEntry struct {
	bid uint16
	len int32
}

// rxState is a shard's receive side: the provided-buffer ring and its
// buffers, the multishot request, the completions waiting for Recv and the
// buffer being split.
type rxState struct {
	br      *ring.BufRing
	slab    []byte // the buffers: an anonymous mapping, nbufs × size
	size    int
	nbufs   int
	ctrlLen int
	gro     bool
	msg     unix.Msghdr // the recvmsg template: only its lengths matter
	dummy   [8]byte     // Name/Control point here: never written by multishot

	armed    bool    // the multishot request is in flight
	drain    bool    // requests drain the socket without waiting (MSG_DONTWAIT), for the poller
	arms     int     // times the request was submitted
	provided int     // buffers in the kernel's ring
	lastErr  int32   // the errno that last ended the request
	failures int     // consecutive ends by an error (not ENOBUFS) without a datagram
	enobufs  uint64  // ends for want of a provided buffer
	refs     []int32 // per buffer: datagrams handed out, not yet released
	busy     []bool  // per buffer: with the application (queued, being split or handed out)

	q           []rxEntry // completed receives, a ring of nbufs entries
	qHead, qLen int

	// The buffer being split into datagrams.
	splitting bool
	cur       uint16
	payload   []byte
	seg, off  int
	from      netip.AddrPort
}

func (r *rxState) init(rg *ring.Ring, nbufs, size int, gro bool) error {
	r.size, r.nbufs, r.gro = size, nbufs, gro
	if gro {
		r.ctrlLen = groCtrlArea
	}
	var err error
	r.slab, err = unix.Mmap(-1, 0, nbufs*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return fmt.Errorf("receive buffers (%d × %d bytes): %w", nbufs, size, err)
	}
	if r.br, err = rg.RegisterBufRing(nbufs, bufGroup); err != nil {
		return err
	}
	r.refs = make([]int32, nbufs)
	r.busy = make([]bool, nbufs)
	r.q = make([]rxEntry, nbufs)
	r.msg.Name, r.msg.Namelen = &r.dummy[0], nameArea
	if r.ctrlLen > 0 {
		r.msg.Control = &r.dummy[0]
		r.msg.SetControllen(r.ctrlLen)
	}
	for bid := range nbufs {
		r.br.Add(r.buffer(uint16(bid)), uint16(bid))
	}
	r.br.Publish()
	r.provided = nbufs
	return nil
}

func (r *rxState) buffer(bid uint16) []byte {
	off := int(bid) * r.size
	return r.slab[off : off+r.size : off+r.size]
}

// close releases the buffers; when the ring's requests did not end (drained
// false) the mapping is left in place rather than risk the kernel writing
// into memory reused for something else.
func (r *rxState) close(drained bool) error {
	var errs []error
	if r.br != nil {
		errs = append(errs, r.br.Close())
	}
	if r.slab != nil && drained {
		errs = append(errs, unix.Munmap(r.slab))
		r.slab = nil
	}
	return errors.Join(errs...)
}

// complete takes one receive CQE.
func (r *rxState) complete(cqe *ring.CQE) {
	if !cqe.More() {
		r.armed = false
	}
	if cqe.Flags&ring.CQEFBuffer == 0 {
		if cqe.Res < 0 {
			r.lastErr = -cqe.Res
			if r.drain && r.lastErr == int32(unix.EAGAIN) {
				// the drain emptied the socket: nothing to count
			} else if r.lastErr == int32(unix.ENOBUFS) {
				r.enobufs++
			} else {
				r.failures++
			}
		}
		return
	}
	r.failures = 0
	bid := cqe.BufferID()
	r.provided--
	r.busy[bid] = true
	r.q[(r.qHead+r.qLen)%len(r.q)] = rxEntry{bid: bid, len: cqe.Res}
	r.qLen++
}

// ready reports datagrams waiting for Recv.
func (r *rxState) ready() bool { return r.qLen > 0 || r.splitting }

// recycle gives buffer bid back to the ring (published by flushRing).
func (r *rxState) recycle(bid uint16) {
	r.busy[bid] = false
	r.br.Add(r.buffer(bid), bid)
	r.provided++
}

// start begins splitting the next queued buffer; false if it held no
// usable datagram (then it is recycled and counted as dropped).
func (r *rxState) start(e rxEntry, maxDgram int) bool {
	b := r.buffer(e.bid)
	hdr := ring.SizeofRecvmsgOut + nameArea + r.ctrlLen
	if int(e.len) < hdr || int(e.len) > len(b) {
		r.recycle(e.bid)
		return false
	}
	b = b[:e.len]
	namelen := binary.NativeEndian.Uint32(b[0:])
	controllen := binary.NativeEndian.Uint32(b[4:])
	payloadlen := binary.NativeEndian.Uint32(b[8:])
	flags := binary.NativeEndian.Uint32(b[12:])
	payload := b[hdr:]
	if flags&unix.MSG_TRUNC != 0 || int(payloadlen) != len(payload) || namelen > nameArea ||
		!r.gro && len(payload) > maxDgram {
		r.recycle(e.bid)
		return false
	}
	from := udpsock.AddrFromName(b[ring.SizeofRecvmsgOut : ring.SizeofRecvmsgOut+int(namelen)])
	if !from.IsValid() {
		r.recycle(e.bid)
		return false
	}
	r.seg = 0
	if r.ctrlLen > 0 {
		if flags&unix.MSG_CTRUNC != 0 {
			r.recycle(e.bid) // the segment size may be lost: cannot split safely
			return false
		}
		r.seg = groSegSize(b[ring.SizeofRecvmsgOut+nameArea : ring.SizeofRecvmsgOut+nameArea+min(int(controllen), r.ctrlLen)])
		if r.seg > maxDgram || r.seg <= 0 && len(payload) > maxDgram {
			r.recycle(e.bid) // datagrams longer than MaxDatagram
			return false
		}
	}
	r.splitting, r.cur, r.payload, r.off, r.from = true, e.bid, payload, 0, from
	return true
}

// groSegSize finds the UDP_GRO segment size among the cmsgs in ctrl.
func groSegSize(ctrl []byte) int {
	for len(ctrl) >= cmsgHdrLen {
		l := int(binary.NativeEndian.Uint64(ctrl[0:]))
		level := int32(binary.NativeEndian.Uint32(ctrl[8:]))
		typ := int32(binary.NativeEndian.Uint32(ctrl[12:]))
		if l < cmsgHdrLen || l > len(ctrl) {
			return 0
		}
		if level == unix.SOL_UDP && typ == unix.UDP_GRO && l >= cmsgHdrLen+4 {
			return int(int32(binary.NativeEndian.Uint32(ctrl[cmsgHdrLen:])))
		}
		next := (l + 7) &^ 7
		if next > len(ctrl) {
			return 0
		}
		ctrl = ctrl[next:]
	}
	return 0
}

// Recv fills pkts with datagrams from completed receives, without blocking:
// views of the provided buffers, which stay with the application until
// Release.
func (c *shardConn) Recv(pkts []dataplane.Packet) (int, error) {
	c.reap()
	if err := c.arm(); err != nil {
		return 0, err
	}
	if err := c.submit(); err != nil {
		return 0, err
	}
	if c.rx.drain {
		c.reap() // a drain completes within the submitting io_uring_enter
	}
	r := &c.rx
	k, bytes, splits, dropped := 0, 0, 0, 0
	for k < len(pkts) {
		if !r.splitting {
			if r.qLen == 0 {
				break
			}
			e := r.q[r.qHead]
			r.qHead = (r.qHead + 1) % len(r.q)
			r.qLen--
			if !r.start(e, c.maxDgram) {
				dropped++
				continue
			}
		}
		// Hand out the buffer's datagrams with its state in locals; the
		// buffer's reference count and the byte count are added once.
		payload, seg, off, from := r.payload, r.seg, r.off, r.from
		first, start := k, off
		for k < len(pkts) && off < len(payload) {
			var d []byte
			d, off = portable.GROSegment(payload, seg, off)
			pkts[k].Buf, pkts[k].Addr = d, from
			k++
		}
		r.refs[r.cur] += int32(k - first)
		bytes += off - start
		if off < len(payload) || len(payload) == 0 && k == first {
			r.off = off
			if len(payload) > 0 {
				continue
			}
			// An empty datagram: the loop above handed out nothing.
			pkts[k].Buf, pkts[k].Addr = payload[:0:0], from
			r.refs[r.cur]++
			k++
		}
		if seg > 0 && len(payload) > seg {
			splits++
		}
		r.splitting = false
	}
	r.br.Publish() // buffers recycled as dropped
	if k > 0 {
		c.stats.RxCalls.Add(1)
	}
	c.stats.AddRx(k, bytes, splits, dropped)
	return k, nil
}

// Release gives back the buffers of pkts: a buffer returns to the ring once
// every datagram split from it has been released and none is left to split.
func (c *shardConn) Release(pkts []dataplane.Packet) {
	r := &c.rx
	// Consecutive datagrams mostly share a buffer: count a run of them and
	// settle the run's buffer once.
	run, n := -1, int32(0)
	for i := range pkts {
		bid := r.bidOf(pkts[i].Buf)
		if bid == run {
			n++
			continue
		}
		r.settle(run, n)
		run, n = bid, 1
	}
	r.settle(run, n)
	r.br.Publish()
}

// settle takes n released datagrams off buffer bid's count (bid < 0: not
// ours) and recycles the buffer when none is out and none is left to split.
// A count never goes below zero, so releasing twice changes nothing.
func (r *rxState) settle(bid int, n int32) {
	if bid < 0 || r.refs[bid] <= 0 {
		return
	}
	r.refs[bid] = max(0, r.refs[bid]-n)
	if r.refs[bid] == 0 && r.busy[bid] && !(r.splitting && int(r.cur) == bid) {
		r.recycle(uint16(bid))
	}
}

// probeMultishot arms a multishot recvmsg on an unbound UDP socket and
// checks that the kernel took it (kernels before 6.0 fail it with EINVAL).
func probeMultishot(rg *ring.Ring, br *ring.BufRing) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	}
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	var dummy [8]byte
	msg := unix.Msghdr{Name: &dummy[0], Namelen: nameArea}
	ring.PrepRecvmsgMultishot(rg.GetSQE(), fd, false, &msg, br.Group(), udRecv)
	ring.PrepCancel(rg.GetSQE(), udRecv, udCancel)
	if _, err := rg.Submit(); err != nil {
		return os.NewSyscallError("io_uring_enter", err)
	}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		rg.WaitCQEs(1, 20*time.Millisecond)
		for n := rg.CQReady(); n > 0; n = rg.CQReady() {
			cqe := rg.PeekCQE(0)
			ud, res := cqe.UserData, cqe.Res
			rg.CQAdvance(1)
			if ud != udRecv {
				continue
			}
			if res == -int32(unix.EINVAL) || res == -int32(unix.EOPNOTSUPP) {
				return unix.Errno(-res)
			}
			// Armed, then canceled (ECANCELED), or ended for want of a
			// buffer (ENOBUFS: the probe ring is empty): the kernel took it.
			return nil
		}
	}
	return errors.New("no completion for the probe request")
}
