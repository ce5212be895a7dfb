// Package dataplane is MXP's sharded packet engine. It moves batches of UDP
// datagrams between a backend (AF_XDP, io_uring, or portable recvmmsg/sendmmsg
// sockets) and a Handler — the protocol side, supplied by the runtime — one
// shard per core, with no locks, channels or allocations on the hot path.
//
// A shard is a goroutine locked to its OS thread (optionally pinned to a CPU)
// that owns one ShardConn of the backend and one Handler. Packets for a
// connection reach the shard that owns it: backends steer by the shard index in
// the connection ID (wire.ConnIDShard), and handshakes by a hash.
//
// dataplane never imports the transport core: the runtime plugs the core in
// through Handler.
package dataplane

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"time"
)

// Packet is one UDP datagram. On receive, Buf is a view of backend memory
// valid only until the Handler's Receive returns, and Addr is the source. On
// send, Buf is a backend buffer (len 0, cap the largest datagram) that the
// Handler fills, and Addr is the destination.
type Packet struct {
	Buf  []byte
	Addr netip.AddrPort
}

// Handler is the protocol side of one shard. Its methods are called only
// within the shard's turns, one at a time — on the shard's goroutine, or on
// one that runs a turn for it (Engine.TryTurn, Engine.Await) — so a Handler
// needs no locks.
type Handler interface {
	// Receive takes a batch of received datagrams. The buffers are the
	// backend's and return to it when Receive returns: copy what must be kept.
	Receive(pkts []Packet, now time.Time)
	// Transmit fills up to len(out) datagrams to send, writing into out[i].Buf
	// (appending to the empty slice, within its capacity) and setting
	// out[i].Addr, and returns how many it filled. The shard calls it on
	// every turn of its loop (after each received batch, on Wake, at the
	// deadline) until it returns fewer than len(out), a few batches per turn
	// so that receiving goes on while a handler has much to send.
	Transmit(out []Packet, now time.Time) int
	// Deadline returns when the shard should call Transmit next even if
	// nothing arrives; the zero time means no deadline.
	Deadline() time.Time
}

// ShardConn is one shard's share of a backend: its sockets or rings. Only the
// shard's goroutine calls it, except Wake (and what SendsWhileWaiting and
// Lendable allow).
type ShardConn interface {
	// Recv fills pkts with received datagrams without blocking and returns how
	// many; 0 means none ready. The buffers stay the backend's, valid until
	// Release; the caller releases each batch before its next Recv (a backend
	// may reuse the memory of the previous batch then).
	Recv(pkts []Packet) (int, error)
	// Release returns the buffers of pkts (as filled by Recv) to the backend.
	Release(pkts []Packet)
	// TxBuffers sets pkts[i].Buf to empty send buffers of the backend and
	// returns how many it could provide (fewer when its send buffers are all
	// in flight).
	TxBuffers(pkts []Packet) int
	// Send transmits pkts, filled buffers from the last TxBuffers, and takes
	// back every buffer that call handed out (those not in pkts return
	// unused), so each TxBuffers is followed by one Send, maybe of none. It
	// returns how many were sent; a datagram the kernel refuses is dropped
	// and counted, as UDP may.
	Send(pkts []Packet) (int, error)
	// Wait blocks until a datagram may be ready, Wake is called, or the
	// deadline passes (the zero time: no deadline). now is the caller's
	// latest reading of the clock, taken just before (the zero time: none):
	// a backend measures the deadline against it rather than reading the
	// clock again (a few tens of ns, twice per round trip).
	Wait(deadline, now time.Time) error
	// Wake makes a current or next Wait return. Safe from any goroutine.
	Wake()
	// LocalAddr is the bound address (with the port chosen when 0 was asked).
	LocalAddr() netip.AddrPort
	// Stats returns the shard's counters so far.
	Stats() Stats
	// Close releases the shard's sockets or rings.
	Close() error
}

// SendsWhileWaiting is implemented by a ShardConn whose TxBuffers and Send
// may run on another goroutine while the shard's goroutine is in Wait (its
// send and receive state are apart), which Engine.TryTurn needs.
type SendsWhileWaiting interface {
	SendsWhileWaiting() bool
}

// Lender is implemented by a Handler that says when its shard may lend its
// wait to a goroutine in Engine.Await: not while goroutines wait for what
// the shard receives in another way (they would wait until the shard
// takes its wait back).
type Lender interface {
	MayLend() bool
}

// Lendable is implemented by a ShardConn whose Recv, Release and Wait may
// run on any goroutine, one at a time (no thread of their own: a wait in
// Go's network poller), which Engine.Await needs.
type Lendable interface {
	Lendable() bool
}

// Backend opens the per-shard connections of one kind of I/O.
type Backend interface {
	// Name is the backend's name in logs, metrics and reports ("portable", ...).
	Name() string
	// Open binds cfg.Addr and returns one ShardConn per shard.
	Open(cfg Config) ([]ShardConn, error)
}

// Config is what a backend and the engine need to know.
type Config struct {
	// Addr is the local UDP address to bind (IPv4 or IPv6; port 0 picks one).
	Addr netip.AddrPort
	// Shards is the number of shards (goroutines, sockets or rings); a plain
	// setting so larger hosts just work. 0 means 1.
	Shards int
	// Batch is the number of datagrams moved per call. 0 means DefaultBatch.
	Batch int
	// MaxDatagram is the largest UDP payload sent or received. 0 means DefaultMaxDatagram.
	MaxDatagram int
	// Pin pins shard i's thread to CPU i modulo the CPUs available.
	Pin bool
	// DisableGSO and DisableGRO turn the segmentation offloads off even where
	// the kernel supports them (for tests and comparisons).
	DisableGSO, DisableGRO bool
	// SocketBuffer is the socket send and receive buffer size to ask for, in
	// bytes. 0 means DefaultSocketBuffer.
	SocketBuffer int
	// BusyPoll is how long a shard that ran out of work keeps polling its
	// socket before it parks, yielding its CPU to other goroutines between
	// polls: a packet that comes within it is read without the wake-up of
	// a parked thread (several microseconds, more in a VM), at the price of
	// that much CPU after each burst of traffic. 0 turns it off. Backends
	// that cannot poll ignore it.
	BusyPoll time.Duration
	// ConnectPeer lets a lone shard's socket be connected to one peer
	// (PeerConnector): the kernel then keeps the route and source
	// address, and each send costs less (~0.15 µs on loopback here). The
	// socket keeps its port when it disconnects. While connected the
	// kernel takes datagrams from that peer only (sends to others still
	// go), so this is for a host whose handler knows which peers it waits
	// to hear from (a client): it connects the socket while that is one
	// peer and disconnects it before it waits for another. Ignored with
	// more than one shard; only the portable backend takes it.
	ConnectPeer bool
}

// PeerConnector is a ShardConn whose socket can be connected to one peer
// (Config.ConnectPeer).
type PeerConnector interface {
	// ConnectPeer connects the socket to peer, or, with the zero
	// AddrPort, leaves it unconnected. Call it from the shard's handler,
	// in a turn.
	ConnectPeer(peer netip.AddrPort) error
}

// Defaults of Config.
const (
	DefaultBatch        = 64
	DefaultMaxDatagram  = 1500
	DefaultSocketBuffer = 8 << 20
)

// WithDefaults returns cfg with every zero setting replaced by its default.
func (cfg Config) WithDefaults() Config {
	if cfg.Shards <= 0 {
		cfg.Shards = 1
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.MaxDatagram <= 0 {
		cfg.MaxDatagram = DefaultMaxDatagram
	}
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = DefaultSocketBuffer
	}
	return cfg
}

// Stats are one shard's counters. Every field only grows.
type Stats struct {
	RxPackets   uint64 // datagrams handed to the Handler
	RxBytes     uint64
	RxCalls     uint64 // receive system calls (or ring reaps) that returned data
	RxGROSplits uint64 // coalesced receive buffers split into datagrams
	RxDropped   uint64 // datagrams dropped on receive (truncated, bad metadata)
	TxPackets   uint64 // datagrams sent
	TxBytes     uint64
	TxCalls     uint64 // send system calls (or ring submissions)
	TxGSOSends  uint64 // messages sent as one GSO super-datagram
	TxDropped   uint64 // datagrams the kernel refused
	Wakeups     uint64 // Wait calls that blocked
	Borrows     uint64 // Engine.Await calls that ran the shard's turns (Engine.Stats only)
}

// Add returns the sum of s and o, for totals over shards.
func (s Stats) Add(o Stats) Stats { return s.zip(o, func(a, b uint64) uint64 { return a + b }) }

// Sub returns s minus o, field by field: the counts between two readings.
func (s Stats) Sub(o Stats) Stats { return s.zip(o, func(a, b uint64) uint64 { return a - b }) }

// zip combines s and o counter by counter.
func (s Stats) zip(o Stats, f func(a, b uint64) uint64) Stats {
	a, b := s.counters(), o.counters()
	for i := range a {
		*a[i] = f(*a[i], *b[i])
	}
	return s
}

// counters lists every field of s (TestStatsAddSub checks the list is whole).
func (s *Stats) counters() []*uint64 {
	return []*uint64{&s.RxPackets, &s.RxBytes, &s.RxCalls, &s.RxGROSplits, &s.RxDropped,
		&s.TxPackets, &s.TxBytes, &s.TxCalls, &s.TxGSOSends, &s.TxDropped, &s.Wakeups, &s.Borrows}
}

// ErrUnavailable wraps every reason a backend cannot run here (kernel too old,
// feature disabled, missing capability), so that backend selection can fall
// back and say why.
var ErrUnavailable = errors.New("backend unavailable")

// UnavailableError says why a backend or one of its features cannot be used.
type UnavailableError struct {
	Backend string // "xdp", "uring", "portable"
	Feature string // what is missing: "io_uring", "UDP_SEGMENT", "CAP_NET_ADMIN", ...
	Reason  string // a sentence for the log: the kernel version, the errno, the flag
}

func (e *UnavailableError) Error() string {
	return e.Backend + ": " + e.Feature + " unavailable: " + e.Reason
}

func (e *UnavailableError) Unwrap() error { return ErrUnavailable }

// Counters are a shard's Stats kept with atomics, so that Stats can be read
// from any goroutine while the shard updates them (once per batch, not per
// datagram). Backends embed one and return Snapshot from ShardConn.Stats.
type Counters struct {
	RxPackets, RxBytes, RxCalls, RxGROSplits, RxDropped atomic.Uint64
	TxPackets, TxBytes, TxCalls, TxGSOSends, TxDropped  atomic.Uint64
	Wakeups                                             atomic.Uint64
}

// AddRx adds a receive's figures, skipping the zeros: each add is a
// locked instruction (~10-20 ns here), and most receives split and drop
// nothing.
func (c *Counters) AddRx(packets, bytes, groSplits, dropped int) {
	if packets > 0 {
		c.RxPackets.Add(uint64(packets))
		c.RxBytes.Add(uint64(bytes))
	}
	if groSplits > 0 {
		c.RxGROSplits.Add(uint64(groSplits))
	}
	if dropped > 0 {
		c.RxDropped.Add(uint64(dropped))
	}
}

// AddTx adds a send's figures, skipping the zeros (as AddRx).
func (c *Counters) AddTx(packets, bytes, gsoSends, dropped int) {
	if packets > 0 {
		c.TxPackets.Add(uint64(packets))
		c.TxBytes.Add(uint64(bytes))
	}
	if gsoSends > 0 {
		c.TxGSOSends.Add(uint64(gsoSends))
	}
	if dropped > 0 {
		c.TxDropped.Add(uint64(dropped))
	}
}

// Snapshot reads the counters.
func (c *Counters) Snapshot() Stats {
	return Stats{
		RxPackets: c.RxPackets.Load(), RxBytes: c.RxBytes.Load(), RxCalls: c.RxCalls.Load(),
		RxGROSplits: c.RxGROSplits.Load(), RxDropped: c.RxDropped.Load(),
		TxPackets: c.TxPackets.Load(), TxBytes: c.TxBytes.Load(), TxCalls: c.TxCalls.Load(),
		TxGSOSends: c.TxGSOSends.Load(), TxDropped: c.TxDropped.Load(), Wakeups: c.Wakeups.Load(),
	}
}
