package xdp

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/bpf"
	"github.com/mxp-dataplane/mxp/dataplane"
	"github.com/mxp-dataplane/mxp/dataplane/dptest"
	"github.com/mxp-dataplane/mxp/dataplane/portable"
	"github.com/mxp-dataplane/mxp/testnet"
)

// inNetns opens the backend's sockets inside a test host's namespace.
type inNetns struct {
	Backend
	host *testnet.Host
}

func (b *inNetns) Open(cfg dataplane.Config) (conns []dataplane.ShardConn, err error) {
	if e := b.host.Do(func() error { conns, err = b.Backend.Open(cfg); return err }); e != nil && err == nil {
		err = e
	}
	return conns, err
}

// requireXDP skips unless namespaces can be built and this process may run
// the backend (checked inside a fresh namespace, with the address).
func requireXDP(t *testing.T) {
	t.Helper()
	testnet.Require(t)
	if _, err := Probe(dataplane.Config{}); err != nil {
		t.Skipf("skipping: %v", err)
	}
}

func topology(t *testing.T, prefix string, queues int, v6 bool) (a, b *testnet.Host) {
	t.Helper()
	topo := testnet.NewT(t, testnet.Config{Prefix: prefix, Queues: queues, IPv6: v6})
	return topo.Hosts[0], topo.Hosts[1]
}

// echo is the server's Handler: it sends every datagram back to where it
// came from, and records which shard got which connection ID shard byte.
type echo struct {
	shard, nshards int
	queue          [][]byte
	to             []netip.AddrPort
	misrouted      *atomic.Uint64
	got            *atomic.Uint64
	// handshakes counts handshake packets; misroutedHS those that reached
	// another shard than the sender's (whose TX queue is its shard index).
	handshakes, misroutedHS *atomic.Uint64
	// conn, once set, is the shard's connection: Transmit checks its frame
	// accounting now and then, from the shard's own goroutine.
	conn       atomic.Pointer[dataplane.ShardConn]
	turns      int
	badAccount *atomic.Uint64
	checks     *atomic.Uint64
}

func (e *echo) Receive(pkts []dataplane.Packet, _ time.Time) {
	for _, p := range pkts {
		if len(p.Buf) >= 17 && p.Buf[16]&0x01 != 0 {
			e.handshakes.Add(1)
			if int(binary.LittleEndian.Uint32(p.Buf[8:]))%e.nshards != e.shard {
				e.misroutedHS.Add(1)
			}
		} else if len(p.Buf) >= 8 && int(p.Buf[7])%e.nshards != e.shard {
			e.misrouted.Add(1)
		}
		e.queue = append(e.queue, append([]byte(nil), p.Buf...))
		e.to = append(e.to, p.Addr)
	}
	e.got.Add(uint64(len(pkts)))
}

func (e *echo) Transmit(out []dataplane.Packet, _ time.Time) int {
	if c := e.conn.Load(); c != nil && e.turns%16 == 0 {
		a, _ := Accounting(*c)
		if !a.Balanced() {
			e.badAccount.Add(1)
		}
		e.checks.Add(1)
	}
	e.turns++
	n := min(len(out), len(e.queue))
	for i := range n {
		out[i].Buf = append(out[i].Buf, e.queue[i]...)
		out[i].Addr = e.to[i]
	}
	e.queue = e.queue[n:]
	e.to = e.to[n:]
	if len(e.queue) == 0 {
		e.queue, e.to = e.queue[:0:0], e.to[:0:0]
	}
	return n
}

func (*echo) Deadline() time.Time { return time.Time{} }

// pinger is the client's Handler: shard s sends count datagrams whose
// connection ID names shard cidOf(s, seq), keeping at most window in
// flight over all shards, and checks every reply.
type pinger struct {
	shard    int
	dst      netip.AddrPort
	size     int
	count    int
	cidOf    func(shard, seq int) (cid byte, handshake bool)
	sent     int
	inFlight *atomic.Int64
	replies  *atomic.Uint64
	corrupt  *atomic.Uint64
	window   int64
}

// payload fills an MXP-like datagram: connection ID shard byte cid, the
// sender's shard and sequence number where the packet number goes, and the
// flags byte with HANDSHAKE or not.
func payload(b []byte, shard, seq int, cid byte, handshake bool) {
	for i := range b {
		b[i] = byte(seq*7 + i)
	}
	b[7] = cid
	binary.LittleEndian.PutUint32(b[8:], uint32(shard))
	binary.LittleEndian.PutUint32(b[12:], uint32(seq))
	if len(b) > 16 {
		b[16] = 0x02 // ACK_ELICITING
		if handshake {
			b[16] = 0x01
		}
	}
}

func (p *pinger) Receive(pkts []dataplane.Packet, _ time.Time) {
	want := make([]byte, p.size)
	for _, pk := range pkts {
		p.inFlight.Add(-1)
		p.replies.Add(1)
		if len(pk.Buf) != p.size || pk.Addr != p.dst {
			p.corrupt.Add(1)
			continue
		}
		shard := int(binary.LittleEndian.Uint32(pk.Buf[8:]))
		seq := int(binary.LittleEndian.Uint32(pk.Buf[12:]))
		cid, hs := p.cidOf(shard, seq)
		payload(want, shard, seq, cid, hs)
		if !bytes.Equal(pk.Buf, want) {
			p.corrupt.Add(1)
		}
	}
}

func (p *pinger) Transmit(out []dataplane.Packet, _ time.Time) int {
	n := 0
	for n < len(out) && p.sent < p.count && p.inFlight.Load() < p.window {
		b := out[n].Buf[:p.size]
		cid, hs := p.cidOf(p.shard, p.sent)
		payload(b, p.shard, p.sent, cid, hs)
		out[n].Buf, out[n].Addr = b, p.dst
		p.inFlight.Add(1)
		p.sent++
		n++
	}
	return n
}

// Deadline: replies may land on other shards, so poll now and then.
func (p *pinger) Deadline() time.Time { return time.Now().Add(time.Millisecond) }

type pingResult struct {
	server, client   dataplane.Stats
	serverExtra      []Extra
	clientExtra      []Extra
	serverFeatures   Features
	serverAccounts   []FrameAccount
	clientAccounts   []FrameAccount
	replies, corrupt uint64
	misrouted        uint64
	badAccount       uint64
	handshakes       uint64
	misroutedHS      uint64
}

// pingPong runs an echo server on b and a pinger on a, both on the xdp
// backend, until every datagram came back or the time is up.
func pingPong(t *testing.T, a, b *testnet.Host, srvAddr, cliAddr netip.Addr, shards, size, perShard int, cidOf func(shard, seq int) (byte, bool)) pingResult {
	t.Helper()
	return pingPongWith(t, &inNetns{host: b}, &inNetns{host: a}, srvAddr, cliAddr, shards, size, perShard, cidOf)
}

// pingPongWith is pingPong with the server on srvB (an xdp backend) and the
// client on cliB (any backend; frame accounting is checked when it is xdp).
func pingPongWith(t *testing.T, srvB *inNetns, cliB dataplane.Backend, srvAddr, cliAddr netip.Addr, shards, size, perShard int, cidOf func(shard, seq int) (byte, bool)) pingResult {
	t.Helper()
	var r pingResult
	var misrouted, got, badAccount, checks, handshakes, misroutedHS atomic.Uint64
	var echoes []*echo
	srv, err := dataplane.Start(srvB, dataplane.Config{Addr: netip.AddrPortFrom(srvAddr, 0), Shards: shards, Batch: 64, MaxDatagram: max(size, 1500)},
		func(i int) dataplane.Handler {
			e := &echo{shard: i, nshards: shards, misrouted: &misrouted, got: &got, badAccount: &badAccount, checks: &checks,
				handshakes: &handshakes, misroutedHS: &misroutedHS}
			echoes = append(echoes, e)
			return e
		})
	if err != nil {
		t.Fatalf("server: %v", err)
	}
	for i, e := range echoes {
		c := srv.Conn(i)
		e.conn.Store(&c)
	}
	dst := srv.Conn(0).LocalAddr()
	var inFlight atomic.Int64
	var replies, corrupt atomic.Uint64
	var pingers []*pinger
	cli, err := dataplane.Start(cliB, dataplane.Config{Addr: netip.AddrPortFrom(cliAddr, 0), Shards: shards, Batch: 64, MaxDatagram: size},
		func(i int) dataplane.Handler {
			p := &pinger{shard: i, dst: dst, size: size, count: perShard, cidOf: cidOf, inFlight: &inFlight, replies: &replies, corrupt: &corrupt, window: 512}
			pingers = append(pingers, p)
			return p
		})
	if err != nil {
		srv.Stop()
		t.Fatalf("client: %v", err)
	}
	want := uint64(shards * perShard)
	deadline := time.Now().Add(15 * time.Second)
	for replies.Load() < want && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let stray datagrams show up
	r.serverFeatures = srvB.features
	for i := range shards {
		e, err := ExtraOf(srv.Conn(i))
		if err != nil {
			t.Errorf("server shard %d extra: %v", i, err)
		}
		r.serverExtra = append(r.serverExtra, e)
		e, _ = ExtraOf(cli.Conn(i))
		r.clientExtra = append(r.clientExtra, e)
	}
	if err := cli.Stop(); err != nil {
		t.Errorf("client stop: %v", err)
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("server stop: %v", err)
	}
	r.server, r.client = srv.Stats(), cli.Stats()
	for i := range shards {
		sa, _ := Accounting(srv.Conn(i))
		ca, ok := Accounting(cli.Conn(i))
		if !ok {
			ca = FrameAccount{} // not an xdp client: nothing to account
		}
		r.serverAccounts = append(r.serverAccounts, sa)
		r.clientAccounts = append(r.clientAccounts, ca)
	}
	r.replies, r.corrupt, r.misrouted, r.badAccount = replies.Load(), corrupt.Load(), misrouted.Load(), badAccount.Load()
	r.handshakes, r.misroutedHS = handshakes.Load(), misroutedHS.Load()
	if r.replies != want {
		t.Errorf("%d replies of %d (server got %d; server %+v; client %+v)", r.replies, want, got.Load(), r.server, r.client)
	}
	if r.corrupt != 0 {
		t.Errorf("%d replies corrupt or from the wrong address", r.corrupt)
	}
	if r.badAccount != 0 || checks.Load() == 0 {
		t.Errorf("frame accounting unbalanced in %d of %d checks while running", r.badAccount, checks.Load())
	}
	if r.misrouted != 0 {
		t.Errorf("%d datagrams reached a shard their connection ID does not name", r.misrouted)
	}
	for i := range shards {
		for side, acc := range map[string]FrameAccount{"server": r.serverAccounts[i], "client": r.clientAccounts[i]} {
			if !acc.Balanced() || acc.Handler != 0 || acc.TxBuffers != 0 {
				t.Errorf("%s shard %d frame accounting: %+v", side, i, acc)
			}
		}
	}
	return r
}

// A ping-pong through the engine across veth, both ends on AF_XDP:
// every datagram comes back intact, most of them through the AF_XDP rings,
// and every UMEM frame is accounted for at the end.
func TestPingPongVeth(t *testing.T) {
	requireXDP(t)
	for _, c := range []struct {
		name string
		size int
		v6   bool
	}{
		{"64B", 64, false},
		{"1200B", 1200, false},
		{"1200B-ipv6", 1200, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := topology(t, "mxpxdp", 1, c.v6)
			srvAddr, cliAddr := b.IPv4, a.IPv4
			if c.v6 {
				srvAddr, cliAddr = b.IPv6, a.IPv6
			}
			r := pingPong(t, a, b, srvAddr, cliAddr, 1, c.size, 20000, func(int, int) (byte, bool) { return 0, false })
			f := r.serverFeatures
			t.Logf("server features %+v; server %+v; client %+v", f, r.server, r.client)
			t.Logf("server extra %+v", r.serverExtra[0])
			t.Logf("client extra %+v", r.clientExtra[0])
			if f.Mode != bpf.XDPModeNative {
				t.Errorf("XDP attached in %v mode on veth, want native", f.Mode)
			}
			if f.ZeroCopy {
				t.Errorf("zero-copy on veth?")
			}
			se := r.serverExtra[0]
			if se.Program.Redirected < 20000*9/10 {
				t.Errorf("only %d of 20000 datagrams redirected to AF_XDP: %+v", se.Program.Redirected, se.Program)
			}
			// Until the kernel resolves the server's MAC (a few ms), the
			// client sends through its UDP socket: at most a few windows.
			if ce := r.clientExtra[0]; r.client.TxPackets != 20000 || ce.SocketTx > 10000 || ce.SocketTx == 0 || ce.SocketTx != ce.NeighbourMisses {
				t.Errorf("client sent %d, %d of them through its UDP socket (%d neighbour misses)", r.client.TxPackets, ce.SocketTx, ce.NeighbourMisses)
			}
		})
	}
}

// Four queues, four shards on each side: client shard s sends on TX queue
// s, which veth delivers to the server's RX queue s. Datagrams whose
// connection ID names shard s go straight into the server's AF_XDP socket
// s; those naming another shard are passed by the XDP program and reach the
// right shard through the SK_REUSEPORT-steered UDP sockets. No datagram
// reaches a shard its connection ID does not name. Handshake packets, whose
// connection ID is the initiator's random one, go to the shard of the queue
// they arrived on (client shard s's, whatever their ID names).
func TestSteeringMultiQueue(t *testing.T) {
	requireXDP(t)
	const shards = 4
	a, b := topology(t, "mxpxdpq", shards, false)
	cidOf := func(shard, seq int) (byte, bool) {
		switch seq % 8 {
		case 3, 7:
			return byte(shard + 1 + 4*(seq%7)), false // another shard's: crosses queues
		case 5:
			return byte(shard + 2 + 4*(seq%5)), true // a handshake: its queue's shard
		}
		return byte(shard + 4*(seq%13)), false // its own shard, modulo 4
	}
	r := pingPong(t, a, b, b.IPv4, a.IPv4, shards, 200, 4000, cidOf)
	var redirected, otherQueue uint64
	prog := r.serverExtra[0].Program
	redirected, otherQueue = prog.Redirected, prog.PassOtherQueue
	t.Logf("server program counters %+v", prog)
	for i := range shards {
		t.Logf("server shard %d: AF_XDP/socket rx: kernel %+v, socket rx %d", i, r.serverExtra[i].Kernel, r.serverExtra[i].SocketRx)
	}
	if !r.serverFeatures.SteeredByBPF {
		t.Errorf("fallback sockets not steered by BPF")
	}
	total := uint64(shards * 4000)
	if redirected < total/2 {
		t.Errorf("%d of %d redirected into AF_XDP sockets", redirected, total)
	}
	if otherQueue == 0 {
		t.Errorf("no datagram took the other-queue path")
	}
	// Handshakes sent before the client knew the server's MAC went through
	// its UDP socket, on a TX queue of the kernel's choosing.
	var early uint64
	for _, ce := range r.clientExtra {
		early += ce.SocketTx
	}
	t.Logf("handshakes: %d received, %d redirected by queue, %d on another shard (client socket sends: %d)", r.handshakes, prog.Handshakes, r.misroutedHS, early)
	if r.handshakes != total/8 || prog.Handshakes == 0 || r.misroutedHS > early {
		t.Errorf("handshakes: %d received of %d, %d redirected by queue, %d on another shard than their queue's (client socket sends: %d)",
			r.handshakes, total/8, prog.Handshakes, r.misroutedHS, early)
	}
	for i := range shards {
		if r.serverExtra[i].Kernel.Rx_dropped != 0 {
			t.Errorf("server shard %d: kernel dropped %d", i, r.serverExtra[i].Kernel.Rx_dropped)
		}
	}
}

// Generic (SKB) mode: the XDP program runs on the kernel's skb path, where
// the peer's UDP GSO super-packets arrive whole (native mode on veth turns
// the peer's GSO off; generic mode does not). They are larger than an
// AF_XDP frame, so the program passes them to the kernel and they reach the
// fallback socket: every byte arrives. Datagram boundaries do not always
// survive: on Linux 6.18 generic XDP sometimes hands a passed super-packet
// to UDP without its segmentation, as one large datagram (docs/xdp.md), so
// this test checks the bytes and that each merged datagram is a run of
// whole, intact, consecutive ones.
func TestGenericModeGSOSender(t *testing.T) {
	requireXDP(t)
	a, b := topology(t, "mxpxdpg", 1, false)
	srvB := &inNetns{Backend: Backend{Mode: bpf.XDPModeGeneric}, host: b}
	const size, total = 1200, 5000
	var bytesIn, datagrams, merged, bad atomic.Int64
	var next atomic.Uint64
	h := &funcHandler{recv: func(pkts []dataplane.Packet) {
		for _, p := range pkts {
			n := len(p.Buf)
			if n == 0 || n%size != 0 {
				bad.Add(1)
				continue
			}
			for off := 0; off < n; off += size {
				seq := binary.LittleEndian.Uint64(p.Buf[off:])
				if seq != next.Load() || !bytes.Equal(p.Buf[off+8:off+size], bytes.Repeat([]byte{byte(seq)}, size-8)) {
					bad.Add(1)
				}
				next.Add(1)
			}
			if n > size {
				merged.Add(1)
			}
			datagrams.Add(1)
			bytesIn.Add(int64(n))
		}
	}}
	srv, err := dataplane.Start(srvB, dataplane.Config{Addr: netip.AddrPortFrom(b.IPv4, 9300)}, func(int) dataplane.Handler { return h })
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if f, ok := FeaturesOf(srv.Conn(0)); !ok || f.Mode != bpf.XDPModeGeneric {
		t.Fatalf("features %+v, want generic mode", f)
	}
	sent := 0
	src := &funcHandler{send: func(out []dataplane.Packet) int {
		n := 0
		for n < len(out) && sent < total {
			buf := out[n].Buf[:size]
			binary.LittleEndian.PutUint64(buf, uint64(sent))
			copy(buf[8:], bytes.Repeat([]byte{byte(sent)}, size-8))
			out[n] = dataplane.Packet{Buf: buf, Addr: netip.AddrPortFrom(b.IPv4, 9300)}
			n++
			sent++
		}
		return n
	}}
	cliB := &dptest.InNetns{Backend: &portable.Backend{}, Host: a}
	cli, err := dataplane.Start(cliB, dataplane.Config{Addr: netip.AddrPortFrom(a.IPv4, 0), MaxDatagram: size}, func(int) dataplane.Handler { return src })
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(10 * time.Second); bytesIn.Load() < size*total && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond)
	}
	cli.Stop()
	st := cli.Stats()
	t.Logf("generic mode, GSO sender: %d datagrams in %d GSO sends; server got %d bytes in %d datagrams, %d of them merged runs",
		st.TxPackets, st.TxGSOSends, bytesIn.Load(), datagrams.Load(), merged.Load())
	if st.TxGSOSends == 0 {
		t.Skip("skipping: the portable client sent no GSO batch, nothing to show")
	}
	if bytesIn.Load() != size*total || bad.Load() != 0 {
		t.Fatalf("%d of %d bytes arrived, %d datagrams corrupt or out of order", bytesIn.Load(), size*total, bad.Load())
	}
}

// funcHandler is a dataplane.Handler made of functions.
type funcHandler struct {
	recv func([]dataplane.Packet)
	send func([]dataplane.Packet) int
}

func (f *funcHandler) Receive(p []dataplane.Packet, _ time.Time) {
	if f.recv != nil {
		f.recv(p)
	}
}

func (f *funcHandler) Transmit(out []dataplane.Packet, _ time.Time) int {
	if f.send != nil {
		return f.send(out)
	}
	return 0
}

func (*funcHandler) Deadline() time.Time { return time.Time{} }

// Generic mode with a sender that does not use GSO (an AF_XDP client):
// datagrams go straight into the AF_XDP socket.
func TestGenericModeRedirects(t *testing.T) {
	requireXDP(t)
	a, b := topology(t, "mxpxdpr", 1, false)
	srv := &inNetns{Backend: Backend{Mode: bpf.XDPModeGeneric}, host: b}
	r := pingPongWith(t, srv, &inNetns{host: a}, b.IPv4, a.IPv4, 1, 1200, 5000, func(int, int) (byte, bool) { return 0, false })
	prog := r.serverExtra[0].Program
	t.Logf("generic mode: program %+v", prog)
	if r.serverFeatures.Mode != bpf.XDPModeGeneric || prog.Redirected < 4000 {
		t.Errorf("mode %v, %d of 5000 redirected", r.serverFeatures.Mode, prog.Redirected)
	}
}

// Traffic that is not MXP's still reaches the kernel stack with the
// program attached: another UDP port, and ping (ICMP) through the kernel.
func TestOtherTrafficPasses(t *testing.T) {
	requireXDP(t)
	a, b := topology(t, "mxpxdpo", 1, false)
	srvB := &inNetns{host: b}
	conns, err := srvB.Open(dataplane.Config{Addr: netip.AddrPortFrom(b.IPv4, 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer conns[0].Close()
	var other *net.UDPConn
	if err := b.Do(func() (err error) {
		other, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(b.IPv4.AsSlice())})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var cli *net.UDPConn
	if err := a.Do(func() (err error) {
		cli, err = net.DialUDP("udp4", nil, other.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for i := range 10 {
		if _, err := cli.Write([]byte{byte(i), 1, 2, 3, 4, 5, 6, 7, 8, 9}); err != nil {
			t.Fatal(err)
		}
	}
	other.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 100)
	for i := range 10 {
		if _, _, err := other.ReadFromUDP(buf); err != nil {
			t.Fatalf("datagram %d to another port: %v", i, err)
		}
	}
	// MXP datagrams from a plain socket on the client side still arrive,
	// through AF_XDP, and a plain socket gets the replies sent over AF_XDP TX.
	var mx *net.UDPConn
	if err := a.Do(func() (err error) {
		mx, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(conns[0].LocalAddr()))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer mx.Close()
	e, err := dataplane.Start(&fixed{conns: conns}, dataplane.Config{Addr: conns[0].LocalAddr()}, func(int) dataplane.Handler {
		var m, g atomic.Uint64
		var h, mh atomic.Uint64
		return &echo{nshards: 1, misrouted: &m, got: &g, handshakes: &h, misroutedHS: &mh}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	for i := range 100 {
		p := make([]byte, 100)
		payload(p, 0, i, 0, false)
		if _, err := mx.Write(p); err != nil {
			t.Fatal(err)
		}
		mx.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := mx.Read(buf)
		if err != nil || n != 100 || !bytes.Equal(buf[:n], p) {
			t.Fatalf("echo %d through AF_XDP to a plain socket: n=%d err=%v", i, n, err)
		}
	}
	ex, err := ExtraOf(conns[0])
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("program %+v", ex.Program)
	if ex.Program.Redirected < 90 || ex.Program.Passed < 10 {
		t.Errorf("program counters %+v: want the echo datagrams redirected, the others passed", ex.Program)
	}
	// TCP through the kernel stack.
	var ln net.Listener
	if err := b.Do(func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(b.IPv4.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hello over tcp"))
			c.Close()
		}
	}()
	var tc net.Conn
	if err := a.Do(func() (err error) {
		tc, err = net.DialTimeout("tcp4", ln.Addr().String(), 3*time.Second)
		return err
	}); err != nil {
		t.Fatalf("TCP across the XDP program: %v", err)
	}
	defer tc.Close()
	tc.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := tc.Read(buf); err != nil || string(buf[:n]) != "hello over tcp" {
		t.Errorf("TCP read: %q %v", buf[:n], err)
	}
}

// fixed is a Backend that hands out connections opened already.
type fixed struct {
	conns []dataplane.ShardConn
}

func (*fixed) Name() string { return "xdp" }
func (f *fixed) Open(dataplane.Config) ([]dataplane.ShardConn, error) {
	return f.conns, nil
}

// Jumbo MTU on veth: native XDP needs the peer's MTU to fit a page, so Auto
// attaches in generic mode. Datagrams larger than a UMEM frame pass to the
// fallback socket; replies larger than a TX frame's capacity (the handler's
// append moves them out of the UMEM) leave through that socket too.
func TestJumboMTU(t *testing.T) {
	requireXDP(t)
	topo, err := testnet.New(testnet.Config{Prefix: "mxpxdpj", MTU: 9000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { topo.Close() })
	a, b := topo.Hosts[0], topo.Hosts[1]
	srv := &inNetns{host: b}
	cli := &dptest.InNetns{Backend: &portable.Backend{}, Host: a}
	r := pingPongWith(t, srv, cli, b.IPv4, a.IPv4, 1, 6000, 500, func(int, int) (byte, bool) { return 0, false })
	ex := r.serverExtra[0]
	t.Logf("jumbo: features %+v, program %+v, socket rx %d tx %d", r.serverFeatures, ex.Program, ex.SocketRx, ex.SocketTx)
	if r.serverFeatures.Mode != bpf.XDPModeGeneric {
		t.Errorf("mode %v with a 9000-byte peer MTU, want generic", r.serverFeatures.Mode)
	}
	if ex.Program.PassTooBig == 0 || ex.SocketRx == 0 || ex.SocketTx < 500 {
		t.Errorf("large datagrams did not go through the socket both ways: %+v", ex)
	}
}

// blast is a Handler that fills every send buffer it gets.
type blast struct {
	dst  netip.AddrPort
	size int
}

func (*blast) Receive([]dataplane.Packet, time.Time) {}
func (b *blast) Transmit(out []dataplane.Packet, _ time.Time) int {
	for i := range out {
		out[i].Buf = out[i].Buf[:b.size]
		out[i].Buf[7] = 0
		out[i].Addr = b.dst
	}
	return len(out)
}
func (*blast) Deadline() time.Time { return time.Time{} }

// Sending as fast as possible to a plain socket keeps going: when every TX
// frame is in flight the shard must come back for the completions (they
// wake no poll) and re-kick a queue the kernel called busy. (A shard that
// waited for readability here stalled for good.)
func TestTxNoStall(t *testing.T) {
	requireXDP(t)
	a, b := topology(t, "mxpxdpt", 1, false)
	var rc *net.UDPConn
	if err := b.Do(func() (err error) {
		rc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(b.IPv4.AsSlice())})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	dst := rc.LocalAddr().(*net.UDPAddr).AddrPort()
	e, err := dataplane.Start(&inNetns{host: a}, dataplane.Config{Addr: netip.AddrPortFrom(a.IPv4, 0), MaxDatagram: 64},
		func(int) dataplane.Handler { return &blast{dst: dst, size: 64} })
	if err != nil {
		t.Fatal(err)
	}
	var prev uint64
	stalls := 0
	var series []uint64
	for range 15 {
		time.Sleep(100 * time.Millisecond)
		n := e.Stats().TxPackets
		if n == prev {
			stalls++
		}
		series = append(series, n-prev)
		prev = n
	}
	t.Logf("sent per 100 ms: %v", series)
	if err := e.Stop(); err != nil {
		t.Error(err)
	}
	acc, _ := Accounting(e.Conn(0))
	t.Logf("sent %d in 1.5 s; frames %+v", prev, acc)
	// The machine is shared: a pause of 100 ms happens; a stall does not end.
	last := series[10] + series[11] + series[12] + series[13] + series[14]
	if stalls > 5 || last == 0 || prev < 10000 {
		t.Errorf("%d of 15 intervals without progress, %d in the last 500 ms, %d sent", stalls, last, prev)
	}
	if !acc.Balanced() || acc.Handler != 0 || acc.TxBuffers != 0 {
		t.Errorf("frames %+v", acc)
	}
}
