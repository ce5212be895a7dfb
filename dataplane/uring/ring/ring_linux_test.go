package ring

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// newRing sets a ring up or skips the test, naming why io_uring is missing.
func newRing(t *testing.T, cfg Config) *Ring {
	t.Helper()
	r, err := New(cfg)
	if IsUnsupported(err) {
		t.Skipf("io_uring unavailable here (kernel.io_uring_disabled, seccomp or no kernel support): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return r
}

func TestLayout(t *testing.T) {
	check := func(name string, got, want uintptr) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	var s SQE
	check("sizeof(io_uring_sqe)", unsafe.Sizeof(s), 64)
	check("sqe.fd", unsafe.Offsetof(s.Fd), 4)
	check("sqe.off", unsafe.Offsetof(s.Off), 8)
	check("sqe.addr", unsafe.Offsetof(s.Addr), 16)
	check("sqe.len", unsafe.Offsetof(s.Len), 24)
	check("sqe.rw_flags", unsafe.Offsetof(s.OpFlags), 28)
	check("sqe.user_data", unsafe.Offsetof(s.UserData), 32)
	check("sqe.buf_index", unsafe.Offsetof(s.BufIndex), 40)
	check("sqe.personality", unsafe.Offsetof(s.Personality), 42)
	check("sqe.file_index", unsafe.Offsetof(s.FileIndex), 44)
	check("sqe.addr3", unsafe.Offsetof(s.Addr3), 48)
	var c CQE
	check("sizeof(io_uring_cqe)", unsafe.Sizeof(c), 16)
	check("cqe.res", unsafe.Offsetof(c.Res), 8)
	check("cqe.flags", unsafe.Offsetof(c.Flags), 12)
	var p params
	check("sizeof(io_uring_params)", unsafe.Sizeof(p), 120)
	check("params.features", unsafe.Offsetof(p.Features), 20)
	check("params.sq_off", unsafe.Offsetof(p.SQOff), 40)
	check("params.cq_off", unsafe.Offsetof(p.CQOff), 80)
	check("sizeof(io_sqring_offsets)", unsafe.Sizeof(p.SQOff), 40)
	check("sq_off.user_addr", unsafe.Offsetof(p.SQOff.UserAddr), 32)
	check("sizeof(io_cqring_offsets)", unsafe.Sizeof(p.CQOff), 40)
	var g getEventsArg
	check("sizeof(io_uring_getevents_arg)", unsafe.Sizeof(g), 24)
	check("getevents_arg.ts", unsafe.Offsetof(g.TS), 16)
	var b bufReg
	check("sizeof(io_uring_buf_reg)", unsafe.Sizeof(b), sizeofBufReg)
	check("buf_reg.bgid", unsafe.Offsetof(b.Bgid), 12)
	var rb ringBuf
	check("sizeof(io_uring_buf)", unsafe.Sizeof(rb), 16)
	check("io_uring_buf.bid", unsafe.Offsetof(rb.Bid), 12)
	check("io_uring_buf.resv (ring tail)", unsafe.Offsetof(rb.Resv), 14)
	check("sizeof(io_uring_recvmsg_out)", unsafe.Sizeof(RecvmsgOut{}), SizeofRecvmsgOut)
}

func TestSetupAndFeatures(t *testing.T) {
	r := newRing(t, Config{Entries: 8})
	if r.SQEntries() != 8 || r.CQEntries() != 16 {
		t.Errorf("SQ %d CQ %d entries, want 8 and 16", r.SQEntries(), r.CQEntries())
	}
	for _, f := range []struct {
		bit  uint32
		name string
	}{{FeatSingleMmap, "SINGLE_MMAP"}, {FeatNoDrop, "NODROP"}, {FeatExtArg, "EXT_ARG"}, {FeatFastPoll, "FAST_POLL"}} {
		t.Logf("IORING_FEAT_%s: %v", f.name, r.Features()&f.bit != 0)
	}
	ops, err := r.Probe()
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []uint8{OpNop, OpSendmsg, OpRecvmsg, OpRead, OpAsyncCancel} {
		if !ops.Supports(op) {
			t.Errorf("opcode %d reported unsupported", op)
		}
	}
	if ops.Supports(250) {
		t.Error("opcode 250 reported supported")
	}
}

// reap consumes every ready CQE, passing each to fn.
func reap(r *Ring, fn func(*CQE)) int {
	n := r.CQReady()
	for i := range n {
		fn(r.PeekCQE(i))
	}
	r.CQAdvance(n)
	return int(n)
}

func TestNops(t *testing.T) {
	r := newRing(t, Config{Entries: 16})
	for i := range 10 {
		sqe := r.GetSQE()
		PrepNop(sqe, uint64(100+i))
	}
	if r.SQPending() != 10 {
		t.Fatalf("%d pending, want 10", r.SQPending())
	}
	n, err := r.Submit()
	if err != nil || n != 10 {
		t.Fatalf("submit: %d, %v", n, err)
	}
	if err := r.WaitCQEs(10, time.Second); err != nil {
		t.Fatal(err)
	}
	want := uint64(100)
	got := reap(r, func(c *CQE) {
		if c.UserData != want || c.Res != 0 {
			t.Errorf("CQE %+v, want user data %d res 0", *c, want)
		}
		want++
	})
	if got != 10 {
		t.Fatalf("%d CQEs, want 10", got)
	}
}

// The SQ and CQ indexes wrap around their small rings tens of thousands of
// times (200000 NOPs through 4 SQ and 8 CQ slots), in order, every user data
// checked.
func TestWraparound(t *testing.T) {
	r := newRing(t, Config{Entries: 4, CQEntries: 8})
	const total = 200000
	next, expect := uint64(0), uint64(0)
	for expect < total {
		for next < total {
			sqe := r.GetSQE()
			if sqe == nil {
				break
			}
			PrepNop(sqe, next)
			next++
		}
		if err := r.WaitCQEs(1, time.Second); err != nil {
			t.Fatal(err)
		}
		reap(r, func(c *CQE) {
			if c.UserData != expect {
				t.Fatalf("CQE %d, want %d", c.UserData, expect)
			}
			expect++
		})
	}
	if r.CQOverflowDropped() != 0 {
		t.Errorf("%d CQEs dropped", r.CQOverflowDropped())
	}
}

// More completions than the CQ holds: the kernel keeps the excess (NODROP),
// says so in the SQ flags, and hands every one over once there is room.
func TestCQOverflow(t *testing.T) {
	r := newRing(t, Config{Entries: 8, CQEntries: 8})
	if r.Features()&FeatNoDrop == 0 {
		t.Skip("kernel without IORING_FEAT_NODROP drops overflowed CQEs")
	}
	const total = 40
	for i := 0; i < total; {
		for ; i < total; i++ {
			sqe := r.GetSQE()
			if sqe == nil {
				break
			}
			PrepNop(sqe, uint64(i))
		}
		if _, err := r.Submit(); err != nil {
			t.Fatalf("submit with %d sent: %v", i, err)
		}
	}
	if got := r.CQReady(); got != 8 {
		t.Errorf("%d CQEs ready, want a full CQ of 8", got)
	}
	if !r.CQOverflowPending() {
		t.Fatal("overflow flag not set with 40 completions for 8 CQ slots")
	}
	seen := make([]bool, total)
	count := 0
	for deadline := time.Now().Add(2 * time.Second); count < total && time.Now().Before(deadline); {
		count += reap(r, func(c *CQE) {
			if c.UserData >= total || seen[c.UserData] {
				t.Fatalf("CQE %d duplicated or unknown", c.UserData)
			}
			seen[c.UserData] = true
		})
		if r.CQOverflowPending() {
			if err := r.FlushOverflow(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if count != total {
		t.Fatalf("%d of %d completions seen", count, total)
	}
	if r.CQOverflowPending() {
		t.Error("overflow flag still set after draining")
	}
	if r.CQOverflowDropped() != 0 {
		t.Errorf("%d CQEs dropped despite NODROP", r.CQOverflowDropped())
	}
}

func TestWaitTimeout(t *testing.T) {
	r := newRing(t, Config{Entries: 4})
	if r.Features()&FeatExtArg == 0 {
		t.Skip("no IORING_FEAT_EXT_ARG: no timed waits")
	}
	start := time.Now()
	if err := r.WaitCQEs(1, 30*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 25*time.Millisecond || d > time.Second {
		t.Errorf("waited %v for a 30ms timeout", d)
	}
}

// udpPair returns a receiving socket bound on loopback and a sender
// connected to it.
func udpPair(t *testing.T) (rx, tx int) {
	t.Helper()
	var err error
	if rx, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(rx) })
	if err := unix.Bind(rx, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(rx)
	if tx, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(tx) })
	if err := unix.Connect(tx, sa); err != nil {
		t.Fatal(err)
	}
	return rx, tx
}

// recvHarness is a multishot recvmsg on a socket with a small buffer ring.
type recvHarness struct {
	r     *Ring
	br    *BufRing
	slab  []byte
	size  int
	msg   unix.Msghdr
	name  [32]byte
	ctrl  [8]byte
	armed int
}

const (
	udRecv   = 1
	udCancel = 2
	nameArea = 32
)

func newRecvHarness(t *testing.T, r *Ring, nbufs, size int) *recvHarness {
	t.Helper()
	br, err := r.RegisterBufRing(nbufs, 7)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			t.Skipf("IORING_REGISTER_PBUF_RING unavailable (Linux 5.19+): %v", err)
		}
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := br.Close(); err != nil {
			t.Errorf("buffer ring close: %v", err)
		}
	})
	h := &recvHarness{r: r, br: br, slab: make([]byte, nbufs*size), size: size}
	h.msg.Name, h.msg.Namelen = &h.name[0], nameArea
	h.msg.Control = &h.ctrl[0]
	for i := range nbufs {
		br.Add(h.buf(uint16(i)), uint16(i))
	}
	br.Publish()
	return h
}

func (h *recvHarness) buf(bid uint16) []byte {
	return h.slab[int(bid)*h.size : (int(bid)+1)*h.size]
}

func (h *recvHarness) arm(t *testing.T, fd int) {
	t.Helper()
	PrepRecvmsgMultishot(h.r.GetSQE(), fd, false, &h.msg, h.br.Group(), udRecv)
	if _, err := h.r.Submit(); err != nil {
		t.Fatal(err)
	}
	h.armed++
}

// payload returns the datagram in a completed buffer and checks the header.
func (h *recvHarness) payload(t *testing.T, c *CQE) (uint16, []byte) {
	t.Helper()
	if c.Flags&CQEFBuffer == 0 {
		t.Fatalf("CQE %+v without a buffer", *c)
	}
	b := h.buf(c.BufferID())[:c.Res]
	out := RecvmsgOut{
		Namelen:    binary.NativeEndian.Uint32(b[0:]),
		Controllen: binary.NativeEndian.Uint32(b[4:]),
		Payloadlen: binary.NativeEndian.Uint32(b[8:]),
		Flags:      binary.NativeEndian.Uint32(b[12:]),
	}
	if out.Namelen != unix.SizeofSockaddrInet4 || binary.NativeEndian.Uint16(b[SizeofRecvmsgOut:]) != unix.AF_INET {
		t.Fatalf("recvmsg_out %+v: want an AF_INET source", out)
	}
	p := b[SizeofRecvmsgOut+nameArea:]
	if int(out.Payloadlen) != len(p) {
		t.Fatalf("payload %d bytes, header says %d", len(p), out.Payloadlen)
	}
	return c.BufferID(), p
}

// Multishot receive stops with ENOBUFS when the buffer ring runs dry and the
// datagrams it could not take wait in the socket; once buffers are given
// back and the request re-armed, every datagram arrives, once.
func TestMultishotRearmAfterENOBUFS(t *testing.T) {
	r := newRing(t, Config{Entries: 8})
	rx, tx := udpPair(t)
	const nbufs, total = 4, 10
	h := newRecvHarness(t, r, nbufs, 256)
	for i := range total {
		if _, err := unix.Write(tx, []byte{byte(i), 'x', 'y'}); err != nil {
			t.Fatal(err)
		}
	}
	h.arm(t, rx)
	got := []byte{}
	held := []uint16{}
	terminations := 0
	for deadline := time.Now().Add(3 * time.Second); len(got) < total && time.Now().Before(deadline); {
		if err := h.r.WaitCQEs(1, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		reap(r, func(c *CQE) {
			if c.Res < 0 {
				if c.More() {
					t.Fatalf("error CQE %d with F_MORE", c.Res)
				}
				if unix.Errno(-c.Res) != unix.ENOBUFS {
					t.Fatalf("multishot ended with %v, want ENOBUFS", unix.Errno(-c.Res))
				}
				terminations++
				return
			}
			bid, p := h.payload(t, c)
			if len(p) != 3 || p[1] != 'x' {
				t.Fatalf("datagram %q", p)
			}
			got = append(got, p[0])
			held = append(held, bid)
			if !c.More() {
				terminations++
			}
		})
		if len(held) == nbufs || terminations > 0 {
			// Give the buffers back and re-arm when the request ended.
			for _, bid := range held {
				h.br.Add(h.buf(bid), bid)
			}
			held = held[:0]
			h.br.Publish()
			if terminations > 0 {
				terminations = 0
				h.arm(t, rx)
			}
		}
	}
	if len(got) != total {
		t.Fatalf("received %d of %d datagrams: %v", len(got), total, got)
	}
	for i, b := range got {
		if int(b) != i {
			t.Fatalf("datagrams out of order or duplicated: %v", got)
		}
	}
	if h.armed < 2 {
		t.Errorf("armed %d times: ENOBUFS never ended the request with %d buffers for %d datagrams", h.armed, nbufs, total)
	}
}

// Canceling a multishot request ends it with one CQE without F_MORE.
func TestMultishotTermination(t *testing.T) {
	r := newRing(t, Config{Entries: 8})
	rx, tx := udpPair(t)
	h := newRecvHarness(t, r, 8, 128)
	h.arm(t, rx)
	unix.Write(tx, []byte("one"))
	var sawData, sawEnd, sawCancel bool
	wait := func(cond func() bool) {
		for deadline := time.Now().Add(2 * time.Second); !cond() && time.Now().Before(deadline); {
			r.WaitCQEs(1, 50*time.Millisecond)
			reap(r, func(c *CQE) {
				switch {
				case c.UserData == udCancel:
					sawCancel = c.Res == 0
				case c.Res > 0:
					if !c.More() {
						t.Error("data CQE without F_MORE before the cancel")
					}
					sawData = true
				case c.Res == -int32(unix.ECANCELED) && !c.More():
					sawEnd = true
				default:
					t.Errorf("unexpected CQE %+v", *c)
				}
			})
		}
	}
	wait(func() bool { return sawData })
	PrepCancel(r.GetSQE(), udRecv, udCancel)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	wait(func() bool { return sawEnd && sawCancel })
	if !sawData || !sawEnd || !sawCancel {
		t.Fatalf("data %v, end %v, cancel done %v", sawData, sawEnd, sawCancel)
	}
}

// Buffers cycle through the ring many times over: each completion names a
// buffer not already held, and every buffer comes back.
func TestBufRingRecycling(t *testing.T) {
	r := newRing(t, Config{Entries: 8, CQEntries: 64})
	rx, tx := udpPair(t)
	const nbufs, total = 8, 5000
	h := newRecvHarness(t, r, nbufs, 128)
	h.arm(t, rx)
	held := make([]bool, nbufs)
	uses := make([]int, nbufs)
	received, sent := 0, 0
	var msg [8]byte
	for deadline := time.Now().Add(10 * time.Second); received < total && time.Now().Before(deadline); {
		for sent < total && sent-received < nbufs/2 {
			binary.LittleEndian.PutUint64(msg[:], uint64(sent))
			if _, err := unix.Write(tx, msg[:]); err != nil {
				t.Fatal(err)
			}
			sent++
		}
		r.WaitCQEs(1, 100*time.Millisecond)
		var back []uint16
		rearm := false
		reap(r, func(c *CQE) {
			if c.Res < 0 {
				rearm = true
				return
			}
			bid, p := h.payload(t, c)
			if held[bid] {
				t.Fatalf("buffer %d handed out twice", bid)
			}
			if seq := binary.LittleEndian.Uint64(p); seq != uint64(received) {
				t.Fatalf("datagram %d, want %d", seq, received)
			}
			held[bid] = true
			uses[bid]++
			received++
			back = append(back, bid)
			rearm = rearm || !c.More()
		})
		for _, bid := range back {
			held[bid] = false
			h.br.Add(h.buf(bid), bid)
		}
		h.br.Publish()
		if rearm {
			h.arm(t, rx)
		}
	}
	if received != total {
		t.Fatalf("received %d of %d", received, total)
	}
	for bid, n := range uses {
		if n < total/nbufs/2 {
			t.Errorf("buffer %d used %d times of %d datagrams over %d buffers", bid, n, total, nbufs)
		}
	}
}

// openFDs and mappings count the process's descriptors and mappings.
func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func uringMappings(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "io_uring")
}

func TestCloseLeavesNothing(t *testing.T) {
	newRing(t, Config{Entries: 4}) // skips without io_uring
	fds, maps := openFDs(t), uringMappings(t)
	for range 20 {
		r, err := New(Config{Entries: 32})
		if err != nil {
			t.Fatal(err)
		}
		br, err := r.RegisterBufRing(16, 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := br.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
	}
	if got := openFDs(t); got != fds {
		t.Errorf("%d descriptors open after 20 rings, %d before", got, fds)
	}
	if got := uringMappings(t); got != maps {
		t.Errorf("%d io_uring mappings after 20 rings, %d before", got, maps)
	}
}

func TestSQPoll(t *testing.T) {
	r, err := New(Config{Entries: 8, SQPoll: true, SQThreadIdle: 10 * time.Millisecond})
	if err != nil {
		t.Skipf("SQPOLL unavailable here: %v", err)
	}
	defer r.Close()
	if r.Flags()&SetupSQPoll == 0 {
		t.Fatal("SQPOLL not in force")
	}
	for round := range 3 {
		for i := range 4 {
			PrepNop(r.GetSQE(), uint64(round*4+i))
		}
		if _, err := r.Submit(); err != nil {
			t.Fatal(err)
		}
		got := 0
		for deadline := time.Now().Add(2 * time.Second); got < 4 && time.Now().Before(deadline); {
			r.WaitCQEs(1, 50*time.Millisecond)
			got += reap(r, func(*CQE) {})
		}
		if got != 4 {
			t.Fatalf("round %d: %d of 4 NOPs completed", round, got)
		}
		time.Sleep(30 * time.Millisecond) // let the thread fall asleep: the next round must wake it
	}
}

// One cancel-all request ends every request in flight.
func TestCancelAll(t *testing.T) {
	r := newRing(t, Config{Entries: 8})
	rx1, _ := udpPair(t)
	rx2, _ := udpPair(t)
	h := newRecvHarness(t, r, 4, 128)
	PrepRecvmsgMultishot(r.GetSQE(), rx1, false, &h.msg, h.br.Group(), 10)
	PrepRecvmsgMultishot(r.GetSQE(), rx2, false, &h.msg, h.br.Group(), 11)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	PrepCancelAll(r.GetSQE(), udCancel)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	ended := map[uint64]bool{}
	canceled := int32(-1)
	for deadline := time.Now().Add(2 * time.Second); (len(ended) < 2 || canceled < 0) && time.Now().Before(deadline); {
		r.WaitCQEs(1, 50*time.Millisecond)
		reap(r, func(c *CQE) {
			switch c.UserData {
			case udCancel:
				canceled = c.Res
			case 10, 11:
				if c.Res != -int32(unix.ECANCELED) || c.More() {
					t.Errorf("request %d ended with %+v", c.UserData, *c)
				}
				ended[c.UserData] = true
			}
		})
	}
	if len(ended) != 2 || canceled != 2 {
		t.Fatalf("%d requests ended, cancel res %d: want 2 and 2", len(ended), canceled)
	}
}
