// Package portable is the dataplane backend that runs on any Linux: one UDP
// socket per shard bound with SO_REUSEPORT, datagrams moved in batches with
// recvmmsg/sendmmsg, UDP GSO (UDP_SEGMENT) on send and UDP GRO on receive
// where the kernel offers them, large socket buffers.
package portable

import (
	"errors"
	"fmt"
	"github.com/mxp-dataplane/mxp/dataplane/internal/netpark"
	"io"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/internal/udpsock"
)

// Steering says how datagrams reach the shard that owns their connection
// when there is more than one shard.
type Steering uint8

const (
	// SteerAuto uses the BPF program when it loads, else the kernel's hash.
	SteerAuto Steering = iota
	// SteerBPF requires the SK_REUSEPORT program (bpf.LoadReuseport): it
	// picks the socket of the shard named by byte 7 of the UDP payload, the
	// connection ID's shard byte (wire.ConnIDShard). Needs CAP_BPF.
	SteerBPF
	// SteerHash leaves the choice to the kernel's SO_REUSEPORT hash of the
	// 4-tuple: a flow always reaches the same shard, so a connection stays
	// on the shard that took its handshake (which names itself in the
	// connection IDs it issues) until the peer's address changes.
	SteerHash
)

// Backend is the portable backend. The zero value is ready to use.
type Backend struct {
	Steering Steering
	// ThreadPerShard waits in ppoll on a thread locked to each shard
	// instead of in Go's network poller. The poller (the default) parks the
	// shard's goroutine without holding an OS thread, which costs fewer
	// context switches on hosts with few cores.
	ThreadPerShard bool

	note string // what Open settled for, for the selection log line
}

// Name returns "portable".
func (*Backend) Name() string { return "portable" }

// Notes says how the last Open steers datagrams to shards, and why not by
// BPF if it does not.
func (b *Backend) Notes() []string {
	if b.note == "" {
		return nil
	}
	return []string{b.note}
}

// Open binds cfg.Shards sockets to cfg.Addr (with SO_REUSEPORT when there
// are several), and with more than one shard attaches the steering the
// Backend's Steering asks for.
func (b *Backend) Open(cfg dataplane.Config) ([]dataplane.ShardConn, error) {
	cfg = cfg.WithDefaults()
	addr := cfg.Addr
	var shards []*shardConn
	closeAll := func() {
		for _, c := range shards {
			c.Close()
		}
	}
	for i := range cfg.Shards {
		c, err := openShard(cfg, addr, !b.ThreadPerShard)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("portable: shard %d: %w", i, err)
		}
		shards = append(shards, c)
		addr = c.local // later shards bind the port the first one got
	}
	b.note = ""
	if cfg.Shards > 1 && b.Steering != SteerHash {
		if err := steerByBPF(shards); err != nil {
			if b.Steering == SteerBPF {
				closeAll()
				return nil, fmt.Errorf("portable: steering: %w", err)
			}
			b.note = "shards steered by the kernel's 4-tuple hash: " + err.Error()
		} else {
			b.note = "shards steered by connection ID (SK_REUSEPORT program)"
		}
	}
	conns := make([]dataplane.ShardConn, len(shards))
	for i, c := range shards {
		conns[i] = c
	}
	return conns, nil
}

// shardConn is one shard's socket with its batch buffers. Only the shard's
// goroutine touches it, except Wake and Stats.
type shardConn struct {
	fd, wakeFD int
	local      netip.AddrPort
	v6         bool // AF_INET6 socket (dual-stack when bound to ::)
	gso, gro   bool
	features   Features
	maxDgram   int
	closed     atomic.Bool
	stats      dataplane.Counters
	// Network-poller mode: Wait parks in Go's poller on the socket (its
	// os.File) and Wake interrupts it; nil: a locked thread in ppoll.
	park     *netpark.Parker
	busyPoll time.Duration
	rxFull   bool      // the last receive filled the batch: more may be waiting
	rxIdle   bool      // the last receive found nothing: the next asks for one message
	peekBuf  [1]byte   // pollRead's peek
	steering io.Closer // the steering program, held by shard 0
	peer     peerState // Config.ConnectPeer

	rx rxState
	tx txState
}

func (c *shardConn) Stats() dataplane.Stats { return c.stats.Snapshot() }

// ConnectedPeer reports the peer the socket of a ShardConn opened by this
// backend is connected to (Config.ConnectPeer), as the kernel has it.
func ConnectedPeer(c dataplane.ShardConn) (netip.AddrPort, bool) {
	sc, ok := c.(*shardConn)
	if !ok {
		return netip.AddrPort{}, false
	}
	sa, err := unix.Getpeername(sc.fd)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return udpsock.AddrPortOf(sa), true
}

// FeaturesOf reports what the kernel offered a ShardConn opened by this backend.
func FeaturesOf(c dataplane.ShardConn) (Features, bool) {
	sc, ok := c.(*shardConn)
	if !ok {
		return Features{}, false
	}
	return sc.features, true
}

func (c *shardConn) LocalAddr() netip.AddrPort { return c.local }

func openShard(cfg dataplane.Config, addr netip.AddrPort, netpoll bool) (c *shardConn, err error) {
	connect := cfg.ConnectPeer && cfg.Shards == 1
	sock, err := udpsock.Open(addr, udpsock.Options{Nonblock: true, Buffer: cfg.SocketBuffer, DisableGSO: cfg.DisableGSO, DisableGRO: cfg.DisableGRO,
		Shared: cfg.Shards > 1, LockPort: connect})
	if err != nil {
		return nil, err
	}
	c = &shardConn{fd: sock.FD, wakeFD: -1, v6: sock.V6, maxDgram: cfg.MaxDatagram, local: sock.Local, gso: sock.GSO, gro: sock.GRO}
	c.peer.may = connect
	c.features = Features{GSO: sock.GSO, GRO: sock.GRO, RecvBuffer: sock.RecvBuffer, SendBuffer: sock.SendBuffer}
	if netpoll {
		c.busyPoll = cfg.BusyPoll
		// The os.File owns the descriptor from now on (Close closes it).
		f := os.NewFile(uintptr(sock.FD), "mxp-udp")
		if c.park, err = netpark.New(f, c.pollRead); err != nil {
			f.Close()
			c.fd = -1
			c.Close()
			return nil, err
		}
	} else if c.wakeFD, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		c.Close()
		return nil, os.NewSyscallError("eventfd", err)
	}
	c.rx.init(cfg.Batch, c.rxBufferSize())
	c.tx.init(cfg.Batch, cfg.MaxDatagram)
	return c, nil
}

// rxBufferSize is the receive buffer per message: a whole GRO super-datagram
// when GRO is on, else one datagram plus a byte to detect truncation.
func (c *shardConn) rxBufferSize() int {
	if c.gro {
		return 65535
	}
	return c.maxDgram + 1
}

func (c *shardConn) Release([]dataplane.Packet) {} // receive buffers are reused on the next Recv

// SendsWhileWaiting: sending (TxBuffers, Send: the send batch, GSO state
// and counters) shares nothing with receiving and waiting, so another
// goroutine may send while the shard waits (dataplane.Engine.TryTurn).
func (c *shardConn) SendsWhileWaiting() bool { return true }

// Lendable: in the network poller, receiving and waiting need no thread
// of their own, so a goroutine in Engine.Await may do them.
func (c *shardConn) Lendable() bool { return c.park != nil }

// ThreadAffine reports whether the shard must stay on one OS thread: only
// when it waits in ppoll.
func (c *shardConn) ThreadAffine() bool { return c.park == nil }

// Wait blocks until the socket is readable, Wake is called, or the deadline passes.
func (c *shardConn) Wait(deadline, now time.Time) error {
	if c.park != nil {
		return c.waitNetpoll(deadline, now)
	}
	if !deadline.IsZero() {
		if now.IsZero() {
			now = time.Now()
		}
		if !now.Before(deadline) {
			return nil
		}
	}
	fds := [2]unix.PollFd{{Fd: int32(c.fd), Events: unix.POLLIN}, {Fd: int32(c.wakeFD), Events: unix.POLLIN}}
	c.stats.Wakeups.Add(1)
	if err := udpsock.Ppoll(fds[:], deadline, 0); err != nil {
		return err
	}
	if fds[1].Revents != 0 {
		udpsock.Drain(c.wakeFD)
	}
	return nil
}

// waitNetpoll parks in Go's network poller. The poller is edge-triggered,
// so the wait itself reads (into the receive batch, handed out by the next
// Recv): it parks only after a read found nothing.
func (c *shardConn) waitNetpoll(deadline, now time.Time) error {
	if c.rx.msg < c.rx.got {
		return nil
	}
	// A deadline that passed needs no check here: the poller returns at
	// once for it.
	if c.busyPoll > 0 {
		if done, err := c.park.Spin(c.busyPoll, deadline); done || err != nil {
			return err
		}
	}
	return c.park.Park(deadline, now, &c.stats.Wakeups)
}

// pollRead is the poller's readiness check: a receive into the batch the
// next Recv hands out; work when it got something.
//
// The read before parking, after a receive that drained the socket, only
// peeks (recvfrom of one byte, MSG_PEEK): no message headers to copy in for
// the usual answer, nothing; if something came, the receive follows.
func (c *shardConn) pollRead() (bool, error) {
	if c.park.Probing() && !c.rxFull && !c.peek() {
		c.rxIdle = true // as receive on EAGAIN
		return false, nil
	}
	return c.receive(len(c.rx.hdrs))
}

// Wake makes the shard's Wait return.
func (c *shardConn) Wake() {
	if c.closed.Load() {
		return
	}
	if c.park != nil {
		c.park.Wake()
		return
	}
	udpsock.Signal(c.wakeFD)
}

func (c *shardConn) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	var errs []error
	if c.park != nil {
		errs = append(errs, c.park.File().Close())
	} else if c.fd >= 0 {
		errs = append(errs, unix.Close(c.fd))
	}
	if c.steering != nil {
		errs = append(errs, c.steering.Close())
	}
	if c.wakeFD >= 0 {
		errs = append(errs, unix.Close(c.wakeFD))
	}
	return errors.Join(errs...)
}

// Probe checks that this kernel can run the backend (UDP sockets with
// SO_REUSEPORT and recvmmsg/sendmmsg: Linux 3.9+) and returns it.
func Probe(cfg dataplane.Config) (dataplane.Backend, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	}
	if err != nil {
		return nil, &dataplane.UnavailableError{Backend: "portable", Feature: "UDP sockets", Reason: err.Error()}
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return nil, &dataplane.UnavailableError{Backend: "portable", Feature: "SO_REUSEPORT", Reason: err.Error()}
	}
	if errno := tryRecvmmsg(fd); errno == unix.ENOSYS {
		return nil, &dataplane.UnavailableError{Backend: "portable", Feature: "recvmmsg", Reason: "ENOSYS"}
	}
	return &Backend{}, nil
}
