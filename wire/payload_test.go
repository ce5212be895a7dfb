package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// genPayloads draws a random, encodable payload of each message type.
var genPayloads = map[MsgType]*rapid.Generator[Payload]{
	TypeAgentRegister: rapid.Custom(func(t *rapid.T) Payload {
		return &AgentRegister{genRecord(t)}
	}),
	TypeAgentDiscover: rapid.Custom(func(t *rapid.T) Payload {
		if rapid.Bool().Draw(t, "query") {
			return &AgentDiscover{Kind: DiscoverQuery, Capability: genString(t, "cap"), Limit: rapid.Uint16().Draw(t, "limit")}
		}
		n := rapid.IntRange(0, 4).Draw(t, "n")
		p := &AgentDiscover{Kind: DiscoverResult, QueryID: rapid.Uint64().Draw(t, "qid")}
		for range n {
			p.Agents = append(p.Agents, DiscoveredAgent{Key: [32]byte(rapid.SliceOfN(rapid.Byte(), 32, 32).Draw(t, "key")), AgentRecord: genRecord(t)})
		}
		return p
	}),
	TypeAgentHeartbeat: rapid.Custom(func(t *rapid.T) Payload {
		return &AgentHeartbeat{AgentID: genUUID(t), Sequence: rapid.Uint64().Draw(t, "seq"),
			Status: AgentStatus(rapid.IntRange(0, 2).Draw(t, "status")), InFlight: rapid.Uint32().Draw(t, "inflight")}
	}),
	TypeCall: rapid.Custom(func(t *rapid.T) Payload {
		return &Call{Target: genUUID(t), TimeoutSeconds: rapid.Uint32().Draw(t, "timeout"), Data: genBytes(t)}
	}),
	TypeResponse: rapid.Custom(func(t *rapid.T) Payload {
		return &Response{CallID: rapid.Uint64().Draw(t, "id"), Data: genBytes(t)}
	}),
	TypeEvent: rapid.Custom(func(t *rapid.T) Payload {
		return &Event{Source: genUUID(t), Topic: genString(t, "topic"), Data: genBytes(t)}
	}),
	TypeStreamOpen: rapid.Custom(func(t *rapid.T) Payload {
		return &StreamOpen{StreamID: genUUID(t), Target: genUUID(t), Kind: StreamKind(rapid.IntRange(1, 2).Draw(t, "kind"))}
	}),
	TypeStreamChunk: rapid.Custom(func(t *rapid.T) Payload {
		return &StreamChunk{StreamID: genUUID(t), Sequence: rapid.Uint64().Draw(t, "seq"), Data: genBytes(t)}
	}),
	TypeStreamClose: rapid.Custom(func(t *rapid.T) Payload {
		return &StreamClose{StreamID: genUUID(t), Code: ErrorCode(rapid.Uint16().Draw(t, "code")), Reason: genString(t, "reason")}
	}),
	TypeAck: rapid.Custom(func(t *rapid.T) Payload {
		return &Ack{MessageIDs: rapid.SliceOfN(rapid.Uint64(), 1, 64).Draw(t, "ids")}
	}),
	TypeError: rapid.Custom(func(t *rapid.T) Payload {
		return &ErrorPayload{InReplyTo: rapid.Uint64().Draw(t, "id"), Code: ErrorCode(rapid.Uint16().Draw(t, "code")), Message: genString(t, "msg")}
	}),
}

func genUUID(t *rapid.T) UUID {
	return UUID(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "uuid"))
}

func genBytes(t *rapid.T) []byte {
	b := rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, "data")
	if len(b) == 0 {
		return nil // decoding yields an empty slice; compare as nil below
	}
	return b
}

func genString(t *rapid.T, label string) string {
	return rapid.StringN(0, 40, -1).Draw(t, label)
}

func genRecord(t *rapid.T) AgentRecord {
	var addr netip.Addr
	if rapid.Bool().Draw(t, "v4") {
		addr = netip.AddrFrom4([4]byte(rapid.SliceOfN(rapid.Byte(), 4, 4).Draw(t, "ip4")))
	} else {
		addr = netip.AddrFrom16([16]byte(rapid.SliceOfN(rapid.Byte(), 16, 16).Draw(t, "ip6")))
	}
	return AgentRecord{
		ID:           genUUID(t),
		Name:         genString(t, "name"),
		Capabilities: rapid.SliceOfN(rapid.StringN(0, 20, -1), 0, 5).Draw(t, "caps"),
		Endpoint:     netip.AddrPortFrom(addr, rapid.Uint16().Draw(t, "port")),
	}
}

// normalize makes decoded and generated values comparable: empty byte and
// string slices as nil.
func normalize(p Payload) Payload {
	v := reflect.ValueOf(p).Elem()
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		switch v.Kind() {
		case reflect.Struct:
			for i := range v.NumField() {
				walk(v.Field(i))
			}
		case reflect.Slice:
			if v.Len() == 0 {
				v.SetZero()
				return
			}
			for i := range v.Len() {
				walk(v.Index(i))
			}
		}
	}
	walk(v)
	return p
}

// TestPayloadRoundTrip: decode(encode(p)) == p for random p of every type, also
// carried inside a full message.
func TestPayloadRoundTrip(t *testing.T) {
	for typ, gen := range genPayloads {
		t.Run(typ.String(), func(t *testing.T) {
			rapid.Check(t, func(rt *rapid.T) {
				p := gen.Draw(rt, "payload")
				enc, err := p.AppendPayload([]byte{0xAA})
				if err != nil {
					rt.Fatalf("encode: %v", err)
				}
				if enc[0] != 0xAA {
					rt.Fatalf("encode overwrote dst")
				}
				msg, err := AppendMessage(nil, &Message{Type: p.MessageType(), MessageID: 9, TraceID: 10, Payload: enc[1:]})
				if err != nil {
					rt.Fatalf("message encode: %v", err)
				}
				m, n, err := DecodeMessage(msg)
				if err != nil || n != len(msg) {
					rt.Fatalf("message decode: %v (n=%d)", err, n)
				}
				got := NewPayload(m.Type)
				if err := got.DecodePayload(m.Payload); err != nil {
					rt.Fatalf("decode: %v", err)
				}
				if !reflect.DeepEqual(normalize(got), normalize(p)) {
					rt.Fatalf("round trip:\n got %#v\nwant %#v", got, p)
				}
				// Every strict prefix of a fixed layout is refused as truncated.
				if _, ok := p.(interface{ fixedLayout() }); ok {
					for i := range len(enc) - 1 {
						err := NewPayload(typ).DecodePayload(enc[1 : 1+i])
						if !errors.Is(err, &PayloadError{Kind: PayloadTruncated}) {
							rt.Fatalf("prefix of %d bytes: %v, want Truncated", i, err)
						}
					}
					err := NewPayload(typ).DecodePayload(append(enc[1:len(enc):len(enc)], 0))
					if !errors.Is(err, &PayloadError{Kind: PayloadTrailingBytes}) && !errors.Is(err, &PayloadError{Kind: PayloadInvalidValue}) {
						rt.Fatalf("one trailing byte: %v, want TrailingBytes or InvalidValue", err)
					}
				}
			})
		})
	}
	if len(genPayloads) != 11 {
		t.Fatalf("round trip covers %d payload types, want all 11", len(genPayloads))
	}
}

// Payloads whose last field is not "the rest of the bytes": any strict prefix is truncated.
func (*AgentHeartbeat) fixedLayout() {}
func (*StreamOpen) fixedLayout()     {}
func (*StreamClose) fixedLayout()    {}
func (*Ack) fixedLayout()            {}
func (*ErrorPayload) fixedLayout()   {}

func uuidSeq(start byte) (u UUID) {
	for i := range u {
		u[i] = start + byte(i)
	}
	return u
}

// TestSpecLayouts checks the three layouts SPEC.md fixes, byte by byte.
func TestSpecLayouts(t *testing.T) {
	id := uuidSeq(0x10)
	reg := &AgentRegister{AgentRecord{
		ID: id, Name: "bot", Capabilities: []string{"llm", "x"},
		Endpoint: netip.MustParseAddrPort("198.18.0.7:9000"),
	}}
	want := hex.EncodeToString(id[:]) +
		"0300" + hex.EncodeToString([]byte("bot")) +
		"0200" + "0300" + hex.EncodeToString([]byte("llm")) + "0100" + "78" +
		"c6120007" + "2823"
	checkEncoding(t, reg, want)

	reg6 := &AgentRegister{AgentRecord{ID: id, Endpoint: netip.MustParseAddrPort("[2001:db8::1]:443")}}
	checkEncoding(t, reg6, hex.EncodeToString(id[:])+"0000"+"0000"+"20010db8000000000000000000000001"+"bb01")

	call := &Call{Target: id, TimeoutSeconds: 30, Data: []byte("hi")}
	checkEncoding(t, call, hex.EncodeToString(id[:])+"1e000000"+"6869")

	sid := uuidSeq(0x80)
	so := &StreamOpen{StreamID: sid, Target: id, Kind: StreamBidirectional}
	checkEncoding(t, so, hex.EncodeToString(sid[:])+hex.EncodeToString(id[:])+"02")
}

func checkEncoding(t *testing.T, p Payload, wantHex string) {
	t.Helper()
	enc, err := p.AppendPayload(nil)
	if err != nil {
		t.Fatalf("%T encode: %v", p, err)
	}
	if got := hex.EncodeToString(enc); got != wantHex {
		t.Fatalf("%T encoding\n got %s\nwant %s", p, got, wantHex)
	}
	got := NewPayload(p.MessageType())
	if err := got.DecodePayload(enc); err != nil {
		t.Fatalf("%T decode: %v", p, err)
	}
	if !reflect.DeepEqual(normalize(got), normalize(p)) {
		t.Fatalf("%T decode: got %#v, want %#v", p, got, p)
	}
}

func TestPayloadDecodeErrors(t *testing.T) {
	id := strings.Repeat("11", 16)
	cases := []struct {
		typ   MsgType
		hex   string
		kind  PayloadErrorKind
		field string
	}{
		{TypeAgentRegister, "", PayloadTruncated, "agent_id"},
		{TypeAgentRegister, id + "0500" + "6162", PayloadTruncated, "name"},
		{TypeAgentRegister, id + "0200" + "c328" + "0000" + "7f000001" + "2823", PayloadInvalidUTF8, "name"},
		{TypeAgentRegister, id + "0000" + "0100" + "0900", PayloadTruncated, "capability"},
		{TypeAgentRegister, id + "0000" + "0000" + "7f00", PayloadTruncated, "endpoint"},
		{TypeAgentRegister, id + "0000" + "0000" + "7f00000128230000", PayloadInvalidValue, "endpoint"},
		{TypeAgentDiscover, "", PayloadTruncated, "kind"},
		{TypeAgentDiscover, "07", PayloadInvalidValue, "kind"},
		{TypeAgentDiscover, "01" + "0300" + "6c6c6d", PayloadTruncated, "limit"},
		{TypeAgentDiscover, "02" + "0100000000000000" + "0100" + "0500" + "0000", PayloadTruncated, "agent"},
		{TypeAgentDiscover, "02" + "0100000000000000" + "0100" + "0400" + "00000000", PayloadTruncated, "agent_key"},
		{TypeAgentDiscover, "02" + "0100000000000000" + "0100" + "2400" + strings.Repeat("00", 36), PayloadTruncated, "agent_id"},
		{TypeAgentDiscover, "02" + "0100000000000000" + "0000" + "ff", PayloadTrailingBytes, "end"},
		{TypeAgentHeartbeat, id + "0100000000000000" + "03" + "00000000", PayloadInvalidValue, "status"},
		{TypeCall, id + "1e00", PayloadTruncated, "timeout"},
		{TypeResponse, "01020304", PayloadTruncated, "call_id"},
		{TypeEvent, id + "0400" + "6869", PayloadTruncated, "topic"},
		{TypeStreamOpen, id + id + "03", PayloadInvalidValue, "stream_type"},
		{TypeStreamOpen, id + id + "0100", PayloadTrailingBytes, "end"},
		{TypeStreamChunk, id + "01", PayloadTruncated, "sequence"},
		{TypeStreamClose, id + "0000" + "0100" + "ff", PayloadInvalidUTF8, "reason"},
		{TypeAck, "0000", PayloadInvalidValue, "count"},
		{TypeAck, "ffff" + "0100000000000000", PayloadTruncated, "message_id"},
		{TypeError, "0100000000000000" + "0200" + "0a00" + "6e6f", PayloadTruncated, "message"},
	}
	for _, c := range cases {
		in, err := hex.DecodeString(c.hex)
		if err != nil {
			t.Fatal(err)
		}
		err = NewPayload(c.typ).DecodePayload(in)
		var pe *PayloadError
		if !errors.As(err, &pe) || pe.Kind != c.kind || pe.Field != c.field || pe.Type != c.typ {
			t.Errorf("%v %s: got %v, want %v at %s", c.typ, c.hex, err, c.kind, c.field)
		}
	}
}

func TestPayloadEncodeErrors(t *testing.T) {
	long := strings.Repeat("a", 0x10000)
	cases := []struct {
		p     Payload
		kind  PayloadErrorKind
		field string
	}{
		{&AgentRegister{AgentRecord{Name: long, Endpoint: netip.MustParseAddrPort("1.2.3.4:5")}}, PayloadFieldTooLong, "name"},
		{&AgentRegister{AgentRecord{Name: "\xff", Endpoint: netip.MustParseAddrPort("1.2.3.4:5")}}, PayloadInvalidUTF8, "name"},
		{&AgentRegister{AgentRecord{}}, PayloadInvalidValue, "endpoint"},
		{&AgentRegister{AgentRecord{Endpoint: netip.MustParseAddrPort("[fe80::1%eth0]:5")}}, PayloadInvalidValue, "endpoint"},
		{&AgentRegister{AgentRecord{Capabilities: make([]string, 0x10000), Endpoint: netip.MustParseAddrPort("1.2.3.4:5")}}, PayloadFieldTooLong, "capability_count"},
		{&AgentDiscover{Kind: 9}, PayloadInvalidValue, "kind"},
		{&AgentHeartbeat{Status: 3}, PayloadInvalidValue, "status"},
		{&StreamOpen{Kind: 0}, PayloadInvalidValue, "stream_type"},
		{&Ack{}, PayloadInvalidValue, "count"},
		{&Event{Topic: long}, PayloadFieldTooLong, "topic"},
	}
	for _, c := range cases {
		dst := []byte{1, 2, 3}
		out, err := c.p.AppendPayload(dst)
		var pe *PayloadError
		if !errors.As(err, &pe) || pe.Kind != c.kind || pe.Field != c.field {
			t.Errorf("%T: got %v, want %v at %s", c.p, err, c.kind, c.field)
		}
		if !bytes.Equal(out, dst) {
			t.Errorf("%T: dst changed on error", c.p)
		}
	}
}

func TestUUID(t *testing.T) {
	u := uuidSeq(0xA0)
	s := u.String()
	if s != "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf" {
		t.Fatalf("String() = %s", s)
	}
	for _, in := range []string{s, strings.ReplaceAll(s, "-", ""), strings.ToUpper(s)} {
		if got, err := ParseUUID(in); err != nil || got != u {
			t.Errorf("ParseUUID(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "a0a1", s + "0", "a0a1a2a3a-4a5-a6a7-a8a9-aaabacadaeaf", "g0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf", strings.ReplaceAll(s, "-", "")[:30] + "----"} {
		if _, err := ParseUUID(bad); err == nil {
			t.Errorf("ParseUUID(%q) accepted", bad)
		}
	}
}

func TestHotPayloadsDecodeWithoutAllocating(t *testing.T) {
	call, _ := (&Call{Target: uuidSeq(1), TimeoutSeconds: 5, Data: make([]byte, 256)}).AppendPayload(nil)
	chunk, _ := (&StreamChunk{StreamID: uuidSeq(2), Sequence: 7, Data: make([]byte, 256)}).AppendPayload(nil)
	ack, _ := (&Ack{MessageIDs: []uint64{1, 2, 3}}).AppendPayload(nil)
	var c Call
	var s StreamChunk
	a := Ack{MessageIDs: make([]uint64, 0, 8)}
	buf := make([]byte, 0, 512)
	n := testing.AllocsPerRun(100, func() {
		if c.DecodePayload(call) != nil || s.DecodePayload(chunk) != nil || a.DecodePayload(ack) != nil {
			t.Fatal("decode failed")
		}
		buf, _ = c.AppendPayload(buf[:0])
	})
	if n != 0 {
		t.Fatalf("%v allocs per decode of Call+StreamChunk+Ack and encode of Call, want 0", n)
	}
	if &c.Data[0] != &call[20] {
		t.Fatal("Call.Data must alias the input")
	}
}
