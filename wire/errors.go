package wire

import "strconv"

// ErrorKind names why a message failed to decode. The names match the
// reference implementation's error variants (and the vectors' error_kind).
type ErrorKind uint8

// Message decode failures, in the order DecodeMessage checks them.
const (
	BufferTooSmall ErrorKind = iota + 1
	InvalidMagic
	ReservedFieldNonZero
	InvalidMessageType
	InvalidFlags
	PayloadTooLarge
	ChecksumMismatch
)

var errorKindNames = [...]string{
	BufferTooSmall:       "BufferTooSmall",
	InvalidMagic:         "InvalidMagic",
	ReservedFieldNonZero: "ReservedFieldNonZero",
	InvalidMessageType:   "InvalidMessageType",
	InvalidFlags:         "InvalidFlags",
	PayloadTooLarge:      "PayloadTooLarge",
	ChecksumMismatch:     "ChecksumMismatch",
}

func (k ErrorKind) String() string {
	if int(k) < len(errorKindNames) && errorKindNames[k] != "" {
		return errorKindNames[k]
	}
	return "ErrorKind(" + strconv.Itoa(int(k)) + ")"
}

// MessageError is the error DecodeMessage and AppendMessage return. Value is
// the offending value (the length got, the magic, reserved, type or flags
// found, the payload size, the checksum found); Limit is what was needed (the
// length needed, the maximum payload size, the checksum computed).
type MessageError struct {
	Kind  ErrorKind
	Value uint64
	Limit uint64
}

// Error renders the error in the reference's debug style, e.g.
// "BufferTooSmall { needed: 40, got: 10 }".
func (e *MessageError) Error() string {
	v := strconv.FormatUint(e.Value, 10)
	l := strconv.FormatUint(e.Limit, 10)
	switch e.Kind {
	case BufferTooSmall:
		return "BufferTooSmall { needed: " + l + ", got: " + v + " }"
	case InvalidMagic:
		return "InvalidMagic { found: " + v + " }"
	case ReservedFieldNonZero:
		return `ReservedFieldNonZero { field: "header.reserved", value: ` + v + " }"
	case InvalidMessageType:
		return "InvalidMessageType { type_byte: " + v + " }"
	case InvalidFlags:
		return "InvalidFlags { flags: " + v + " }"
	case PayloadTooLarge:
		return "PayloadTooLarge { size: " + v + ", max: " + l + " }"
	case ChecksumMismatch:
		return "ChecksumMismatch { expected: " + l + ", found: " + v + " }"
	}
	return e.Kind.String()
}

// Is makes errors.Is(err, ErrChecksumMismatch) and friends match by kind.
func (e *MessageError) Is(target error) bool {
	t, ok := target.(*MessageError)
	return ok && t.Kind == e.Kind && t.Value == 0 && t.Limit == 0
}

// Sentinels for errors.Is: each matches any *MessageError of its kind.
var (
	ErrBufferTooSmall       error = &MessageError{Kind: BufferTooSmall}
	ErrInvalidMagic         error = &MessageError{Kind: InvalidMagic}
	ErrReservedFieldNonZero error = &MessageError{Kind: ReservedFieldNonZero}
	ErrInvalidMessageType   error = &MessageError{Kind: InvalidMessageType}
	ErrInvalidFlags         error = &MessageError{Kind: InvalidFlags}
	ErrPayloadTooLarge      error = &MessageError{Kind: PayloadTooLarge}
	ErrChecksumMismatch     error = &MessageError{Kind: ChecksumMismatch}
)
