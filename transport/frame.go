package transport

import (
	"encoding/binary"
	"strconv"
	"unicode/utf8"

	"github.com/mxp-dataplane/mxp/wire"
)

// FrameType is the first byte of every frame inside a protected packet's
// payload. The layouts are in docs/transport.md; all integers are
// little-endian.
type FrameType uint8

// Frame types.
const (
	FramePadding           FrameType = 0x00 // runs to the end of the payload
	FrameAck               FrameType = 0x01 // wire.AckFrame body
	FrameStreamOpen        FrameType = 0x02 // stream u64 | class u8
	FrameStreamData        FrameType = 0x03 // stream u64 | offset u64 | length u16 | data
	FrameStreamFin         FrameType = 0x04 // stream u64 | final size u64
	FrameStreamReset       FrameType = 0x05 // stream u64 | code u64 | final size u64
	FrameDatagram          FrameType = 0x06 // length u16 | data
	FrameCrypto            FrameType = 0x07 // length u16 | data (post-handshake messages, e.g. tickets)
	FrameControl           FrameType = 0x08 // kind u8 | body (ping, close, path challenge/response)
	FrameStreamMaxData     FrameType = 0x09 // wire.StreamMaxDataFrame body
	FrameConnectionMaxData FrameType = 0x0A // wire.ConnectionMaxDataFrame body
)

// Control frame kinds.
const (
	ControlPing          uint8 = 0x01 // no body; elicits an ACK
	ControlClose         uint8 = 0x02 // code u64 | u16 length | UTF-8 reason
	ControlPathChallenge uint8 = 0x03 // 8 bytes
	ControlPathResponse  uint8 = 0x04 // 8 bytes
	ControlResetToken    uint8 = 0x05 // 16 bytes: the token of a stateless reset for this connection
)

// Fixed sizes of frame headers.
const (
	streamDataHeaderLen = 1 + 8 + 8 + 2
	datagramHeaderLen   = 1 + 2
	streamFinLen        = 1 + 8 + 8
	streamMaxDataLen    = 1 + 16
	connMaxDataLen      = 1 + 8
)

// Frame is one decoded frame. Which fields are set depends on Type; Data
// aliases the packet.
type Frame struct {
	Type    FrameType
	Control uint8         // FrameControl: the kind
	Stream  uint64        // stream frames
	Offset  uint64        // StreamData: offset; StreamFin/Reset: final size
	Code    uint64        // StreamReset, Close: error code
	Limit   uint64        // StreamMaxData, ConnectionMaxData
	Class   uint8         // StreamOpen
	Data    []byte        // StreamData, Datagram, Crypto, Close reason, path challenge/response
	Ack     wire.AckFrame // FrameAck (Ranges reuse their capacity)
}

// FrameError is a malformed frame: the connection that receives it closes
// with a protocol violation.
type FrameError struct {
	Type   FrameType
	Offset int
	Reason string
}

func (e *FrameError) Error() string {
	return "transport: malformed frame 0x" + strconv.FormatUint(uint64(e.Type), 16) + " at offset " + strconv.Itoa(e.Offset) + ": " + e.Reason
}

// ParseFrame decodes the frame at b[off:] into f and returns the offset after it.
func ParseFrame(b []byte, off int, f *Frame) (int, error) {
	if off >= len(b) {
		return off, &FrameError{Offset: off, Reason: "no frame"}
	}
	t := FrameType(b[off])
	f.Type = t
	p := b[off+1:]
	bad := func(reason string) (int, error) { return off, &FrameError{Type: t, Offset: off, Reason: reason} }
	switch t {
	case FramePadding:
		for _, c := range p {
			if c != 0 {
				return bad("non-zero padding")
			}
		}
		return len(b), nil
	case FrameAck:
		n, err := wire.ParseAckFrame(p, &f.Ack)
		if err != nil {
			return bad(err.Error())
		}
		return off + 1 + n, nil
	case FrameStreamOpen:
		if len(p) < 9 {
			return bad("truncated")
		}
		f.Stream, f.Class = binary.LittleEndian.Uint64(p), p[8]
		return off + 10, nil
	case FrameStreamData:
		if len(p) < streamDataHeaderLen-1 {
			return bad("truncated")
		}
		f.Stream = binary.LittleEndian.Uint64(p)
		f.Offset = binary.LittleEndian.Uint64(p[8:])
		n := int(binary.LittleEndian.Uint16(p[16:]))
		if len(p)-18 < n {
			return bad("data past the end of the packet")
		}
		if f.Offset+uint64(n) < f.Offset || f.Offset+uint64(n) > maxStreamOffset {
			return bad("offset overflow")
		}
		f.Data = p[18 : 18+n : 18+n]
		return off + streamDataHeaderLen + n, nil
	case FrameStreamFin:
		if len(p) < 16 {
			return bad("truncated")
		}
		f.Stream, f.Offset = binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:])
		if f.Offset > maxStreamOffset {
			return bad("final size too large")
		}
		return off + streamFinLen, nil
	case FrameStreamReset:
		if len(p) < 24 {
			return bad("truncated")
		}
		f.Stream, f.Code, f.Offset = binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint64(p[8:]), binary.LittleEndian.Uint64(p[16:])
		if f.Offset > maxStreamOffset {
			return bad("final size too large")
		}
		return off + 25, nil
	case FrameDatagram, FrameCrypto:
		if len(p) < 2 {
			return bad("truncated")
		}
		n := int(binary.LittleEndian.Uint16(p))
		if len(p)-2 < n {
			return bad("data past the end of the packet")
		}
		f.Data = p[2 : 2+n : 2+n]
		return off + 3 + n, nil
	case FrameControl:
		if len(p) < 1 {
			return bad("truncated")
		}
		f.Control = p[0]
		switch f.Control {
		case ControlPing:
			return off + 2, nil
		case ControlClose:
			if len(p) < 11 {
				return bad("truncated close")
			}
			f.Code = binary.LittleEndian.Uint64(p[1:])
			n := int(binary.LittleEndian.Uint16(p[9:]))
			if len(p)-11 < n {
				return bad("close reason past the end of the packet")
			}
			f.Data = p[11 : 11+n : 11+n]
			if !utf8.Valid(f.Data) {
				return bad("close reason is not UTF-8")
			}
			return off + 12 + n, nil
		case ControlPathChallenge, ControlPathResponse:
			if len(p) < 9 {
				return bad("truncated path frame")
			}
			f.Data = p[1:9:9]
			return off + 10, nil
		case ControlResetToken:
			if len(p) < 17 {
				return bad("truncated reset token")
			}
			f.Data = p[1:17:17]
			return off + 18, nil
		}
		return bad("unknown control kind")
	case FrameStreamMaxData:
		v, n, err := wire.ParseStreamMaxDataFrame(p)
		if err != nil {
			return bad(err.Error())
		}
		f.Stream, f.Limit = v.StreamID, v.Limit
		return off + 1 + n, nil
	case FrameConnectionMaxData:
		v, n, err := wire.ParseConnectionMaxDataFrame(p)
		if err != nil {
			return bad(err.Error())
		}
		f.Limit = v.Limit
		return off + 1 + n, nil
	}
	return bad("unknown frame type")
}

// maxStreamOffset bounds stream offsets (2^62), so offset arithmetic never overflows.
const maxStreamOffset = 1 << 62

func appendStreamDataHeader(b []byte, stream, offset uint64, n int) []byte {
	b = append(b, byte(FrameStreamData))
	b = binary.LittleEndian.AppendUint64(b, stream)
	b = binary.LittleEndian.AppendUint64(b, offset)
	return binary.LittleEndian.AppendUint16(b, uint16(n))
}

func appendStreamFin(b []byte, stream, final uint64) []byte {
	b = append(b, byte(FrameStreamFin))
	b = binary.LittleEndian.AppendUint64(b, stream)
	return binary.LittleEndian.AppendUint64(b, final)
}

func appendStreamReset(b []byte, stream, code, final uint64) []byte {
	b = append(b, byte(FrameStreamReset))
	b = binary.LittleEndian.AppendUint64(b, stream)
	b = binary.LittleEndian.AppendUint64(b, code)
	return binary.LittleEndian.AppendUint64(b, final)
}

func appendStreamOpen(b []byte, stream uint64, class uint8) []byte {
	b = append(b, byte(FrameStreamOpen))
	b = binary.LittleEndian.AppendUint64(b, stream)
	return append(b, class)
}

func appendLenData(b []byte, t FrameType, data []byte) []byte {
	b = append(b, byte(t))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func appendPing(b []byte) []byte { return append(b, byte(FrameControl), ControlPing) }

func appendClose(b []byte, code uint64, reason string) []byte {
	if len(reason) > 512 {
		reason = reason[:512]
	}
	for !utf8.ValidString(reason) {
		reason = reason[:len(reason)-1]
	}
	b = append(b, byte(FrameControl), ControlClose)
	b = binary.LittleEndian.AppendUint64(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(reason)))
	return append(b, reason...)
}

func appendStreamMaxData(b []byte, stream, limit uint64) []byte {
	return wire.AppendStreamMaxDataFrame(append(b, byte(FrameStreamMaxData)), wire.StreamMaxDataFrame{StreamID: stream, Limit: limit})
}

func appendConnMaxData(b []byte, limit uint64) []byte {
	return wire.AppendConnectionMaxDataFrame(append(b, byte(FrameConnectionMaxData)), wire.ConnectionMaxDataFrame{Limit: limit})
}
