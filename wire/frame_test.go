package wire

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strconv"
	"testing"

	"pgregory.net/rapid"
)

func toRanges(rs [][2]uint64) []AckRange {
	out := make([]AckRange, len(rs))
	for i, r := range rs {
		out[i] = AckRange{Start: r[0], End: r[1]}
	}
	return out
}

func TestAckFrameVectors(t *testing.T) {
	vs := loadTransportVectors(t, "ack_frame")
	if len(vs) != 5 {
		t.Fatalf("want 5 ack_frame vectors, got %d", len(vs))
	}
	for i, v := range vs {
		f := AckFrame{Largest: v.Largest, AckDelayMicros: v.AckDelay, Ranges: toRanges(v.RangesInput)}
		got, err := AppendAckFrame(nil, &f)
		if err != nil {
			t.Fatalf("vector %d: encode: %v", i, err)
		}
		want := packetHex(t, v.EncodedHex)
		if !bytes.Equal(got, want) {
			t.Errorf("vector %d:\n got %x\nwant %x", i, got, want)
		}
		if !slices.Equal(f.Ranges, toRanges(v.RangesOrder)) {
			t.Errorf("vector %d: encoder order %v, want %v", i, f.Ranges, v.RangesOrder)
		}
		var d AckFrame
		n, err := ParseAckFrame(want, &d)
		if err != nil || n != len(want) {
			t.Fatalf("vector %d: decode n=%d err=%v", i, n, err)
		}
		if d.Largest != v.Largest || d.AckDelayMicros != v.AckDelay || !slices.Equal(d.Ranges, toRanges(v.RangesOrder)) {
			t.Errorf("vector %d: decoded %+v", i, d)
		}
		if AckFrameLen(&d) != len(want) {
			t.Errorf("AckFrameLen %d != %d", AckFrameLen(&d), len(want))
		}
	}
}

func refFrameDetail(e *FrameError) string {
	switch e.Kind {
	case FrameErrBufferTooSmall:
		return "BufferTooSmall { expected: " + strconv.Itoa(e.Expected) + ", actual: " + strconv.Itoa(e.Actual) + " }"
	case FrameErrInvalidRange:
		return "InvalidRange { start: " + strconv.FormatUint(e.Start, 10) + ", end: " + strconv.FormatUint(e.End, 10) + " }"
	}
	return e.Kind.String()
}

func TestAckFrameDecodeVectors(t *testing.T) {
	vs := loadTransportVectors(t, "ack_frame_decode")
	if len(vs) != 7 {
		t.Fatalf("want 7 ack_frame_decode vectors, got %d", len(vs))
	}
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			in := packetHex(t, v.InputHex)
			var f AckFrame
			n, err := ParseAckFrame(in, &f)
			if v.Verdict == "ok" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if f.Largest != v.Largest || f.AckDelayMicros != v.AckDelay || !slices.Equal(f.Ranges, toRanges(v.Ranges)) {
					t.Fatalf("decoded %+v", f)
				}
				if n != AckFrameLen(&f) || n > len(in) {
					t.Fatalf("consumed %d", n)
				}
				return
			}
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("want FrameError, got %v", err)
			}
			if got := refFrameDetail(fe); got != v.ErrorDetail {
				t.Fatalf("detail %q, want %q", got, v.ErrorDetail)
			}
		})
	}
}

func TestAckFrameEncodeErrors(t *testing.T) {
	cases := []struct {
		name string
		f    AckFrame
		kind FrameErrorKind
	}{
		{"empty", AckFrame{Largest: 1}, FrameErrEmptyHistory},
		{"start>end", AckFrame{Largest: 5, Ranges: []AckRange{{6, 5}}}, FrameErrInvalidRange},
		{"largest", AckFrame{Largest: 6, Ranges: []AckRange{{1, 5}}}, FrameErrInvalidRange},
		{"overlap", AckFrame{Largest: 9, Ranges: []AckRange{{3, 9}, {1, 3}}}, FrameErrInvalidRange},
		{"too many", AckFrame{Largest: 1 << 20, Ranges: make([]AckRange, AckMaxRanges+1)}, FrameErrTooManyRanges},
	}
	for _, c := range cases {
		if _, err := AppendAckFrame(nil, &c.f); !errors.Is(err, &FrameError{Kind: c.kind}) {
			t.Errorf("%s: got %v want %v", c.name, err, c.kind)
		}
	}
	// The decoder applies the same overlap rule.
	f := AckFrame{Largest: 9, Ranges: []AckRange{{5, 9}, {1, 2}}}
	b, err := AppendAckFrame(nil, &f)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[AckFrameFixedLen+16+8:], []byte{5, 0, 0, 0, 0, 0, 0, 0}) // second range [1,5] overlaps [5,9]
	if _, err := ParseAckFrame(b, &f); !errors.Is(err, &FrameError{Kind: FrameErrInvalidRange}) {
		t.Fatalf("overlap decode: %v", err)
	}
}

func TestAckFrameRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 40).Draw(t, "n")
		// Build disjoint ranges descending from a random top.
		top := rapid.Uint64().Draw(t, "top")
		cur := top
		var rs []AckRange
		for i := 0; i < n; i++ {
			length := rapid.Uint64Range(0, 1000).Draw(t, "len")
			if length > cur {
				length = cur
			}
			rs = append(rs, AckRange{Start: cur - length, End: cur})
			gap := rapid.Uint64Range(2, 1000).Draw(t, "gap")
			if cur-length < gap {
				break
			}
			cur = cur - length - gap
		}
		shuffled := slices.Clone(rs)
		for i := range shuffled {
			j := rapid.IntRange(0, len(shuffled)-1).Draw(t, "j")
			shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
		}
		f := AckFrame{Largest: top, AckDelayMicros: rapid.Uint64().Draw(t, "delay"), Ranges: shuffled}
		b, err := AppendAckFrame(nil, &f)
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		var d AckFrame
		m, err := ParseAckFrame(append(b, 0xee), &d)
		if err != nil || m != len(b) {
			t.Fatalf("decode: %d %v", m, err)
		}
		if !slices.Equal(d.Ranges, rs) || d.Largest != top || d.AckDelayMicros != f.AckDelayMicros {
			t.Fatalf("mismatch %+v vs %+v", d, rs)
		}
	})
}

func TestAckFrameNoAlloc(t *testing.T) {
	f := AckFrame{Largest: 100, AckDelayMicros: 7, Ranges: []AckRange{{90, 100}, {50, 80}, {0, 10}}}
	buf := make([]byte, 0, 256)
	d := AckFrame{Ranges: make([]AckRange, 0, 8)}
	allocs := testing.AllocsPerRun(100, func() {
		b, _ := AppendAckFrame(buf[:0], &f)
		_, _ = ParseAckFrame(b, &d)
	})
	if allocs != 0 {
		t.Fatalf("ACK codec allocates %v per run", allocs)
	}
}

func TestMaxDataVectors(t *testing.T) {
	for _, v := range loadTransportVectors(t, "frame_stream_max_data") {
		want := packetHex(t, v.PayloadHex)
		f := StreamMaxDataFrame{StreamID: v.StreamID, Limit: v.Limit}
		if got := AppendStreamMaxDataFrame(nil, f); !bytes.Equal(got, want) {
			t.Errorf("StreamMaxData %+v: %x want %x", f, got, want)
		}
		d, n, err := ParseStreamMaxDataFrame(want)
		if err != nil || n != StreamMaxDataLen || d != f {
			t.Errorf("StreamMaxData decode: %+v %d %v", d, n, err)
		}
		if _, _, err := ParseStreamMaxDataFrame(want[:15]); !errors.Is(err, &FrameError{Kind: FrameErrBufferTooSmall}) {
			t.Errorf("short StreamMaxData: %v", err)
		}
	}
	for _, v := range loadTransportVectors(t, "frame_connection_max_data") {
		want := packetHex(t, v.PayloadHex)
		f := ConnectionMaxDataFrame{Limit: v.Limit}
		if got := AppendConnectionMaxDataFrame(nil, f); !bytes.Equal(got, want) {
			t.Errorf("ConnectionMaxData %+v: %x want %x", f, got, want)
		}
		d, n, err := ParseConnectionMaxDataFrame(want)
		if err != nil || n != ConnectionMaxDataLen || d != f {
			t.Errorf("ConnectionMaxData decode: %+v %d %v", d, n, err)
		}
		if _, _, err := ParseConnectionMaxDataFrame(want[:7]); !errors.Is(err, &FrameError{Kind: FrameErrBufferTooSmall}) {
			t.Errorf("short ConnectionMaxData: %v", err)
		}
	}
}

func TestStreamIDVectors(t *testing.T) {
	for _, v := range loadTransportVectors(t, "stream_id") {
		role := StreamIDClient
		if v.Role == "Server" {
			role = StreamIDServer
		}
		kind := StreamIDBidirectional
		if v.StreamKind == "Unidirectional" {
			kind = StreamIDUnidirectional
		}
		id, ok := MakeStreamID(v.Index, role, kind)
		if !ok || uint64(id) != v.Raw {
			t.Errorf("MakeStreamID(%d,%v,%v) = %d,%v want %d", v.Index, role, kind, id, ok, v.Raw)
		}
		d := StreamID(v.Raw)
		if d.Index() != v.Index || d.Role() != role || d.Kind() != kind {
			t.Errorf("decode %d: %d %v %v", v.Raw, d.Index(), d.Role(), d.Kind())
		}
		if d.Role().String() != v.Role || d.Kind().String() != v.StreamKind {
			t.Errorf("names %s %s", d.Role(), d.Kind())
		}
	}
	if _, ok := MakeStreamID(StreamIDMaxIndex+1, StreamIDClient, StreamIDBidirectional); ok {
		t.Error("index overflow accepted")
	}
	if _, ok := MakeStreamID(0, 2, StreamIDBidirectional); ok {
		t.Error("bad role accepted")
	}
	id, ok := MakeStreamID(StreamIDMaxIndex, StreamIDServer, StreamIDUnidirectional)
	if !ok || uint64(id) != math.MaxUint64 {
		t.Errorf("max id %d", id)
	}
}

func FuzzParseAckFrame(f *testing.F) {
	f.Add(packetHexF("0f00000000000000fa0000000000000002000a000000000000000f0000000000000003000000000000000500000000000000"))
	f.Add(packetHexF("0900000000000000000000000000000002000100000000000000020000000000000005000000000000000900000000000000"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		var a AckFrame
		n, err := ParseAckFrame(b, &a)
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if n > len(b) || n != AckFrameLen(&a) {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		// A decoded frame is canonical: encoding it and decoding again is stable.
		enc, err := AppendAckFrame(nil, &a)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		var a2 AckFrame
		if _, err := ParseAckFrame(enc, &a2); err != nil || !slices.Equal(a.Ranges, a2.Ranges) || a.Largest != a2.Largest || a.AckDelayMicros != a2.AckDelayMicros {
			t.Fatalf("unstable: %v", err)
		}
		for i := 1; i < len(a.Ranges); i++ {
			if a.Ranges[i].End >= a.Ranges[i-1].Start {
				t.Fatalf("not disjoint/descending: %v", a.Ranges)
			}
		}
	})
}

func FuzzParseMaxDataFrames(f *testing.F) {
	f.Add(packetHexF("0d000000000000000002000000000000"))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, n, err := ParseStreamMaxDataFrame(b)
		if (err == nil) != (len(b) >= StreamMaxDataLen) {
			t.Fatalf("StreamMaxData verdict wrong for %d bytes: %v", len(b), err)
		}
		if err == nil && !bytes.Equal(AppendStreamMaxDataFrame(nil, s), b[:n]) {
			t.Fatal("StreamMaxData round trip")
		}
		c, n, err := ParseConnectionMaxDataFrame(b)
		if (err == nil) != (len(b) >= ConnectionMaxDataLen) {
			t.Fatalf("ConnectionMaxData verdict wrong for %d bytes: %v", len(b), err)
		}
		if err == nil && !bytes.Equal(AppendConnectionMaxDataFrame(nil, c), b[:n]) {
			t.Fatal("ConnectionMaxData round trip")
		}
	})
}

func packetHexF(s string) []byte {
	b := make([]byte, len(s)/2)
	for i := range b {
		v, err := strconv.ParseUint(s[2*i:2*i+2], 16, 8)
		if err != nil {
			panic(err)
		}
		b[i] = byte(v)
	}
	return b
}
