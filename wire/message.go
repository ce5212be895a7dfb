// Package wire holds the MXP codecs: the message layer (a 32-byte little-endian
// header, a payload and an XXH3-64 checksum, byte-compatible with the Rust
// reference), the typed payload codecs of every message type, and the transport
// packet header and frame bodies.
//
// Decoding is zero-copy: a decoded Message's Payload is a slice of the input.
// Encoding appends into a caller's buffer. Nothing here allocates on the success
// path, and nothing panics on any input.
//
// wire imports nothing else of this module.
package wire

import (
	"encoding/binary"

	"github.com/zeebo/xxh3"
)

// Layout constants of the message layer (spec §1).
const (
	// Magic is the first header field, "MXP1" read as a little-endian u32: the
	// wire bytes are 31 50 58 4D.
	Magic uint32 = 0x4D585031
	// HeaderSize is the size of the fixed message header.
	HeaderSize = 32
	// ChecksumSize is the size of the trailing XXH3-64 checksum.
	ChecksumSize = 8
	// MinMessageSize is the size of a message with an empty payload.
	MinMessageSize = HeaderSize + ChecksumSize
	// MaxPayloadSize is the largest payload a message may carry (16 MiB, inclusive).
	MaxPayloadSize = 16 << 20
)

// MsgType is the message type byte.
type MsgType uint8

// Message types of the protocol. 0x80–0xEF are extension types (see IsExtension).
const (
	TypeAgentRegister  MsgType = 0x01
	TypeAgentDiscover  MsgType = 0x02
	TypeAgentHeartbeat MsgType = 0x03
	TypeCall           MsgType = 0x10
	TypeResponse       MsgType = 0x11
	TypeEvent          MsgType = 0x12
	TypeStreamOpen     MsgType = 0x20
	TypeStreamChunk    MsgType = 0x21
	TypeStreamClose    MsgType = 0x22
	TypeAck            MsgType = 0xF0
	TypeError          MsgType = 0xF1

	// First and last extension (custom) types reserved by SPEC.md.
	TypeExtensionFirst MsgType = 0x80
	TypeExtensionLast  MsgType = 0xEF
)

// typeNames holds the name of every defined type; "" marks an undefined one.
var typeNames = [256]string{
	TypeAgentRegister:  "AgentRegister",
	TypeAgentDiscover:  "AgentDiscover",
	TypeAgentHeartbeat: "AgentHeartbeat",
	TypeCall:           "Call",
	TypeResponse:       "Response",
	TypeEvent:          "Event",
	TypeStreamOpen:     "StreamOpen",
	TypeStreamChunk:    "StreamChunk",
	TypeStreamClose:    "StreamClose",
	TypeAck:            "Ack",
	TypeError:          "Error",
}

// IsExtension reports whether t is in the extension range 0x80–0xEF.
func (t MsgType) IsExtension() bool { return t >= TypeExtensionFirst && t <= TypeExtensionLast }

// Valid reports whether t may appear on the wire: a defined type or an extension type.
func (t MsgType) Valid() bool { return typeNames[t] != "" || t.IsExtension() }

// String returns the type's name: "Call", "Extension(0x80)", or "Unknown(0x13)".
func (t MsgType) String() string {
	if n := typeNames[t]; n != "" {
		return n
	}
	const hex = "0123456789abcdef"
	b := []byte("Unknown(0x00)")
	if t.IsExtension() {
		b = []byte("Extension(0x00)")
	}
	b[len(b)-3] = hex[t>>4]
	b[len(b)-2] = hex[t&0xF]
	return string(b)
}

// MsgFlags is the message flags byte.
type MsgFlags uint8

// Message flags. Bits 4–7 are reserved and must be zero.
const (
	FlagCompressed  MsgFlags = 1 << 0 // payload is zstd-compressed
	FlagEncrypted   MsgFlags = 1 << 1 // payload is end-to-end encrypted
	FlagRequiresAck MsgFlags = 1 << 2 // sender wants an Ack
	FlagFinal       MsgFlags = 1 << 3 // last message of a sequence

	// FlagsReserved is the mask of the bits that must be zero.
	FlagsReserved MsgFlags = 0xF0
)

// Message is one decoded MXP message. After Decode, Payload aliases the input
// buffer: copy it if the buffer is reused.
type Message struct {
	Type      MsgType
	Flags     MsgFlags
	MessageID uint64
	TraceID   uint64
	Payload   []byte
}

// EncodedLen returns the number of bytes AppendMessage writes for a payload of n bytes.
func EncodedLen(n int) int { return MinMessageSize + n }

// AppendMessage appends the encoding of m to dst and returns the extended slice.
// It refuses (with a *MessageError) what Decode would refuse: an undefined type,
// reserved flag bits, or a payload over MaxPayloadSize. dst is not modified on error.
func AppendMessage(dst []byte, m *Message) ([]byte, error) {
	if !m.Type.Valid() {
		return dst, &MessageError{Kind: InvalidMessageType, Value: uint64(m.Type)}
	}
	if m.Flags&FlagsReserved != 0 {
		return dst, &MessageError{Kind: InvalidFlags, Value: uint64(m.Flags)}
	}
	n := len(m.Payload)
	if n > MaxPayloadSize {
		return dst, &MessageError{Kind: PayloadTooLarge, Value: uint64(n), Limit: MaxPayloadSize}
	}
	start := len(dst)
	dst = grow(dst, MinMessageSize+n)
	b := dst[start:]
	binary.LittleEndian.PutUint32(b[0:], Magic)
	b[4] = byte(m.Type)
	b[5] = byte(m.Flags)
	b[6], b[7] = 0, 0
	binary.LittleEndian.PutUint64(b[8:], m.MessageID)
	binary.LittleEndian.PutUint64(b[16:], m.TraceID)
	binary.LittleEndian.PutUint64(b[24:], uint64(n))
	copy(b[HeaderSize:], m.Payload)
	binary.LittleEndian.PutUint64(b[HeaderSize+n:], xxh3.Hash(b[:HeaderSize+n]))
	return dst, nil
}

// grow extends b by n bytes, reallocating only when its capacity is too small.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

// DecodeMessage decodes the message at the start of b. It returns the message,
// whose Payload is a slice of b, and the number of bytes the message occupies;
// bytes after it are not examined, so several messages can share one buffer.
//
// Checks run in the reference's order and the first failure is returned as a
// *MessageError whose Kind names it: BufferTooSmall, InvalidMagic,
// ReservedFieldNonZero, InvalidMessageType, InvalidFlags, PayloadTooLarge,
// BufferTooSmall (for the payload), ChecksumMismatch.
func DecodeMessage(b []byte) (Message, int, error) {
	if len(b) < MinMessageSize {
		return Message{}, 0, &MessageError{Kind: BufferTooSmall, Limit: MinMessageSize, Value: uint64(len(b))}
	}
	if magic := binary.LittleEndian.Uint32(b); magic != Magic {
		return Message{}, 0, &MessageError{Kind: InvalidMagic, Value: uint64(magic)}
	}
	if r := binary.LittleEndian.Uint16(b[6:]); r != 0 {
		return Message{}, 0, &MessageError{Kind: ReservedFieldNonZero, Value: uint64(r)}
	}
	t := MsgType(b[4])
	if !t.Valid() {
		return Message{}, 0, &MessageError{Kind: InvalidMessageType, Value: uint64(t)}
	}
	f := MsgFlags(b[5])
	if f&FlagsReserved != 0 {
		return Message{}, 0, &MessageError{Kind: InvalidFlags, Value: uint64(f)}
	}
	plen := binary.LittleEndian.Uint64(b[24:])
	if plen > MaxPayloadSize {
		return Message{}, 0, &MessageError{Kind: PayloadTooLarge, Value: plen, Limit: MaxPayloadSize}
	}
	end := HeaderSize + int(plen)
	if len(b)-ChecksumSize < end {
		return Message{}, 0, &MessageError{Kind: BufferTooSmall, Limit: uint64(end + ChecksumSize), Value: uint64(len(b))}
	}
	found := binary.LittleEndian.Uint64(b[end:])
	if sum := xxh3.Hash(b[:end]); sum != found {
		return Message{}, 0, &MessageError{Kind: ChecksumMismatch, Limit: sum, Value: found}
	}
	return Message{
		Type:      t,
		Flags:     f,
		MessageID: binary.LittleEndian.Uint64(b[8:]),
		TraceID:   binary.LittleEndian.Uint64(b[16:]),
		Payload:   b[HeaderSize:end:end],
	}, end + ChecksumSize, nil
}
