package wire

import (
	"encoding/binary"
	"slices"
)

// AckFrameFixedLen is the size of the fixed part of an ACK frame body:
// largest u64 | ack delay µs u64 | range count u16.
const AckFrameFixedLen = 18

// AckRangeLen is the encoded size of one ACK range (start u64 | end u64).
const AckRangeLen = 16

// AckMaxRanges is the largest range count the u16 count field can express.
const AckMaxRanges = 0xffff

// AckRange is an inclusive range [Start, End] of acknowledged packet numbers.
type AckRange struct {
	Start uint64
	End   uint64
}

// AckFrame is the body of an ACK frame (without any frame type code):
//
//	largest u64 | ack delay µs u64 | range count u16 | (start u64 | end u64) × count
//
// Ranges are inclusive and, in canonical form, sorted by End descending, so
// Ranges[0].End == Largest.
type AckFrame struct {
	Largest        uint64
	AckDelayMicros uint64
	Ranges         []AckRange
}

// AckFrameLen returns the encoded size of f.
func AckFrameLen(f *AckFrame) int { return AckFrameFixedLen + AckRangeLen*len(f.Ranges) }

func ackRangeDesc(a, b AckRange) int {
	switch {
	case a.End > b.End:
		return -1
	case a.End < b.End:
		return 1
	}
	return 0
}

// validateAckRanges checks rs, which must be sorted by End descending.
func validateAckRanges(largest uint64, rs []AckRange) error {
	for i, r := range rs {
		if r.Start > r.End {
			return &FrameError{Kind: FrameErrInvalidRange, Start: r.Start, End: r.End}
		}
		// Ranges must be disjoint: the next (lower) range ends below this start.
		if i > 0 && rs[i-1].Start <= r.End {
			return &FrameError{Kind: FrameErrInvalidRange, Start: r.Start, End: r.End}
		}
	}
	if rs[0].End != largest {
		return &FrameError{Kind: FrameErrInvalidRange, Start: rs[0].Start, End: rs[0].End}
	}
	return nil
}

// AppendAckFrame appends the encoding of f to dst. If f.Ranges is not
// already sorted by End descending it is sorted in place (no allocation).
// Errors: EmptyHistory (no ranges), TooManyRanges (> 65535), InvalidRange
// (start > end, overlapping ranges, or highest End != Largest).
func AppendAckFrame(dst []byte, f *AckFrame) ([]byte, error) {
	rs := f.Ranges
	if len(rs) == 0 {
		return dst, &FrameError{Kind: FrameErrEmptyHistory}
	}
	if len(rs) > AckMaxRanges {
		return dst, &FrameError{Kind: FrameErrTooManyRanges}
	}
	for _, r := range rs {
		if r.Start > r.End {
			return dst, &FrameError{Kind: FrameErrInvalidRange, Start: r.Start, End: r.End}
		}
	}
	if !slices.IsSortedFunc(rs, ackRangeDesc) {
		slices.SortFunc(rs, ackRangeDesc)
	}
	if err := validateAckRanges(f.Largest, rs); err != nil {
		return dst, err
	}
	dst = binary.LittleEndian.AppendUint64(dst, f.Largest)
	dst = binary.LittleEndian.AppendUint64(dst, f.AckDelayMicros)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(rs)))
	for _, r := range rs {
		dst = binary.LittleEndian.AppendUint64(dst, r.Start)
		dst = binary.LittleEndian.AppendUint64(dst, r.End)
	}
	return dst, nil
}

// ParseAckFrame decodes an ACK frame body from the start of b into f,
// reusing f.Ranges' storage, and returns the number of bytes consumed
// (trailing bytes are not an error). Ranges may arrive in any order; they are
// normalised to End-descending order. Checks, in order: fixed part length
// (BufferTooSmall), count == 0 (EmptyHistory), count × 16 bytes present
// (RangeCountMismatch), each start <= end, ranges disjoint, first End ==
// Largest (InvalidRange).
func ParseAckFrame(b []byte, f *AckFrame) (int, error) {
	if len(b) < AckFrameFixedLen {
		return 0, &FrameError{Kind: FrameErrBufferTooSmall, Expected: AckFrameFixedLen, Actual: len(b)}
	}
	largest := binary.LittleEndian.Uint64(b[0:])
	delay := binary.LittleEndian.Uint64(b[8:])
	count := int(binary.LittleEndian.Uint16(b[16:]))
	if count == 0 {
		return 0, &FrameError{Kind: FrameErrEmptyHistory}
	}
	n := AckFrameFixedLen + AckRangeLen*count
	if len(b) < n {
		return 0, &FrameError{Kind: FrameErrRangeCountMismatch}
	}
	rs := f.Ranges[:0]
	p := b[AckFrameFixedLen:n]
	for i := 0; i < count; i++ {
		r := AckRange{
			Start: binary.LittleEndian.Uint64(p[16*i:]),
			End:   binary.LittleEndian.Uint64(p[16*i+8:]),
		}
		if r.Start > r.End {
			return 0, &FrameError{Kind: FrameErrInvalidRange, Start: r.Start, End: r.End}
		}
		rs = append(rs, r)
	}
	if !slices.IsSortedFunc(rs, ackRangeDesc) {
		slices.SortFunc(rs, ackRangeDesc)
	}
	if err := validateAckRanges(largest, rs); err != nil {
		return 0, err
	}
	f.Largest = largest
	f.AckDelayMicros = delay
	f.Ranges = rs
	return n, nil
}
