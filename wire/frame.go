package wire

import "strconv"

// FrameErrorKind classifies a FrameError returned by the transport frame body
// codecs (ACK, StreamMaxData, ConnectionMaxData).
type FrameErrorKind uint8

const (
	// FrameErrBufferTooSmall: fewer bytes than the fixed part needs.
	FrameErrBufferTooSmall FrameErrorKind = iota + 1
	// FrameErrEmptyHistory: an ACK frame with zero ranges.
	FrameErrEmptyHistory
	// FrameErrRangeCountMismatch: the range count promises more ranges than
	// the buffer holds.
	FrameErrRangeCountMismatch
	// FrameErrInvalidRange: a range with start > end, ranges that overlap,
	// or a first range whose end is not the frame's largest.
	FrameErrInvalidRange
	// FrameErrTooManyRanges: more than 65535 ranges to encode.
	FrameErrTooManyRanges
)

func (k FrameErrorKind) String() string {
	switch k {
	case FrameErrBufferTooSmall:
		return "BufferTooSmall"
	case FrameErrEmptyHistory:
		return "EmptyHistory"
	case FrameErrRangeCountMismatch:
		return "RangeCountMismatch"
	case FrameErrInvalidRange:
		return "InvalidRange"
	case FrameErrTooManyRanges:
		return "TooManyRanges"
	}
	return "FrameErrorKind(" + strconv.Itoa(int(k)) + ")"
}

// FrameError is the typed error of the frame body codecs.
type FrameError struct {
	Kind     FrameErrorKind
	Expected int    // BufferTooSmall
	Actual   int    // BufferTooSmall
	Start    uint64 // InvalidRange
	End      uint64 // InvalidRange
}

func (e *FrameError) Error() string {
	switch e.Kind {
	case FrameErrBufferTooSmall:
		return "wire: frame: buffer too small: expected " + strconv.Itoa(e.Expected) + ", actual " + strconv.Itoa(e.Actual)
	case FrameErrInvalidRange:
		return "wire: frame: invalid range [" + strconv.FormatUint(e.Start, 10) + ", " + strconv.FormatUint(e.End, 10) + "]"
	}
	return "wire: frame: " + e.Kind.String()
}

// Is reports whether target is a *FrameError of the same kind.
func (e *FrameError) Is(target error) bool {
	t, ok := target.(*FrameError)
	return ok && t.Kind == e.Kind
}
