package wire

import "encoding/binary"

// StreamMaxDataLen is the size of a StreamMaxData frame body.
const StreamMaxDataLen = 16

// ConnectionMaxDataLen is the size of a ConnectionMaxData frame body.
const ConnectionMaxDataLen = 8

// StreamMaxDataFrame is the body of a StreamMaxData frame:
// stream ID u64 | limit u64 (absolute byte offset the peer may send up to).
type StreamMaxDataFrame struct {
	StreamID uint64
	Limit    uint64
}

// ConnectionMaxDataFrame is the body of a ConnectionMaxData frame: limit u64.
type ConnectionMaxDataFrame struct {
	Limit uint64
}

// AppendStreamMaxDataFrame appends the 16-byte body of f to dst.
func AppendStreamMaxDataFrame(dst []byte, f StreamMaxDataFrame) []byte {
	dst = binary.LittleEndian.AppendUint64(dst, f.StreamID)
	return binary.LittleEndian.AppendUint64(dst, f.Limit)
}

// ParseStreamMaxDataFrame decodes a StreamMaxData body from the start of b
// and returns the bytes consumed.
func ParseStreamMaxDataFrame(b []byte) (StreamMaxDataFrame, int, error) {
	if len(b) < StreamMaxDataLen {
		return StreamMaxDataFrame{}, 0, &FrameError{Kind: FrameErrBufferTooSmall, Expected: StreamMaxDataLen, Actual: len(b)}
	}
	return StreamMaxDataFrame{
		StreamID: binary.LittleEndian.Uint64(b[0:]),
		Limit:    binary.LittleEndian.Uint64(b[8:]),
	}, StreamMaxDataLen, nil
}

// AppendConnectionMaxDataFrame appends the 8-byte body of f to dst.
func AppendConnectionMaxDataFrame(dst []byte, f ConnectionMaxDataFrame) []byte {
	return binary.LittleEndian.AppendUint64(dst, f.Limit)
}

// ParseConnectionMaxDataFrame decodes a ConnectionMaxData body from the start
// of b and returns the bytes consumed.
func ParseConnectionMaxDataFrame(b []byte) (ConnectionMaxDataFrame, int, error) {
	if len(b) < ConnectionMaxDataLen {
		return ConnectionMaxDataFrame{}, 0, &FrameError{Kind: FrameErrBufferTooSmall, Expected: ConnectionMaxDataLen, Actual: len(b)}
	}
	return ConnectionMaxDataFrame{Limit: binary.LittleEndian.Uint64(b)}, ConnectionMaxDataLen, nil
}
