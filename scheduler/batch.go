package scheduler

// DefaultMinSplit is the default Batch.MinSplit: below this many payload bytes
// it is not worth splitting a queue's data across two segments (the frame
// header would dominate), so the segment is padded and closed instead.
const DefaultMinSplit = 64

// Batch lays out the packet payloads of one GSO batch so that every segment
// except the last has exactly the same size, as segmentation offload requires.
// It only does arithmetic: the packet builder asks it how many bytes to take
// from the queue Scheduler.Next chose, writes the frame, and reports what it
// wrote.
//
// A typical loop (see Example_batch):
//
//	b := scheduler.NewBatch(segment, maxSegments)
//	for {
//		id, ok := s.Next()
//		if !ok { break }
//		n := b.Take(pending(id), frameOverhead)
//		if n == 0 { // the current segment cannot hold a useful frame
//			pad, more := b.NextSegment()
//			appendPadding(pad)
//			if !more { break }
//			continue
//		}
//		b.Add(writeFrame(id, n) /* header + n */)
//		s.Sent(id, n, pending(id) > 0)
//	}
//	segments, last := b.Finish() // the last segment may be short, unpadded
//
// The zero Batch is not usable; use NewBatch.
type Batch struct {
	// MinSplit: when a queue's data does not fit in the current segment and
	// fewer than MinSplit payload bytes would fit, Take returns 0 so the
	// segment is padded and the data starts a fresh segment. A segment that is
	// still empty always takes what fits.
	MinSplit int

	segment int // payload bytes per segment
	max     int // segments per batch
	n       int // segments begun (the current one included)
	used    int // bytes used in the current segment
}

// NewBatch returns a batch of at most maxSegments segments of segment bytes
// each (the payload room of one packet at the path MTU). It panics if either
// is below 1.
func NewBatch(segment, maxSegments int) Batch {
	if segment < 1 || maxSegments < 1 {
		panic("scheduler: NewBatch needs segment ≥ 1 and maxSegments ≥ 1")
	}
	return Batch{MinSplit: DefaultMinSplit, segment: segment, max: maxSegments, n: 1}
}

// Segment returns the segment size.
func (b *Batch) Segment() int { return b.segment }

// Room returns the bytes left in the current segment.
func (b *Batch) Room() int { return b.segment - b.used }

// Full reports whether the current segment is the last one allowed and has no
// room left.
func (b *Batch) Full() bool { return b.n >= b.max && b.used >= b.segment }

// Take returns how many payload bytes to take from a queue that has want
// bytes pending, when its frame needs overhead bytes of header: all of want if
// it fits in the current segment, otherwise exactly what fills the segment to
// the byte (so the segment comes out full size), or 0 when the segment cannot
// hold a useful frame (see MinSplit) and the caller should call NextSegment.
func (b *Batch) Take(want, overhead int) int {
	return fill(b.Room(), want, overhead, b.MinSplit, b.used == 0)
}

// FillSize is Take for one packet: given room bytes left in the packet, want
// bytes pending in the queue and overhead bytes of frame header, it returns
// the payload bytes to take — all of want if it fits, else exactly what fills
// the packet, or 0 if not even DefaultMinSplit bytes would fit in a packet
// that already holds other frames (partial tells whether it does).
func FillSize(room, want, overhead int, partial bool) int {
	return fill(room, want, overhead, DefaultMinSplit, !partial)
}

func fill(room, want, overhead, minSplit int, empty bool) int {
	avail := room - overhead
	if avail <= 0 || want <= 0 {
		return 0
	}
	if want <= avail {
		return want
	}
	if avail < minSplit && !empty {
		return 0
	}
	return avail
}

// Add records n bytes (frame header and payload) written to the current
// segment. Writing past the segment is a caller bug; Add clamps.
func (b *Batch) Add(n int) {
	b.used = min(b.used+max(n, 0), b.segment)
}

// NextSegment closes the current segment because another one follows: pad is
// the number of padding bytes the caller must append so the segment is full
// size (0 if it already is). more is false when the batch has no segment left;
// then the caller sends the batch (the closed segment is its last, and pad may
// be ignored). If the current segment is empty — nothing fit even in a fresh
// segment — NextSegment returns (0, false), so a frame that can never fit ends
// the batch instead of looping.
func (b *Batch) NextSegment() (pad int, more bool) {
	if b.used == 0 {
		return 0, false
	}
	pad = b.segment - b.used
	if b.n >= b.max {
		return pad, false
	}
	b.n++
	b.used = 0
	return pad, true
}

// Finish returns the number of non-empty segments and the length of the last
// one (which may be short; GSO allows that and it needs no padding). The
// Batch can be reused afterwards with Reset.
func (b *Batch) Finish() (segments, last int) {
	if b.used == 0 {
		if b.n == 1 {
			return 0, 0
		}
		return b.n - 1, b.segment
	}
	return b.n, b.used
}

// Reset empties the batch, keeping its sizes.
func (b *Batch) Reset() {
	b.n, b.used = 1, 0
}
