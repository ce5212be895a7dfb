package portable

// This file is the backend's one use of unsafe: the msghdr arrays of
// recvmmsg/sendmmsg point at Go memory (buffers, addresses, control data)
// allocated once per shard with make and kept for the shard's life; the Go
// heap does not move objects, and each array stays referenced by the shard.
// The single-datagram calls and disconnect's AF_UNSPEC address pass
// pointers the same way, for the length of the call.

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/internal/udpsock"
)

var (
	cmsgHdrLen   = unix.CmsgLen(0)
	segCmsgSpace = unix.CmsgSpace(2) // UDP_SEGMENT carries a u16
	groCmsgSpace = unix.CmsgSpace(4) // UDP_GRO carries an int
)

// rxState holds a shard's receive batch and what is left of the last
// recvmmsg when GRO split it into more datagrams than the caller had room for.
type rxState struct {
	bufs  []byte
	size  int
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names [][udpsock.NameLen]byte
	ctrl  []byte

	got, msg, off int // messages received; next message; offset in it
	seg           int // GRO segment size of message msg
	// dirty: the headers the kernel wrote back (name and control lengths,
	// flags) since they were last set; the others still hold their
	// initial values, which a recvmmsg that found no datagram leaves alone.
	dirty int
	from  netip.AddrPort
}

func (r *rxState) init(batch, size int) {
	r.size = size
	r.bufs = make([]byte, batch*size)
	r.hdrs = make([]unix.Mmsghdr, batch)
	r.iovs = make([]unix.Iovec, batch)
	r.names = make([][udpsock.NameLen]byte, batch)
	r.ctrl = make([]byte, batch*groCmsgSpace)
	for i := range r.hdrs {
		r.iovs[i].Base = &r.bufs[i*size]
		r.iovs[i].SetLen(size)
		h := &r.hdrs[i].Hdr
		h.Iov = &r.iovs[i]
		h.Iovlen = 1
		h.Name = &r.names[i][0]
		h.Control = &r.ctrl[i*groCmsgSpace]
	}
	r.dirty = batch
	r.reset()
}

// reset sets the headers back to what recvmmsg needs, for the ones the
// last receive wrote to.
func (r *rxState) reset() {
	for i := range r.dirty {
		h := &r.hdrs[i].Hdr
		h.Namelen = unix.SizeofSockaddrInet6
		h.SetControllen(groCmsgSpace)
		h.Flags = 0
	}
	r.dirty = 0
}

// Recv fills pkts without blocking: first with what remains of the last
// receive call, else from one recvmmsg of up to len(pkts) messages.
func (c *shardConn) Recv(pkts []dataplane.Packet) (int, error) {
	r := &c.rx
	if r.msg >= r.got {
		if c.park != nil && !c.rxFull {
			// Network-poller mode: the last read drained the socket, and
			// Wait reads before it parks, so a read here would find
			// nothing or what Wait is about to take anyway.
			return 0, nil
		}
		if _, err := c.receive(min(len(pkts), len(r.hdrs))); err != nil {
			return 0, err
		}
	}
	k, bytes, splits, dropped := 0, 0, 0, 0
	for k < len(pkts) && r.msg < r.got {
		m := &r.hdrs[r.msg]
		n := int(m.Len)
		if m.Hdr.Flags&unix.MSG_TRUNC != 0 || n >= r.size && !c.gro || n > r.size || !r.from.IsValid() ||
			r.seg <= 0 && n > c.maxDgram {
			// Longer than MaxDatagram, an address we cannot read, or a
			// coalesced buffer the kernel gave no segment size for (seen
			// with a generic-XDP peer on veth): its datagram boundaries are
			// lost, so it is dropped and counted rather than handed on whole.
			dropped++
			r.nextMessage(c)
			continue
		}
		buf := r.bufs[r.msg*r.size : r.msg*r.size+n]
		d, next := groSegment(buf, r.seg, r.off)
		pkts[k] = dataplane.Packet{Buf: d, Addr: r.from}
		k++
		bytes += len(d)
		if next < len(buf) {
			r.off = next
			continue
		}
		if r.seg > 0 && n > r.seg {
			splits++
		}
		r.nextMessage(c)
	}
	c.stats.AddRx(k, bytes, splits, dropped)
	return k, nil
}

// receive runs one non-blocking recvmmsg of up to n messages into the
// receive batch, and reports whether it got any.
//
// The first receive after one that found nothing asks for one message:
// after an idle spell a datagram usually comes alone (a request, a
// reply), and recvmmsg, having received it, would look for a second and
// find nothing at the cost of another message header's copy and socket
// lookup. Whatever else came stays for the next receive, which asks for
// the whole batch: Wait reads before it parks, so it is not missed.
func (c *shardConn) receive(n int) (bool, error) {
	r := &c.rx
	r.reset()
	if c.rxIdle {
		n = 1
	}
	got, errno := r.recv(c.fd, n)
	switch errno {
	case 0:
	case unix.EAGAIN, unix.EINTR, unix.ECONNREFUSED:
		c.rxFull, c.rxIdle = false, true
		return false, nil
	default:
		name := "recvmmsg"
		if n == 1 {
			name = "recvmsg"
		}
		return false, os.NewSyscallError(name, errno)
	}
	// A full batch may have left more behind; a one-message receive
	// after an idle spell is left to Wait's read.
	c.rxFull = got == n && !c.rxIdle
	c.rxIdle = false
	r.got, r.msg, r.off, r.dirty = got, 0, 0, got
	c.stats.RxCalls.Add(1)
	if r.got > 0 {
		r.startMessage(c)
	}
	return r.got > 0, nil
}

// Raw system calls: the calls on one datagram (recv and send of a lone
// one, peek) go without entersyscall/exitsyscall, which tell the Go
// scheduler that the thread may block (~0.04 µs per call here). They
// cannot block — the socket is non-blocking — and take a few microseconds
// at most, the time of one datagram's way through the kernel, so the
// scheduler has nothing to do meanwhile. Batch calls, which may take
// longer, are made the usual way.

// recv receives up to n datagrams into the batch's first headers without
// blocking. One datagram is a recvmsg (raw): recvmmsg's own loop and
// per-message bookkeeping cost more than the system call's difference
// (~0.1 µs per receive here), and a lone datagram is the common case it is
// asked for.
func (r *rxState) recv(fd, n int) (int, unix.Errno) {
	if n == 1 {
		k, _, errno := unix.RawSyscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.hdrs[0].Hdr)), unix.MSG_DONTWAIT)
		if errno != 0 {
			return 0, errno
		}
		r.hdrs[0].Len = uint32(k)
		return 1, 0
	}
	got, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(n), unix.MSG_DONTWAIT, 0, 0)
	return int(got), errno
}

// peek reports whether the socket may have something for receive: a
// datagram waits (recvfrom of one byte with MSG_PEEK, taking nothing; a
// raw call), or an error other than EAGAIN, which receive then meets and
// handles.
func (c *shardConn) peek() bool {
	_, _, errno := unix.RawSyscall6(unix.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(&c.peekBuf[0])), 1,
		unix.MSG_DONTWAIT|unix.MSG_PEEK, 0, 0)
	return errno != unix.EAGAIN
}

func (r *rxState) nextMessage(c *shardConn) {
	r.msg++
	r.off = 0
	if r.msg < r.got {
		r.startMessage(c)
	}
}

// startMessage reads message msg's source address and GRO segment size.
func (r *rxState) startMessage(c *shardConn) {
	r.from = udpsock.AddrFromName(r.names[r.msg][:])
	r.seg = 0
	h := &r.hdrs[r.msg].Hdr
	ctrl := r.ctrl[r.msg*groCmsgSpace : r.msg*groCmsgSpace+int(h.Controllen)]
	for len(ctrl) >= cmsgHdrLen {
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		l := int(cm.Len)
		if l < cmsgHdrLen || l > len(ctrl) {
			break
		}
		if cm.Level == unix.SOL_UDP && cm.Type == unix.UDP_GRO && l >= cmsgHdrLen+4 {
			r.seg = int(int32(binary.NativeEndian.Uint32(ctrl[cmsgHdrLen:])))
		}
		next := unix.CmsgSpace(l - cmsgHdrLen)
		if next > len(ctrl) {
			break
		}
		ctrl = ctrl[next:]
	}
}

// txState holds a shard's send buffers and the msghdrs built for one Send.
type txState struct {
	slab  []byte
	size  int
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names [][udpsock.NameLen]byte
	ctrl  []byte
	spans []span // the datagrams (indexes in pkts) of each message
	// want is how many slots TxBuffers hands out: it doubles while Sends
	// take all it handed out, and halves while they take few.
	want int
}

// minTxWant is the fewest send slots TxBuffers hands out.
const minTxWant = 8

type span struct{ start, end int }

func (t *txState) init(batch, size int) {
	t.size = size
	t.slab = make([]byte, batch*size)
	t.hdrs = make([]unix.Mmsghdr, batch)
	t.iovs = make([]unix.Iovec, batch)
	t.names = make([][udpsock.NameLen]byte, batch)
	t.ctrl = make([]byte, batch*segCmsgSpace)
	t.spans = make([]span, batch)
	t.want = min(minTxWant, batch)
	for i := range t.hdrs {
		h := &t.hdrs[i].Hdr
		h.Name = &t.names[i][0]
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&t.ctrl[i*segCmsgSpace]))
		cm.Level, cm.Type = unix.SOL_UDP, unix.UDP_SEGMENT
		cm.SetLen(unix.CmsgLen(2))
	}
}

// TxBuffers hands out the shard's send slots: MaxDatagram bytes each, as
// many as recent sends used (t.want, at least minTxWant): a turn that
// sends one reply does not set up a whole batch of slots, and one that
// fills what it got is given more by the next call (the engine asks again
// when the handler filled every slot).
func (c *shardConn) TxBuffers(pkts []dataplane.Packet) int {
	t := &c.tx
	n := min(len(pkts), len(t.hdrs), t.want)
	for i := range n {
		pkts[i].Buf = t.slab[i*t.size : i*t.size : (i+1)*t.size]
	}
	return n
}

// Send builds one message per GSO run (or per datagram without GSO) and
// sends them with sendmmsg (a lone datagram with sendto).
func (c *shardConn) Send(pkts []dataplane.Packet) (int, error) {
	pkts = pkts[:min(len(pkts), len(c.tx.hdrs))]
	switch t := &c.tx; {
	case len(pkts) == 0: // an idle turn says nothing about the traffic
	case len(pkts) >= t.want:
		t.want = min(2*t.want, len(t.hdrs))
	case len(pkts) < t.want/4:
		t.want = max(t.want/2, min(minTxWant, len(t.hdrs)))
	}
	m, dropped := c.buildMessages(pkts)
	t := &c.tx
	sent, bytes, gsoSends := 0, 0, 0
	for done := 0; done < m; {
		r, errno := t.send(c.fd, done, m)
		c.stats.TxCalls.Add(1)
		switch errno {
		case 0:
			for _, sp := range t.spans[done : done+r] {
				sent += sp.end - sp.start
				if sp.end-sp.start > 1 {
					gsoSends++
				}
				for _, q := range pkts[sp.start:sp.end] {
					bytes += len(q.Buf)
				}
			}
			done += r
		case unix.EINTR:
		case unix.EAGAIN:
			if !c.waitWritable() {
				// The socket buffer stays full: drop the rest, as UDP may.
				dropped += t.spans[m-1].end - t.spans[done].start
				done = m
			}
		case unix.EIO:
			sp := t.spans[done]
			if sp.end-sp.start == 1 {
				dropped++
				done++
				continue
			}
			// The device cannot segment: turn GSO off for this socket and
			// send the rest one datagram per message.
			c.gso = false
			c.stats.AddTx(sent, bytes, gsoSends, dropped)
			n, err := c.Send(pkts[sp.start:])
			return sent + n, err
		case unix.EBADF, unix.ENOTSOCK, unix.EFAULT:
			dropped += t.spans[m-1].end - t.spans[done].start
			c.stats.AddTx(sent, bytes, gsoSends, dropped)
			return sent, os.NewSyscallError("sendmmsg", errno)
		default:
			// The first message was refused (EMSGSIZE, ENETUNREACH, ...): drop it.
			dropped += t.spans[done].end - t.spans[done].start
			done++
		}
	}
	c.stats.AddTx(sent, bytes, gsoSends, dropped)
	return sent, nil
}

// send sends messages [done, m) of the built batch and returns how many
// went. A lone datagram (no GSO run) is a sendto (raw): without sendmmsg's
// message header and iovec to copy in, it costs ~0.2 µs less here, and a
// reply or request sent alone is the common case.
func (t *txState) send(fd, done, m int) (int, unix.Errno) {
	if sp := t.spans[done]; m-done == 1 && sp.end-sp.start == 1 {
		h, iov := &t.hdrs[done].Hdr, &t.iovs[sp.start]
		name := uintptr(unsafe.Pointer(h.Name))
		if h.Namelen == 0 {
			name = 0 // to the connected peer (peerState)
		}
		_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(unsafe.Pointer(iov.Base)), uintptr(iov.Len), 0,
			name, uintptr(h.Namelen))
		if errno != 0 {
			return 0, errno
		}
		return 1, 0
	}
	r, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&t.hdrs[done])), uintptr(m-done), 0, 0, 0)
	return int(r), errno
}

// buildMessages fills the msghdrs for pkts and returns how many, and how many
// datagrams it dropped as unsendable (a destination this socket cannot reach,
// a datagram longer than MaxDatagram).
func (c *shardConn) buildMessages(pkts []dataplane.Packet) (m, dropped int) {
	t := &c.tx
	for i := 0; i < len(pkts); {
		namelen, ok := uint32(0), true
		if pkts[i].Addr != c.peer.peer || !c.peer.peer.IsValid() {
			namelen, ok = udpsock.PutName(t.names[m][:], pkts[i].Addr, c.v6)
		}
		if !ok || len(pkts[i].Buf) > c.maxDgram {
			dropped++
			i++
			continue
		}
		end := i + 1
		if c.gso {
			end = gsoRun(pkts, i, maxGSOSegments, maxGSOBytes)
		}
		for j := i; j < end; j++ {
			t.iovs[j] = unix.Iovec{}
			if b := pkts[j].Buf; len(b) > 0 {
				t.iovs[j].Base = &b[0]
				t.iovs[j].SetLen(len(b))
			}
		}
		h := &t.hdrs[m].Hdr
		h.Namelen = namelen
		h.Iov = &t.iovs[i]
		h.SetIovlen(end - i)
		if end-i > 1 {
			off := m * segCmsgSpace
			binary.NativeEndian.PutUint16(t.ctrl[off+cmsgHdrLen:], uint16(len(pkts[i].Buf)))
			h.Control = &t.ctrl[off]
			h.SetControllen(segCmsgSpace)
		} else {
			h.Control = nil
			h.SetControllen(0)
		}
		t.spans[m] = span{i, end}
		m++
		i = end
	}
	return m, dropped
}

// peerState is Config.ConnectPeer's: whether the socket may be connected,
// and the peer it is connected to (a message to it then carries no
// address, and the kernel keeps the route: ~0.15 µs less per send on
// loopback here). A datagram to another peer goes out addressed, as Linux
// allows on a connected UDP socket; that peer is not heard until the
// handler says so.
type peerState struct {
	may  bool           // Config.ConnectPeer, with one shard
	peer netip.AddrPort // connected to (zero: not connected)
}

// ConnectPeer (dataplane.PeerConnector) connects the socket to peer, or
// with the zero AddrPort leaves it unconnected; a shard opened without
// Config.ConnectPeer (or with several shards) ignores it.
func (c *shardConn) ConnectPeer(peer netip.AddrPort) error {
	p := &c.peer
	switch {
	case !p.may || peer == p.peer:
		return nil
	case !peer.IsValid():
		return c.disconnect()
	}
	if err := unix.Connect(c.fd, udpsock.Sockaddr(peer, c.v6)); err != nil {
		c.disconnect() // what a failed connect leaves is not worth keeping
		return fmt.Errorf("portable: connect %v: %w", peer, err)
	}
	p.peer = peer
	return nil
}

func (c *shardConn) disconnect() error {
	if !c.peer.peer.IsValid() {
		return nil
	}
	if err := disconnect(c.fd); err != nil {
		return err
	}
	c.peer.peer = netip.AddrPort{}
	return nil
}

// disconnect dissolves the socket's association with a peer: a connect to
// an AF_UNSPEC address (which the unix package has no Sockaddr for). The
// port stays (the socket was bound with udpsock.Options.LockPort).
func disconnect(fd int) error {
	var sa [unix.SizeofSockaddrInet6]byte // sa_family 0: AF_UNSPEC
	if _, _, errno := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa[0])), uintptr(len(sa))); errno != 0 {
		return os.NewSyscallError("connect AF_UNSPEC", errno)
	}
	return nil
}

// waitWritable waits briefly for room in the socket's send buffer.
func (c *shardConn) waitWritable() bool {
	fds := [1]unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLOUT}}
	n, err := unix.Poll(fds[:], 10)
	return err == nil && n > 0
}

// tryRecvmmsg calls recvmmsg on fd without blocking, to see if the kernel has it.
func tryRecvmmsg(fd int) unix.Errno {
	var hdr [1]unix.Mmsghdr
	_, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdr[0])), 1, unix.MSG_DONTWAIT, 0, 0)
	return errno
}
