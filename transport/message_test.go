package transport

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/wire"
)

func encodeMessages(t *testing.T, first, n, size int) []byte {
	t.Helper()
	var b []byte
	for i := range n {
		var err error
		b, err = wire.AppendMessage(b, &wire.Message{Type: wire.TypeStreamChunk, MessageID: uint64(first + i), Payload: bytes.Repeat([]byte{byte(first + i)}, size)})
		if err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// SendEncoded takes whole encoded messages only; what the send buffer
// cannot hold it leaves, at a message boundary, for the caller to resend;
// the peer gets every message once, in order, and MessageBytes hands a
// relay the exact bytes that were sent, during OnMessage only.
func TestSendEncodedAndMessageBytes(t *testing.T) {
	tn := newTestNet(t, 11, clean, clean, func(c *Config) { c.StreamSendBuffer = 16 << 10 })
	ca, cb := tn.dial()

	// Refused, taking nothing: a cut message, trailing garbage. (Checksums
	// are not checked again: SendEncoded relays bytes that were.)
	one := encodeMessages(t, 0, 1, 100)
	for name, b := range map[string][]byte{"cut": one[:len(one)-1], "trailing": append(bytes.Clone(one), 1, 2, 3)} {
		if n, err := ca.SendEncoded(scheduler.Bulk, b); !errors.Is(err, ErrBadEncoding) || n != 0 {
			t.Errorf("%s: took %d bytes, err %v; want 0 and ErrBadEncoding", name, n, err)
		}
	}

	// 40 messages of ~1 KiB do not fit a 16 KiB send buffer: a prefix of
	// whole messages is taken, the rest goes after the peer acknowledged.
	all := encodeMessages(t, 0, 40, 1000)
	var raws [][]byte
	cb.cfg.OnMessage = func(c *Conn, m *wire.Message) {
		raws = append(raws, bytes.Clone(c.MessageBytes()))
	}
	rest := all
	for rounds := 0; len(rest) > 0; rounds++ {
		n, err := ca.SendEncoded(scheduler.Bulk, rest)
		if err != nil && !errors.Is(err, ErrWouldBlock) {
			t.Fatal(err)
		}
		if err == nil && n != len(rest) || err != nil && n == len(rest) {
			t.Fatalf("took %d of %d bytes with err %v", n, len(rest), err)
		}
		if n > 0 {
			if _, k, derr := wire.DecodeMessage(rest); derr != nil || k > n {
				t.Fatalf("took %d bytes, not at a message boundary (%v)", n, derr)
			}
		}
		rest = rest[n:]
		if rounds == 0 && len(rest) == 0 {
			t.Fatal("40 KiB fit a 16 KiB send buffer at once")
		}
		if rounds > 100 {
			t.Fatal("the send buffer never drained")
		}
		tn.sim.Wake(tn.a.addr)
		tn.sim.RunUntil(func() bool { return false }, 50*time.Millisecond)
	}
	if !tn.sim.RunUntil(func() bool { return len(raws) == 40 }, 10*time.Second) {
		t.Fatalf("%d of 40 messages arrived", len(raws))
	}
	if got := bytes.Join(raws, nil); !bytes.Equal(got, all) {
		t.Fatal("the bytes MessageBytes gave are not the bytes sent, in order")
	}
	if cb.MessageBytes() != nil {
		t.Error("MessageBytes outside OnMessage")
	}
}

// MaxDatagramSizeFor sizes a connection's packets by its peer: a 64 KiB
// message crosses in a few large packets, not ~50 of the default size.
func TestMaxDatagramSizeFor(t *testing.T) {
	for _, c := range []struct {
		size     int
		min, max uint64
	}{{0, 45, 80}, {9000, 7, 16}} {
		tn := newTestNet(t, 12, clean, clean, func(cfg *Config) {
			cfg.MaxDatagramSizeFor = func(netip.AddrPort) int { return c.size }
		})
		ca, _ := tn.dial()
		want := tn.a.ep.cfg.MaxDatagramSize
		if c.size > 0 {
			want = c.size
		}
		if got := ca.MaxDatagramPayload(); got != want-crypto.PacketOverhead-datagramHeaderLen {
			t.Errorf("size %d: datagram payload %d", c.size, got)
		}
		before := ca.Stats().PacketsSent
		if err := ca.SendMessage(scheduler.Bulk, &wire.Message{Type: wire.TypeStreamChunk, Payload: make([]byte, 64<<10)}); err != nil {
			t.Fatal(err)
		}
		tn.sim.Wake(tn.a.addr)
		if !tn.sim.RunUntil(func() bool { return len(tn.b.msgs) == 1 }, 10*time.Second) {
			t.Fatalf("size %d: the message did not arrive", c.size)
		}
		if n := ca.Stats().PacketsSent - before; n < c.min || n > c.max {
			t.Errorf("size %d: %d packets for a 64 KiB message, want %d..%d", c.size, n, c.min, c.max)
		}
	}
}

// EventStreamWritable comes once after a write was refused, when the send
// buffer drained below half; a stream whose writes all fit raises none
// (one per acknowledgement would cost every round trip an event).
func TestWritableOnlyAfterARefusal(t *testing.T) {
	tn := newTestNet(t, 12, clean, clean, func(c *Config) { c.StreamSendBuffer = 16 << 10 })
	ca, _ := tn.dial()
	writable := 0
	tn.a.onEvent = func(ev Event) {
		if ev.Kind == EventStreamWritable {
			writable++
		}
	}
	small := &wire.Message{Type: wire.TypeCall, MessageID: 1, Payload: make([]byte, 500)}
	for i := range 20 { // each acknowledged before the next: never refused
		small.MessageID = uint64(i)
		if err := ca.SendMessage(scheduler.Interactive, small); err != nil {
			t.Fatal(err)
		}
		tn.sim.Wake(tn.a.addr)
		tn.sim.RunUntil(func() bool { return false }, 20*time.Millisecond)
	}
	if writable != 0 {
		t.Fatalf("%d EventStreamWritable for writes that were never refused", writable)
	}
	big := &wire.Message{Type: wire.TypeCall, Payload: make([]byte, 6000)}
	refused := 0
	for i := range 10 {
		big.MessageID = uint64(100 + i)
		if ca.SendMessage(scheduler.Interactive, big) == ErrWouldBlock {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("60 KB went into a 16 KiB send buffer")
	}
	tn.sim.Wake(tn.a.addr)
	if !tn.sim.RunUntil(func() bool { return writable > 0 }, 5*time.Second) {
		t.Fatal("no EventStreamWritable after a refused write drained")
	}
	tn.sim.RunUntil(func() bool { return false }, 200*time.Millisecond)
	if writable != 1 {
		t.Fatalf("%d EventStreamWritable after one refusal, want 1", writable)
	}
}
