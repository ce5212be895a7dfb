package wire

import (
	"strconv"
	"testing"
)

var benchSizes = []int{0, 64, 256, 1024, 4096, 16384}

func benchMessage(size int) Message {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(7*i + 0x10)
	}
	return Message{Type: TypeCall, Flags: FlagRequiresAck, MessageID: 0x1122334455667788, TraceID: 0xF0E1D2C3B4A59687, Payload: p}
}

func BenchmarkEncode(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			m := benchMessage(size)
			buf := make([]byte, 0, EncodedLen(size))
			b.SetBytes(int64(EncodedLen(size)))
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if buf, err = AppendMessage(buf[:0], &m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecode includes checksum verification.
func BenchmarkDecode(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			m := benchMessage(size)
			enc, err := AppendMessage(nil, &m)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := DecodeMessage(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestMessageCodecDoesNotAllocate(t *testing.T) {
	m := benchMessage(256)
	buf := make([]byte, 0, EncodedLen(256))
	enc, _ := AppendMessage(nil, &m)
	if n := testing.AllocsPerRun(100, func() { buf, _ = AppendMessage(buf[:0], &m) }); n != 0 {
		t.Errorf("AppendMessage: %v allocs/op, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _, _, _ = DecodeMessage(enc) }); n != 0 {
		t.Errorf("DecodeMessage: %v allocs/op, want 0", n)
	}
}
