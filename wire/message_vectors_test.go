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

// vectorsDir holds a copy of ../shared/vectors, the reference's own outputs.
const vectorsDir = "../testdata/vectors/"

type messageVector struct {
	Kind        string `json:"kind"`
	Name        string `json:"name"`
	MsgType     *uint8 `json:"msg_type"`
	TypeName    string `json:"msg_type_name"`
	Flags       uint8  `json:"flags"`
	MessageID   uint64 `json:"message_id"`
	TraceID     uint64 `json:"trace_id"`
	PayloadLen  uint64 `json:"payload_len"`
	PayloadHex  string `json:"payload_hex"`
	Checksum    uint64 `json:"checksum"`
	EncodedLen  int    `json:"encoded_len"`
	EncodedHex  string `json:"encoded_hex"`
	InputHex    string `json:"input_hex"`
	InputLen    int    `json:"input_len"`
	Verdict     string `json:"verdict"`
	ErrorKind   string `json:"error_kind"`
	ErrorDetail string `json:"error_detail"`
	Description string `json:"description"`
}

func readJSONL[T any](t testing.TB, name string) []T {
	t.Helper()
	f, err := os.Open(vectorsDir + name)
	if err != nil {
		t.Fatalf("open vectors: %v", err)
	}
	defer f.Close()
	var out []T
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 8<<20)
	for sc.Scan() {
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("%s line %d: %v", name, len(out)+1, err)
		}
		out = append(out, v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in vector: %v", err)
	}
	return b
}

// The deliberate deviation from the reference: SPEC.md's extension types decode.
var decodeDeviations = map[string]bool{"type_0xef": true}

func TestMessageVectors(t *testing.T) {
	vs := readJSONL[messageVector](t, "messages.jsonl")
	var valid, cases int
	for _, v := range vs {
		switch v.Kind {
		case "valid":
			valid++
			t.Run(v.Name, func(t *testing.T) { checkValidVector(t, v) })
		case "decode_case":
			cases++
			t.Run(v.Name, func(t *testing.T) { checkDecodeCase(t, v) })
		default:
			t.Fatalf("unknown vector kind %q", v.Kind)
		}
	}
	if valid != 55 || cases != 32 {
		t.Fatalf("read %d valid and %d decode_case vectors, want 55 and 32", valid, cases)
	}
}

func checkValidVector(t *testing.T, v messageVector) {
	want := mustHex(t, v.EncodedHex)
	payload := mustHex(t, v.PayloadHex)
	if len(want) != v.EncodedLen || uint64(len(payload)) != v.PayloadLen {
		t.Fatalf("vector lengths inconsistent")
	}
	m := Message{Type: MsgType(*v.MsgType), Flags: MsgFlags(v.Flags), MessageID: v.MessageID, TraceID: v.TraceID, Payload: payload}
	if got := m.Type.String(); got != v.TypeName {
		t.Errorf("type name %q, want %q", got, v.TypeName)
	}
	// Encode, appending after existing bytes to check nothing before is touched.
	prefix := []byte("prefix")
	enc, err := AppendMessage(append([]byte(nil), prefix...), &m)
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	if !bytes.Equal(enc[:len(prefix)], prefix) || !bytes.Equal(enc[len(prefix):], want) {
		t.Fatalf("encode mismatch:\n got %x\nwant %x", enc[len(prefix):min(len(enc), len(prefix)+80)], want[:min(len(want), 80)])
	}
	if EncodedLen(len(payload)) != len(want) {
		t.Errorf("EncodedLen = %d, want %d", EncodedLen(len(payload)), len(want))
	}
	got, n, err := DecodeMessage(want)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if n != len(want) {
		t.Errorf("consumed %d, want %d", n, len(want))
	}
	if got.Type != m.Type || got.Flags != m.Flags || got.MessageID != v.MessageID || got.TraceID != v.TraceID || !bytes.Equal(got.Payload, payload) {
		t.Errorf("decoded %+v", got)
	}
	if len(payload) > 0 && &got.Payload[0] != &want[HeaderSize] {
		t.Errorf("decode copied the payload; it must alias the input")
	}
}

func checkDecodeCase(t *testing.T, v messageVector) {
	in := mustHex(t, v.InputHex)
	if len(in) != v.InputLen {
		t.Fatalf("input_len %d, hex has %d", v.InputLen, len(in))
	}
	m, n, err := DecodeMessage(in)
	wantOK := v.Verdict == "ok" || decodeDeviations[v.Name]
	if !wantOK {
		var me *MessageError
		if !errors.As(err, &me) {
			t.Fatalf("decode = %v, want a *MessageError of kind %s (%s)", err, v.ErrorKind, v.Description)
		}
		if me.Kind.String() != v.ErrorKind {
			t.Fatalf("error kind %s, want %s", me.Kind, v.ErrorKind)
		}
		if me.Error() != v.ErrorDetail {
			t.Errorf("error detail %q, want the reference's %q", me.Error(), v.ErrorDetail)
		}
		if n != 0 {
			t.Errorf("consumed %d on error", n)
		}
		return
	}
	if err != nil {
		t.Fatalf("decode: %v (%s)", err, v.Description)
	}
	if decodeDeviations[v.Name] {
		if !m.Type.IsExtension() || m.Type != 0xEF {
			t.Fatalf("type %v, want extension 0xef", m.Type)
		}
		if n != len(in) {
			t.Errorf("consumed %d, want %d", n, len(in))
		}
		return
	}
	if m.Type != MsgType(*v.MsgType) || m.Flags != MsgFlags(v.Flags) || m.MessageID != v.MessageID || m.TraceID != v.TraceID || !bytes.Equal(m.Payload, mustHex(t, v.PayloadHex)) {
		t.Errorf("decoded %+v", m)
	}
	if want := EncodedLen(int(v.PayloadLen)); n != want {
		t.Errorf("consumed %d, want %d (trailing bytes belong to the next message)", n, want)
	}
}
