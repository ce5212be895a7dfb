package scheduler

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

func TestFillSize(t *testing.T) {
	for _, c := range []struct {
		room, want, overhead int
		partial              bool
		got                  int
	}{
		{1200, 100, 10, false, 100},   // fits
		{1200, 5000, 10, false, 1190}, // fills the packet exactly
		{30, 5000, 10, true, 0},       // a 20-byte sliver is not worth it
		{30, 5000, 10, false, 20},     // but an empty packet takes it
		{30, 15, 10, true, 15},        // a whole small frame fits
		{10, 5, 10, false, 0},         // no room for the header
		{1200, 0, 10, false, 0},       // nothing wanted
		{-5, 10, 0, false, 0},
	} {
		if got := FillSize(c.room, c.want, c.overhead, c.partial); got != c.got {
			t.Errorf("FillSize(%d, %d, %d, %v) = %d, want %d", c.room, c.want, c.overhead, c.partial, got, c.got)
		}
	}
}

// TestBatchProperty: whatever the frames, every segment of a batch except the
// last is exactly the segment size (frames plus padding), and no segment
// overflows.
func TestBatchProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		seg := rapid.IntRange(64, 9000).Draw(t, "segment")
		maxSeg := rapid.IntRange(1, 64).Draw(t, "maxSegments")
		overhead := rapid.IntRange(1, 24).Draw(t, "overhead")
		b := NewBatch(seg, maxSeg)
		b.MinSplit = rapid.IntRange(0, 200).Draw(t, "minSplit")
		pending := rapid.SliceOfN(rapid.IntRange(1, 20000), 1, 50).Draw(t, "pending")
		var segs []int // bytes per closed segment, padding included
		cur := 0
		for len(pending) > 0 {
			n := b.Take(pending[0], overhead)
			if n == 0 {
				pad, more := b.NextSegment()
				if cur+pad != seg && more {
					t.Fatalf("segment %d bytes + pad %d != %d", cur, pad, seg)
				}
				if cur == 0 && !more {
					t.Fatalf("nothing fits in an empty segment of %d with overhead %d", seg, overhead)
				}
				if !more {
					break
				}
				segs = append(segs, cur+pad)
				cur = 0
				continue
			}
			if n > pending[0] {
				t.Fatalf("took %d of %d", n, pending[0])
			}
			b.Add(overhead + n)
			cur += overhead + n
			if cur > seg {
				t.Fatalf("segment overflow %d > %d", cur, seg)
			}
			if pending[0] -= n; pending[0] == 0 {
				pending = pending[1:]
			}
		}
		count, last := b.Finish()
		if cur > 0 {
			segs = append(segs, cur)
		}
		if count != len(segs) || count > maxSeg {
			t.Fatalf("Finish = %d segments, laid out %d (max %d)", count, len(segs), maxSeg)
		}
		for i, l := range segs {
			if i < len(segs)-1 && l != seg {
				t.Fatalf("segment %d of %d is %d bytes, want %d", i, len(segs), l, seg)
			}
		}
		if count > 0 && last != segs[len(segs)-1] {
			t.Fatalf("last = %d, laid out %d", last, segs[len(segs)-1])
		}
	})
}

func TestBatchAllocs(t *testing.T) {
	b := NewBatch(1200, 16)
	if a := testing.AllocsPerRun(100, func() {
		b.Reset()
		for b.Take(700, 8) > 0 {
			b.Add(708)
		}
		b.NextSegment()
		b.Finish()
	}); a != 0 {
		t.Fatalf("%v allocs", a)
	}
}

// Example_batch fills one GSO batch of 1200-byte segments from three
// streams, the scheduler choosing the order. Frames carry 8 bytes of header
// here.
func Example_batch() {
	s := New(DefaultWeights, DefaultQuantum)
	pending := map[uint64]int{4: 3000, 8: 100, 12: 2000} // stream id → bytes queued
	s.Register(4, Bulk)
	s.Register(8, Control)
	s.Register(12, Interactive)
	for id := range pending {
		s.Ready(id)
	}
	const overhead = 8
	b := NewBatch(1200, 8)
	for {
		id, ok := s.Next()
		if !ok {
			break
		}
		n := b.Take(pending[id], overhead)
		if n == 0 {
			pad, more := b.NextSegment()
			fmt.Printf("-- segment closed, %d bytes of padding\n", pad)
			if !more {
				break
			}
			continue
		}
		b.Add(overhead + n)
		pending[id] -= n
		fmt.Printf("stream %d: %d bytes\n", id, n)
		s.Sent(id, overhead+n, pending[id] > 0)
	}
	segs, last := b.Finish()
	fmt.Printf("%d segments of 1200 bytes, the last %d\n", segs, last)
	// Output:
	// stream 8: 100 bytes
	// stream 12: 1084 bytes
	// -- segment closed, 0 bytes of padding
	// stream 12: 916 bytes
	// stream 4: 268 bytes
	// -- segment closed, 0 bytes of padding
	// stream 4: 1192 bytes
	// -- segment closed, 0 bytes of padding
	// stream 4: 1192 bytes
	// -- segment closed, 0 bytes of padding
	// stream 4: 348 bytes
	// 5 segments of 1200 bytes, the last 356
}
