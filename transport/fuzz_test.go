package transport

import (
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/wire"
)

func frameSeeds() [][]byte {
	var seeds [][]byte
	ack, _ := wire.AppendAckFrame([]byte{byte(FrameAck)}, &wire.AckFrame{Largest: 9, Ranges: []wire.AckRange{{Start: 5, End: 9}, {Start: 1, End: 2}}})
	seeds = append(seeds,
		ack,
		appendStreamOpen(nil, 4, 1),
		append(appendStreamDataHeader(nil, 0, 100, 5), "hello"...),
		appendStreamFin(nil, 0, 105),
		appendStreamReset(nil, 8, 3, 50),
		appendLenData(nil, FrameDatagram, []byte("dgram")),
		appendLenData(nil, FrameCrypto, []byte{5, 1, 0}),
		appendPing(nil),
		appendClose(nil, 2, "flow control"),
		append([]byte{byte(FrameControl), ControlPathChallenge}, 1, 2, 3, 4, 5, 6, 7, 8),
		appendStreamMaxData(nil, 0, 1<<20),
		appendConnMaxData(nil, 1<<24),
		[]byte{0, 0, 0},
	)
	var all []byte
	for _, s := range seeds {
		all = append(all, s...)
	}
	return append(seeds, all)
}

// FuzzParseFrame: any payload parses frame by frame to the end or stops at a
// *FrameError; offsets only move forward; nothing panics.
func FuzzParseFrame(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		var fr Frame
		for off := 0; off < len(p); {
			next, err := ParseFrame(p, off, &fr)
			if err != nil {
				if _, ok := err.(*FrameError); !ok {
					t.Fatalf("error of type %T", err)
				}
				return
			}
			if next <= off || next > len(p) {
				t.Fatalf("offset %d -> %d of %d", off, next, len(p))
			}
			off = next
		}
	})
}

// FuzzConnFrames feeds arbitrary decrypted payloads to an established
// connection, as if an authenticated peer sent them: it may close with a
// protocol error, never panic, and a closed connection stays closed.
func FuzzConnFrames(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	var p *pair
	f.Fuzz(func(t *testing.T, payload []byte) {
		if p == nil || p.cb.state != stateEstablished || p.ca.state != stateEstablished {
			p = newPair(t, func(*Conn, *wire.Message) {})
		}
		now := p.now.Add(time.Millisecond)
		_, err := p.cb.handleFrames(payload, now)
		if err != nil {
			var ce *CloseError
			if !errorsAs(err, &ce) {
				if _, ok := err.(*FrameError); !ok {
					t.Fatalf("unexpected error type %T: %v", err, err)
				}
			}
		}
		p.pump() // the connection must keep working (or close cleanly)
	})
}
