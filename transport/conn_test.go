package transport

import (
	"bytes"
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/transport/netsim"
	"github.com/mxp-dataplane/mxp/wire"
)

var clean = netsim.LinkConfig{Delay: 10 * time.Millisecond}

func TestHandshakeAndMessages(t *testing.T) {
	tn := newTestNet(t, 1, clean, clean, nil)
	ca, cb := tn.dial()
	if ca.PeerKey() != tn.b.id.Public || cb.PeerKey() != tn.a.id.Public {
		t.Fatal("peers not authenticated to each other's static keys")
	}
	var want [][]byte
	for i := range 100 {
		p := bytes.Repeat([]byte{byte(i)}, i*13)
		want = append(want, p)
		if err := ca.SendMessage(scheduler.Interactive, &wire.Message{Type: wire.TypeCall, MessageID: uint64(i), TraceID: 7, Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	tn.sim.Wake(tn.a.addr)
	if !tn.sim.RunUntil(func() bool { return len(tn.b.msgs) == 100 }, 10*time.Second) {
		t.Fatalf("%d of 100 messages arrived", len(tn.b.msgs))
	}
	for i, m := range tn.b.msgs {
		if m.MessageID != uint64(i) || !bytes.Equal(m.Payload, want[i]) || m.TraceID != 7 {
			t.Fatalf("message %d: id %d, %d bytes", i, m.MessageID, len(m.Payload))
		}
	}
	total := 0
	for _, p := range want {
		total += wire.EncodedLen(len(p))
	}
	// Messages share packets: the count is close to bytes / packet payload.
	if st, most := ca.Stats(), uint64(total/(1400-48)+6); st.PacketsSent > most {
		t.Errorf("%d packets for %d bytes of messages, want at most %d", st.PacketsSent, total, most)
	}
	// Reply the other way.
	if err := cb.SendMessage(scheduler.Interactive, &wire.Message{Type: wire.TypeResponse, MessageID: 1000, Payload: []byte("ok")}); err != nil {
		t.Fatal(err)
	}
	tn.sim.Wake(tn.b.addr)
	if !tn.sim.RunUntil(func() bool { return len(tn.a.msgs) == 1 }, 5*time.Second) {
		t.Fatal("no response")
	}
}
