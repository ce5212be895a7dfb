package wire

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"
)

// PayloadErrorKind names why a payload failed to decode or encode.
type PayloadErrorKind uint8

// Payload codec failures.
const (
	// PayloadTruncated: a field runs past the end of the payload.
	PayloadTruncated PayloadErrorKind = iota + 1
	// PayloadTrailingBytes: bytes remain after the last field of a fixed layout.
	PayloadTrailingBytes
	// PayloadInvalidUTF8: a string field is not valid UTF-8.
	PayloadInvalidUTF8
	// PayloadInvalidValue: a field holds a value its layout does not allow.
	PayloadInvalidValue
	// PayloadFieldTooLong: on encode, a string or list does not fit its length prefix.
	PayloadFieldTooLong
)

var payloadErrorKindNames = [...]string{
	PayloadTruncated:     "Truncated",
	PayloadTrailingBytes: "TrailingBytes",
	PayloadInvalidUTF8:   "InvalidUTF8",
	PayloadInvalidValue:  "InvalidValue",
	PayloadFieldTooLong:  "FieldTooLong",
}

func (k PayloadErrorKind) String() string {
	if int(k) < len(payloadErrorKindNames) && payloadErrorKindNames[k] != "" {
		return payloadErrorKindNames[k]
	}
	return "PayloadErrorKind(" + strconv.Itoa(int(k)) + ")"
}

// PayloadError reports a payload that does not follow its type's layout
// (docs/payloads.md). Offset is the byte offset of the field in the payload.
type PayloadError struct {
	Type   MsgType
	Kind   PayloadErrorKind
	Field  string
	Offset int
}

func (e *PayloadError) Error() string {
	return e.Type.String() + " payload: " + e.Kind.String() + " at field " + e.Field + " (offset " + strconv.Itoa(e.Offset) + ")"
}

// Is makes errors.Is(err, &PayloadError{Kind: k}) match any error of kind k.
func (e *PayloadError) Is(target error) bool {
	t, ok := target.(*PayloadError)
	return ok && t.Kind == e.Kind && (t.Type == 0 || t.Type == e.Type) && (t.Field == "" || t.Field == e.Field)
}

// payloadReader reads fields off a payload, bounding every length against the
// input. The first failure is kept in err and turns every later read into a
// no-op returning zero values, so decoders read straight through and check once.
type payloadReader struct {
	b   []byte
	off int
	typ MsgType
	err error
}

func (r *payloadReader) fail(kind PayloadErrorKind, field string) {
	if r.err == nil {
		r.err = &PayloadError{Type: r.typ, Kind: kind, Field: field, Offset: r.off}
	}
}

// invalid records that the field of width bytes just read holds a value its
// layout does not allow (a no-op after an earlier failure).
func (r *payloadReader) invalid(width int, field string) {
	if r.err == nil {
		r.off -= width
		r.fail(PayloadInvalidValue, field)
	}
}

// take returns the next n bytes, or nil after recording a truncation.
func (r *payloadReader) take(n int, field string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.fail(PayloadTruncated, field)
		return nil
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s
}

func (r *payloadReader) u8(field string) uint8 {
	if s := r.take(1, field); s != nil {
		return s[0]
	}
	return 0
}

func (r *payloadReader) u16(field string) uint16 {
	if s := r.take(2, field); s != nil {
		return binary.LittleEndian.Uint16(s)
	}
	return 0
}

func (r *payloadReader) u32(field string) uint32 {
	if s := r.take(4, field); s != nil {
		return binary.LittleEndian.Uint32(s)
	}
	return 0
}

func (r *payloadReader) u64(field string) uint64 {
	if s := r.take(8, field); s != nil {
		return binary.LittleEndian.Uint64(s)
	}
	return 0
}

func (r *payloadReader) id(field string) (id [16]byte) {
	copy(id[:], r.take(16, field))
	return id
}

// str reads a u16-length-prefixed UTF-8 string.
func (r *payloadReader) str(field string) string {
	n := r.u16(field)
	start := r.off
	s := r.take(int(n), field)
	if r.err != nil {
		return ""
	}
	if !utf8.Valid(s) {
		r.off = start
		r.fail(PayloadInvalidUTF8, field)
		return ""
	}
	return string(s)
}

// rest returns every remaining byte (a slice of the input, possibly empty).
func (r *payloadReader) rest() []byte {
	if r.err != nil {
		return nil
	}
	s := r.b[r.off:len(r.b):len(r.b)]
	r.off = len(r.b)
	return s
}

// end returns the first failure, or a trailing-bytes error if input remains.
func (r *payloadReader) end() error {
	if r.err == nil && r.off != len(r.b) {
		r.fail(PayloadTrailingBytes, "end")
	}
	return r.err
}

// payloadWriter appends fields to dst, recording the first encode failure.
type payloadWriter struct {
	b   []byte
	typ MsgType
	err error
}

func (w *payloadWriter) fail(kind PayloadErrorKind, field string) {
	if w.err == nil {
		w.err = &PayloadError{Type: w.typ, Kind: kind, Field: field, Offset: -1}
	}
}

func (w *payloadWriter) u8(v uint8)   { w.b = append(w.b, v) }
func (w *payloadWriter) u16(v uint16) { w.b = binary.LittleEndian.AppendUint16(w.b, v) }
func (w *payloadWriter) u32(v uint32) { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
func (w *payloadWriter) u64(v uint64) { w.b = binary.LittleEndian.AppendUint64(w.b, v) }
func (w *payloadWriter) raw(p []byte) { w.b = append(w.b, p...) }

// count writes a u16 list length, failing when n does not fit.
func (w *payloadWriter) count(n int, field string) {
	if n > 0xFFFF {
		w.fail(PayloadFieldTooLong, field)
	}
	w.u16(uint16(n))
}

func (w *payloadWriter) str(s, field string) {
	if !utf8.ValidString(s) {
		w.fail(PayloadInvalidUTF8, field)
	}
	w.count(len(s), field)
	w.b = append(w.b, s...)
}

// done returns the extended buffer, or dst unchanged with the first failure.
func (w *payloadWriter) done(dst []byte) ([]byte, error) {
	if w.err != nil {
		return dst, w.err
	}
	return w.b, nil
}
