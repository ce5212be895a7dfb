package wire

import (
	"encoding/binary"
	"strconv"
)

// PacketHeaderLen is the size of the fixed transport packet header.
const PacketHeaderLen = 32

// PacketNonceLen is the size of the nonce field at the end of the header.
const PacketNonceLen = 12

// Transport packet flag bits (header byte 16).
const (
	PacketFlagHandshake    uint8 = 0x01
	PacketFlagAckEliciting uint8 = 0x02
	PacketFlagAck          uint8 = 0x04
	PacketFlagKeyPhase     uint8 = 0x08
	PacketFlagProbe        uint8 = 0x10
	// PacketFlagsKnown is the union of the defined flag bits.
	PacketFlagsKnown uint8 = 0x1f
)

// Byte offsets of the header fields.
const (
	PacketOffsetConnID       = 0
	PacketOffsetPacketNumber = 8
	PacketOffsetFlags        = 16
	PacketOffsetReserved     = 17
	PacketOffsetPayloadLen   = 18
	PacketOffsetNonce        = 20
)

// PacketHeader is the unprotected 32-byte transport packet header:
//
//	offset size field
//	0      8    conn ID        u64 LE
//	8      8    packet number  u64 LE
//	16     1    flags          u8
//	17     1    reserved       u8, must be 0
//	18     2    payload length u16 LE
//	20     12   nonce field
//
// The codec is purely structural: unknown flag bits are carried through, the
// meaning of each field for handshake and protected packets is defined by the
// crypto package (docs/packet.md, docs/crypto.md).
type PacketHeader struct {
	ConnID       uint64
	PacketNumber uint64
	Flags        uint8
	PayloadLen   uint16
	Nonce        [PacketNonceLen]byte
}

// PacketErrorKind classifies a PacketError.
type PacketErrorKind uint8

const (
	// PacketErrBufferTooSmall: fewer bytes than the structure needs.
	PacketErrBufferTooSmall PacketErrorKind = iota + 1
	// PacketErrReservedBitsSet: the reserved header byte is not zero.
	PacketErrReservedBitsSet
)

func (k PacketErrorKind) String() string {
	switch k {
	case PacketErrBufferTooSmall:
		return "BufferTooSmall"
	case PacketErrReservedBitsSet:
		return "ReservedBitsSet"
	}
	return "PacketErrorKind(" + strconv.Itoa(int(k)) + ")"
}

// PacketError is the typed error returned by the packet header codec.
type PacketError struct {
	Kind     PacketErrorKind
	Expected int   // BufferTooSmall: bytes needed
	Actual   int   // BufferTooSmall: bytes available
	Value    uint8 // ReservedBitsSet: the reserved byte
}

func (e *PacketError) Error() string {
	switch e.Kind {
	case PacketErrBufferTooSmall:
		return "wire: packet: buffer too small: expected " + strconv.Itoa(e.Expected) + ", actual " + strconv.Itoa(e.Actual)
	case PacketErrReservedBitsSet:
		return "wire: packet: reserved bits set: " + strconv.Itoa(int(e.Value))
	}
	return "wire: packet: " + e.Kind.String()
}

// Is reports whether target is a *PacketError of the same kind, so that
// errors.Is(err, &PacketError{Kind: PacketErrBufferTooSmall}) works.
func (e *PacketError) Is(target error) bool {
	t, ok := target.(*PacketError)
	return ok && t.Kind == e.Kind
}

// PutPacketHeader writes h into b[:PacketHeaderLen]. The reserved byte is
// written as zero. It returns a *PacketError if b is too short.
func PutPacketHeader(b []byte, h *PacketHeader) error {
	if len(b) < PacketHeaderLen {
		return &PacketError{Kind: PacketErrBufferTooSmall, Expected: PacketHeaderLen, Actual: len(b)}
	}
	putPacketHeader(b[:PacketHeaderLen], h)
	return nil
}

func putPacketHeader(b []byte, h *PacketHeader) {
	_ = b[31]
	binary.LittleEndian.PutUint64(b[PacketOffsetConnID:], h.ConnID)
	binary.LittleEndian.PutUint64(b[PacketOffsetPacketNumber:], h.PacketNumber)
	b[PacketOffsetFlags] = h.Flags
	b[PacketOffsetReserved] = 0
	binary.LittleEndian.PutUint16(b[PacketOffsetPayloadLen:], h.PayloadLen)
	copy(b[PacketOffsetNonce:PacketHeaderLen], h.Nonce[:])
}

// AppendPacketHeader appends the 32-byte encoding of h to dst.
func AppendPacketHeader(dst []byte, h *PacketHeader) []byte {
	n := len(dst)
	dst = append(dst, make([]byte, PacketHeaderLen)...)
	putPacketHeader(dst[n:n+PacketHeaderLen], h)
	return dst
}

// ParsePacketHeader decodes the first 32 bytes of b into h. Bytes after the
// header are not examined. Checks, in order: length (BufferTooSmall), reserved
// byte (ReservedBitsSet). Unknown flag bits are accepted and returned.
func ParsePacketHeader(b []byte, h *PacketHeader) error {
	if len(b) < PacketHeaderLen {
		return &PacketError{Kind: PacketErrBufferTooSmall, Expected: PacketHeaderLen, Actual: len(b)}
	}
	b = b[:PacketHeaderLen]
	if r := b[PacketOffsetReserved]; r != 0 {
		return &PacketError{Kind: PacketErrReservedBitsSet, Value: r}
	}
	h.ConnID = binary.LittleEndian.Uint64(b[PacketOffsetConnID:])
	h.PacketNumber = binary.LittleEndian.Uint64(b[PacketOffsetPacketNumber:])
	h.Flags = b[PacketOffsetFlags]
	h.PayloadLen = binary.LittleEndian.Uint16(b[PacketOffsetPayloadLen:])
	copy(h.Nonce[:], b[PacketOffsetNonce:PacketHeaderLen])
	return nil
}

// PeekPacketConnID returns the conn ID of the packet at the start of b and
// whether its HANDSHAKE flag is set, without validating anything else: the
// demultiplexing step before a packet is handed to its connection. It fails
// only when b is shorter than a header. (HANDSHAKE is never masked by header
// protection, so it is readable on protected packets too.)
func PeekPacketConnID(b []byte) (connID uint64, handshake bool, err error) {
	if len(b) < PacketHeaderLen {
		return 0, false, &PacketError{Kind: PacketErrBufferTooSmall, Expected: PacketHeaderLen, Actual: len(b)}
	}
	return binary.LittleEndian.Uint64(b), b[PacketOffsetFlags]&PacketFlagHandshake != 0, nil
}
