package wire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"testing"
)

const transportVectorsPath = "../testdata/vectors/transport-layout.jsonl"

// transportVector holds the union of the fields used by the wire-level
// records of transport-layout.jsonl.
type transportVector struct {
	Kind         string      `json:"kind"`
	Name         string      `json:"name"`
	ConnID       uint64      `json:"conn_id"`
	PacketNumber uint64      `json:"packet_number"`
	Flags        uint8       `json:"flags"`
	PayloadLen   uint16      `json:"payload_len"`
	Nonce        string      `json:"nonce"`
	EncodedHex   string      `json:"encoded_hex"`
	InputHex     string      `json:"input_hex"`
	Verdict      string      `json:"verdict"`
	ErrorDetail  string      `json:"error_detail"`
	Largest      uint64      `json:"largest"`
	AckDelay     uint64      `json:"ack_delay_micros"`
	RangesInput  [][2]uint64 `json:"ranges_input"`
	RangesOrder  [][2]uint64 `json:"ranges_encoded_order"`
	Ranges       [][2]uint64 `json:"ranges"`
	StreamID     uint64      `json:"stream_id"`
	Limit        uint64      `json:"limit"`
	PayloadHex   string      `json:"payload_hex"`
	Role         string      `json:"role"`
	StreamKind   string      `json:"stream_kind"`
	Index        uint64      `json:"index"`
	Raw          uint64      `json:"raw"`
}

func loadTransportVectors(t *testing.T, kind string) []transportVector {
	t.Helper()
	f, err := os.Open(transportVectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []transportVector
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var v transportVector
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("bad vector line: %v", err)
		}
		if v.Kind == kind {
			out = append(out, v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("no %s vectors found", kind)
	}
	return out
}

func packetHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestPacketHeaderVectors(t *testing.T) {
	vs := loadTransportVectors(t, "packet_header")
	if len(vs) != 4 {
		t.Fatalf("want 4 packet_header vectors, got %d", len(vs))
	}
	for _, v := range vs {
		h := PacketHeader{ConnID: v.ConnID, PacketNumber: v.PacketNumber, Flags: v.Flags, PayloadLen: v.PayloadLen}
		copy(h.Nonce[:], packetHex(t, v.Nonce))
		want := packetHex(t, v.EncodedHex)
		got := AppendPacketHeader(nil, &h)
		if !bytes.Equal(got, want) {
			t.Errorf("encode %+v:\n got %x\nwant %x", h, got, want)
		}
		var buf [PacketHeaderLen]byte
		if err := PutPacketHeader(buf[:], &h); err != nil || !bytes.Equal(buf[:], want) {
			t.Errorf("PutPacketHeader: %v %x", err, buf)
		}
		var d PacketHeader
		if err := ParsePacketHeader(want, &d); err != nil {
			t.Fatalf("decode %x: %v", want, err)
		}
		if d != h {
			t.Errorf("decode: got %+v want %+v", d, h)
		}
	}
}

func TestPacketHeaderDecodeVectors(t *testing.T) {
	vs := loadTransportVectors(t, "packet_header_decode")
	if len(vs) != 4 {
		t.Fatalf("want 4 packet_header_decode vectors, got %d", len(vs))
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			in := packetHex(t, v.InputHex)
			var h PacketHeader
			err := ParsePacketHeader(in, &h)
			switch v.Verdict {
			case "ok":
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				want := PacketHeader{ConnID: v.ConnID, PacketNumber: v.PacketNumber, Flags: v.Flags, PayloadLen: v.PayloadLen}
				copy(want.Nonce[:], packetHex(t, v.Nonce))
				if h != want {
					t.Fatalf("got %+v want %+v", h, want)
				}
			case "error":
				var pe *PacketError
				if !errors.As(err, &pe) {
					t.Fatalf("want PacketError, got %v", err)
				}
				if got := refPacketDetail(pe); got != v.ErrorDetail {
					t.Fatalf("error detail: got %q want %q", got, v.ErrorDetail)
				}
			default:
				t.Fatalf("unknown verdict %q", v.Verdict)
			}
		})
	}
}

// refPacketDetail renders a PacketError the way the reference's Debug output
// does, so the vectors' error_detail can be compared exactly.
func refPacketDetail(e *PacketError) string {
	switch e.Kind {
	case PacketErrBufferTooSmall:
		return "BufferTooSmall { expected: " + packetItoa(e.Expected) + ", actual: " + packetItoa(e.Actual) + " }"
	case PacketErrReservedBitsSet:
		return "ReservedBitsSet(" + packetItoa(int(e.Value)) + ")"
	}
	return e.Kind.String()
}

func packetItoa(i int) string {
	b, _ := json.Marshal(i)
	return string(b)
}

func TestPacketHeaderErrors(t *testing.T) {
	var h PacketHeader
	if err := PutPacketHeader(make([]byte, 31), &h); !errors.Is(err, &PacketError{Kind: PacketErrBufferTooSmall}) {
		t.Fatalf("PutPacketHeader short: %v", err)
	}
	if err := ParsePacketHeader(nil, &h); !errors.Is(err, &PacketError{Kind: PacketErrBufferTooSmall}) {
		t.Fatalf("ParsePacketHeader nil: %v", err)
	}
	b := make([]byte, 32)
	b[PacketOffsetReserved] = 0x80
	err := ParsePacketHeader(b, &h)
	if !errors.Is(err, &PacketError{Kind: PacketErrReservedBitsSet}) || errors.Is(err, &PacketError{Kind: PacketErrBufferTooSmall}) {
		t.Fatalf("reserved: %v", err)
	}
	if err.Error() == "" {
		t.Fatal("empty message")
	}
}

func TestPacketHeaderRoundTripNoAlloc(t *testing.T) {
	h := PacketHeader{ConnID: 1, PacketNumber: 2, Flags: PacketFlagAck | PacketFlagProbe, PayloadLen: 1200}
	var buf [PacketHeaderLen]byte
	var d PacketHeader
	allocs := testing.AllocsPerRun(100, func() {
		_ = PutPacketHeader(buf[:], &h)
		_ = ParsePacketHeader(buf[:], &d)
	})
	if allocs != 0 {
		t.Fatalf("header codec allocates: %v", allocs)
	}
	if d != h {
		t.Fatalf("round trip: %+v vs %+v", d, h)
	}
}

func FuzzParsePacketHeader(f *testing.F) {
	f.Add(make([]byte, 32))
	f.Add(make([]byte, 31))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h PacketHeader
		err := ParsePacketHeader(b, &h)
		if len(b) < PacketHeaderLen {
			if err == nil {
				t.Fatal("short input accepted")
			}
			return
		}
		if b[PacketOffsetReserved] != 0 {
			if err == nil {
				t.Fatal("reserved byte accepted")
			}
			return
		}
		if err != nil {
			t.Fatalf("valid header rejected: %v", err)
		}
		// Re-encoding must give back exactly the first 32 bytes.
		if got := AppendPacketHeader(nil, &h); !bytes.Equal(got, b[:PacketHeaderLen]) {
			t.Fatalf("re-encode mismatch %x vs %x", got, b[:PacketHeaderLen])
		}
	})
}

func TestPeekPacketConnID(t *testing.T) {
	h := PacketHeader{ConnID: 0x0102030405060708, Flags: PacketFlagHandshake | PacketFlagAck}
	b := AppendPacketHeader(nil, &h)
	id, hs, err := PeekPacketConnID(append(b, 1, 2, 3))
	if err != nil || id != h.ConnID || !hs {
		t.Fatal(id, hs, err)
	}
	h.Flags = PacketFlagAck
	if _, hs, _ := PeekPacketConnID(AppendPacketHeader(nil, &h)); hs {
		t.Fatal("handshake flag misread")
	}
	if _, _, err := PeekPacketConnID(b[:31]); !errors.Is(err, &PacketError{Kind: PacketErrBufferTooSmall}) {
		t.Fatal(err)
	}
}
