package bpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// load loads the program or skips the test, saying what is missing.
func load(t *testing.T, n int) *Reuseport {
	t.Helper()
	if !hasBPFCaps() {
		t.Skipf("skipping: loading SK_REUSEPORT programs needs root, or CAP_BPF + CAP_NET_ADMIN (uid %d has not got them)", os.Geteuid())
	}
	r, err := LoadReuseport(n)
	for _, missing := range []error{ErrNotSupported, ErrMemlock, ErrPermission} {
		if errors.Is(err, missing) {
			t.Skipf("skipping: %v", err)
		}
	}
	if err != nil {
		t.Fatalf("LoadReuseport(%d): %v", n, err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// openGroup opens n UDP sockets with SO_REUSEPORT bound to the same port
// of ip, in the calling thread's network namespace.
func openGroup(ip string, n int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	network := "udp4"
	if strings.Contains(ip, ":") {
		network = "udp6"
	}
	var conns []*net.UDPConn
	addr := net.JoinHostPort(ip, "0")
	for i := 0; i < n; i++ {
		pc, err := lc.ListenPacket(context.Background(), network, addr)
		if err != nil {
			for _, c := range conns {
				c.Close()
			}
			return nil, fmt.Errorf("listen %s on %s: %w", network, addr, err)
		}
		c := pc.(*net.UDPConn)
		conns = append(conns, c)
		addr = c.LocalAddr().String()
	}
	return conns, nil
}

// group is openGroup on loopback, closing the sockets when the test ends.
func group(t *testing.T, ip string, n int) ([]*net.UDPConn, netip.AddrPort) {
	t.Helper()
	conns, err := openGroup(ip, n)
	if err != nil {
		if strings.Contains(ip, ":") {
			t.Skipf("skipping: IPv6 loopback unavailable: %v", err)
		}
		t.Fatal(err)
	}
	for _, c := range conns {
		t.Cleanup(func() { c.Close() })
	}
	return conns, conns[0].LocalAddr().(*net.UDPAddr).AddrPort()
}

// datagram is one test datagram: seq is in bytes 0..3, the shard byte at 7
// and, if the datagram is long enough, a different shard byte at 15, so that
// a program reading the wrong offset steers it elsewhere.
func datagram(seq uint32, shardByte byte, length int) []byte {
	b := make([]byte, length)
	for i := range b {
		b[i] = byte(0xA5 ^ i)
	}
	binary.LittleEndian.PutUint32(b, seq)
	b[7] = shardByte
	if length > 15 {
		b[15] = shardByte + 1
	}
	return b
}

// received is what the sockets of a group got: by socket, the datagrams.
type received [][][]byte

// collect reads the sockets round-robin until want datagrams have arrived
// in all (or 10 s have passed: generous, for a loaded machine), then until
// every socket has been quiet for quiet, to catch extras.
func collect(t *testing.T, conns []*net.UDPConn, want int, quiet time.Duration) received {
	t.Helper()
	out := make(received, len(conns))
	stop := time.Now().Add(10 * time.Second)
	buf := make([]byte, 2048)
	read := func(i int, wait time.Duration) bool {
		conns[i].SetReadDeadline(time.Now().Add(wait))
		n, err := conns[i].Read(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return false
			}
			t.Fatalf("read socket %d: %v", i, err)
		}
		out[i] = append(out[i], append([]byte(nil), buf[:n]...))
		return true
	}
	for got := 0; got < want && time.Now().Before(stop); {
		for i := range conns {
			for read(i, 5*time.Millisecond) {
				got++
			}
		}
	}
	for i := range conns {
		for read(i, quiet) && time.Now().Before(stop) {
		}
	}
	return out
}

// sendAll sends the datagrams from a fresh socket, waiting for each window
// to arrive so that no receive buffer overflows, and returns what each
// socket received.
func sendAll(t *testing.T, conns []*net.UDPConn, dst netip.AddrPort, dgs [][]byte) received {
	t.Helper()
	tx, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	return sendFrom(t, tx, conns, dgs)
}

// sendFrom is sendAll from the connected socket tx.
func sendFrom(t *testing.T, tx *net.UDPConn, conns []*net.UDPConn, dgs [][]byte) received {
	t.Helper()
	tx.SetWriteDeadline(time.Now().Add(5 * time.Second))
	got := make(received, len(conns))
	const window = 32
	for start := 0; start < len(dgs); start += window {
		end := min(start+window, len(dgs))
		for _, d := range dgs[start:end] {
			if _, err := tx.Write(d); err != nil {
				t.Fatalf("send: %v", err)
			}
		}
		quiet := time.Duration(0)
		if end == len(dgs) {
			quiet = 50 * time.Millisecond
		}
		for i, r := range collect(t, conns, end-start, quiet) {
			got[i] = append(got[i], r...)
		}
	}
	return got
}

// rig is a reuseport group under test and a way to send to it.
type rig struct {
	conns []*net.UDPConn
	tx    *net.UDPConn // nil for loopback
	send  func(dgs [][]byte) received
}

func loopbackRig(t *testing.T, ip string, n int) rig {
	conns, dst := group(t, ip, n)
	return rig{conns, nil, func(dgs [][]byte) received { return sendAll(t, conns, dst, dgs) }}
}

func testSteering(t *testing.T, n int, mk func(t *testing.T, n int) rig) {
	r := load(t, n)
	rg := mk(t, n)
	conns := rg.conns
	if err := r.AttachToConn(conns[0]); err != nil {
		t.Fatal(err)
	}
	for i, c := range conns {
		if err := r.SetShardConn(i, c); err != nil {
			t.Fatal(err)
		}
	}

	// Long datagrams: payload 8 (the shortest that carries a connection
	// ID) to 40 bytes, shard bytes spread over all 256 values.
	const long = 160
	var dgs [][]byte
	want := map[uint32]int{}
	for i := 0; i < long; i++ {
		sb := byte(i*37 + 11)
		dgs = append(dgs, datagram(uint32(i), sb, 8+i%33))
		want[uint32(i)] = int(sb) % n
	}
	// Short ones: no connection ID, any socket may get them.
	const short = 8
	for l := 0; l < short; l++ {
		dgs = append(dgs, make([]byte, l))
	}
	got := rg.send(dgs)

	seen := map[uint32]bool{}
	shortSeen := 0
	for sock, ds := range got {
		for _, d := range ds {
			if len(d) < 8 {
				shortSeen++
				continue
			}
			seq := binary.LittleEndian.Uint32(d)
			if seen[seq] {
				t.Errorf("datagram %d received twice", seq)
			}
			seen[seq] = true
			if w, ok := want[seq]; !ok {
				t.Errorf("unexpected datagram %x", d)
			} else if sock != w {
				t.Errorf("datagram %d (shard byte %d, %d bytes) at socket %d, want %d", seq, d[7], len(d), sock, w)
			}
		}
	}
	if len(seen) != long || shortSeen != short {
		t.Errorf("received %d of %d long and %d of %d short datagrams", len(seen), long, shortSeen, short)
	}
	c, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if wantC := (ReuseportCounters{Steered: long, FallbackShort: short}); c != wantC {
		t.Errorf("counters %+v, want %+v", c, wantC)
	}

	// An empty slot: its datagrams still arrive (default selection) and
	// are counted as select_failed.
	if err := r.ClearShard(n - 1); err != nil {
		t.Fatal(err)
	}
	const orphans = 10
	dgs = dgs[:0]
	for i := 0; i < orphans; i++ {
		dgs = append(dgs, datagram(uint32(1000+i), byte(n-1+n*i), 16))
	}
	total := 0
	for _, ds := range rg.send(dgs) {
		total += len(ds)
	}
	if total != orphans {
		t.Errorf("received %d of %d datagrams for the cleared shard", total, orphans)
	}
	c2, err := r.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c2.SelectFailed != orphans || c2.Steered != c.Steered {
		t.Errorf("after clearing shard %d: counters %+v, want SelectFailed %d and Steered unchanged (%d)", n-1, c2, orphans, c.Steered)
	}
}

func TestSteeringIPv4(t *testing.T) {
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			testSteering(t, n, func(t *testing.T, n int) rig { return loopbackRig(t, "127.0.0.1", n) })
		})
	}
}

func TestSteeringIPv6(t *testing.T) {
	for _, n := range []int{2, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			testSteering(t, n, func(t *testing.T, n int) rig { return loopbackRig(t, "::1", n) })
		})
	}
}

// Without the program every datagram of one 4-tuple goes to one socket:
// this is what makes TestSteering able to fail.
func TestWithoutProgramNoSteering(t *testing.T) {
	conns, dst := group(t, "127.0.0.1", 4)
	var dgs [][]byte
	for i := 0; i < 16; i++ {
		dgs = append(dgs, datagram(uint32(i), byte(i), 16))
	}
	busy := 0
	for _, ds := range sendAll(t, conns, dst, dgs) {
		if len(ds) > 0 {
			busy++
		}
	}
	if busy != 1 {
		t.Errorf("without the program %d sockets got datagrams, want 1", busy)
	}
}

func TestArgumentErrors(t *testing.T) {
	for _, n := range []int{0, -1, MaxShards + 1} {
		var e *Error
		if _, err := LoadReuseport(n); !errors.As(err, &e) {
			t.Errorf("LoadReuseport(%d) = %v, want *Error", n, err)
		}
	}
	r := load(t, 2)
	if err := r.SetShard(2, 0); err == nil {
		t.Error("SetShard(2) on 2 shards succeeded")
	}
	if err := r.SetShard(0, -1); err == nil {
		t.Error("SetShard with fd -1 succeeded")
	}
	// A socket without SO_REUSEPORT cannot join the map or take the program.
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := r.SetShardConn(0, c); err == nil {
		t.Error("SetShard with a socket lacking SO_REUSEPORT succeeded")
	}
	if err := r.AttachToConn(c); err == nil {
		t.Error("AttachTo a socket lacking SO_REUSEPORT succeeded")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Counters(); !errors.Is(err, ErrClosed) {
		t.Errorf("Counters after Close = %v, want ErrClosed", err)
	}
}

// TestUnprivilegedError runs this test binary again without the BPF
// capabilities and checks that LoadReuseport says so with ErrPermission.
func TestUnprivilegedError(t *testing.T) {
	if os.Getenv("MXP_BPF_UNPRIV_CHILD") == "1" {
		_, err := LoadReuseport(2)
		if !errors.Is(err, ErrPermission) {
			t.Fatalf("LoadReuseport without capabilities = %v, want ErrPermission", err)
		}
		fmt.Println("child error:", err)
		return
	}
	if !hasBPFCaps() {
		t.Skip("skipping: already unprivileged; nothing to drop")
	}
	capsh, err := exec.LookPath("capsh")
	if err != nil {
		t.Skip("skipping: needs capsh (libcap2-bin) to drop capabilities")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, capsh,
		"--drop=cap_bpf,cap_sys_admin,cap_perfmon,cap_net_admin", "--",
		"-c", `exec "$0" -test.run='^TestUnprivilegedError$' -test.v -test.count=1`, os.Args[0])
	cmd.Env = append(os.Environ(), "MXP_BPF_UNPRIV_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "child error:") {
		t.Fatalf("unprivileged child: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
}
