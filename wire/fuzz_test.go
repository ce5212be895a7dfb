package wire

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

// FuzzDecodeMessage: any input either decodes to a message whose re-encoding is
// exactly the bytes consumed, or fails with a *MessageError; nothing panics.
func FuzzDecodeMessage(f *testing.F) {
	for _, v := range readJSONL[messageVector](f, "messages.jsonl") {
		h := v.EncodedHex + v.InputHex
		if len(h) <= 2*4096 {
			f.Add(mustHex(f, h))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, n, err := DecodeMessage(in)
		if err != nil {
			var me *MessageError
			if !errors.As(err, &me) || me.Kind < BufferTooSmall || me.Kind > ChecksumMismatch || n != 0 {
				t.Fatalf("bad error %#v (n=%d)", err, n)
			}
			return
		}
		if n != EncodedLen(len(m.Payload)) || n > len(in) {
			t.Fatalf("consumed %d for a %d-byte payload of a %d-byte input", n, len(m.Payload), len(in))
		}
		enc, err := AppendMessage(nil, &m)
		if err != nil {
			t.Fatalf("re-encode of a decoded message: %v", err)
		}
		if !bytes.Equal(enc, in[:n]) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", enc, in[:n])
		}
	})
}

// fuzzPayload: any input either decodes, and then encodes back to the same
// bytes (each layout has one encoding), or fails with a *PayloadError.
func fuzzPayload(f *testing.F, typ MsgType, seeds ...Payload) {
	for _, p := range seeds {
		b, err := p.AppendPayload(nil)
		if err != nil {
			f.Fatalf("seed %#v: %v", p, err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		p := NewPayload(typ)
		if err := p.DecodePayload(in); err != nil {
			var pe *PayloadError
			if !errors.As(err, &pe) || pe.Type != typ || pe.Offset < 0 || pe.Offset > len(in) {
				t.Fatalf("bad error %#v", err)
			}
			return
		}
		enc, err := p.AppendPayload(nil)
		if err != nil {
			t.Fatalf("re-encode of %#v: %v", p, err)
		}
		if !bytes.Equal(enc, in) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", enc, in)
		}
	})
}

var (
	seedRecord = AgentRecord{ID: uuidSeq(1), Name: "planner", Capabilities: []string{"plan", "llm.chat"},
		Endpoint: netip.MustParseAddrPort("198.18.0.2:9000")}
	seedRecord6 = AgentRecord{ID: uuidSeq(2), Name: "ü", Endpoint: netip.MustParseAddrPort("[2001:db8::2]:9000")}
)

func FuzzPayloadAgentRegister(f *testing.F) {
	fuzzPayload(f, TypeAgentRegister, &AgentRegister{seedRecord}, &AgentRegister{seedRecord6})
}

func FuzzPayloadAgentDiscover(f *testing.F) {
	fuzzPayload(f, TypeAgentDiscover, &AgentDiscover{Kind: DiscoverQuery, Capability: "llm", Limit: 5},
		&AgentDiscover{Kind: DiscoverResult, QueryID: 77, Agents: []DiscoveredAgent{{Key: [32]byte{1}, AgentRecord: seedRecord}, {AgentRecord: seedRecord6}}})
}

func FuzzPayloadAgentHeartbeat(f *testing.F) {
	fuzzPayload(f, TypeAgentHeartbeat, &AgentHeartbeat{AgentID: uuidSeq(3), Sequence: 9, Status: StatusDraining, InFlight: 4})
}

func FuzzPayloadCall(f *testing.F) {
	fuzzPayload(f, TypeCall, &Call{Target: uuidSeq(4), TimeoutSeconds: 30, Data: []byte("summarize")})
}

func FuzzPayloadResponse(f *testing.F) {
	fuzzPayload(f, TypeResponse, &Response{CallID: 1 << 40, Data: []byte("ok")})
}

func FuzzPayloadEvent(f *testing.F) {
	fuzzPayload(f, TypeEvent, &Event{Source: uuidSeq(5), Topic: "job.done", Data: []byte{1, 2}})
}

func FuzzPayloadStreamOpen(f *testing.F) {
	fuzzPayload(f, TypeStreamOpen, &StreamOpen{StreamID: uuidSeq(6), Target: uuidSeq(7), Kind: StreamUnidirectional})
}

func FuzzPayloadStreamChunk(f *testing.F) {
	fuzzPayload(f, TypeStreamChunk, &StreamChunk{StreamID: uuidSeq(8), Sequence: 3, Data: []byte("token")})
}

func FuzzPayloadStreamClose(f *testing.F) {
	fuzzPayload(f, TypeStreamClose, &StreamClose{StreamID: uuidSeq(9), Code: CodeCanceled, Reason: "client went away"})
}

func FuzzPayloadAck(f *testing.F) {
	fuzzPayload(f, TypeAck, &Ack{MessageIDs: []uint64{1, 2, 1 << 63}})
}

func FuzzPayloadError(f *testing.F) {
	fuzzPayload(f, TypeError, &ErrorPayload{InReplyTo: 12, Code: CodeNotFound, Message: "no agent with capability \"x\""})
}
