package transport

// rangeSet is a set of uint64 values kept as sorted, disjoint, non-adjacent
// half-open intervals [start, end). It backs received packet numbers (for
// ACKs), received stream bytes (reassembly) and acknowledged stream bytes.
type rangeSet struct {
	r []ival
}

type ival struct{ start, end uint64 }

// add inserts [start, end) and returns how many values were new.
func (s *rangeSet) add(start, end uint64) uint64 {
	if start >= end {
		return 0
	}
	// First interval that ends at or after start (may merge).
	i := s.search(start)
	if i == len(s.r) || s.r[i].start > end {
		s.r = append(s.r, ival{})
		copy(s.r[i+1:], s.r[i:])
		s.r[i] = ival{start, end}
		return end - start
	}
	// Merge [start,end) with s.r[i:j], every interval that touches it.
	j := i
	covered := uint64(0)
	for j < len(s.r) && s.r[j].start <= end {
		lo, hi := max(s.r[j].start, start), min(s.r[j].end, end)
		if hi > lo {
			covered += hi - lo
		}
		j++
	}
	ns, ne := min(start, s.r[i].start), max(end, s.r[j-1].end)
	s.r[i] = ival{ns, ne}
	s.r = append(s.r[:i+1], s.r[j:]...)
	return (end - start) - covered
}

// search returns the index of the first interval with end >= v.
func (s *rangeSet) search(v uint64) int {
	lo, hi := 0, len(s.r)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if s.r[m].end < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// contains reports whether v is in the set.
func (s *rangeSet) contains(v uint64) bool {
	i := s.search(v + 1)
	return i < len(s.r) && s.r[i].start <= v && v < s.r[i].end
}

// prefixEnd returns the end of the interval that starts at or before from
// and covers it, or from if from is not covered.
func (s *rangeSet) prefixEnd(from uint64) uint64 {
	i := s.search(from + 1)
	if i < len(s.r) && s.r[i].start <= from {
		return s.r[i].end
	}
	return from
}

// removeBelow drops every value < v.
func (s *rangeSet) removeBelow(v uint64) {
	i := 0
	for i < len(s.r) && s.r[i].end <= v {
		i++
	}
	s.r = append(s.r[:0], s.r[i:]...)
	if len(s.r) > 0 && s.r[0].start < v {
		s.r[0].start = v
	}
}

// remove deletes [start, end) from the set.
func (s *rangeSet) remove(start, end uint64) {
	if start >= end {
		return
	}
	for i := 0; i < len(s.r); i++ {
		iv := s.r[i]
		if iv.end <= start || iv.start >= end {
			continue
		}
		switch {
		case iv.start < start && iv.end > end: // split
			s.r = append(s.r, ival{})
			copy(s.r[i+2:], s.r[i+1:])
			s.r[i] = ival{iv.start, start}
			s.r[i+1] = ival{end, iv.end}
			return
		case iv.start < start:
			s.r[i].end = start
		case iv.end > end:
			s.r[i].start = end
		default:
			s.r = append(s.r[:i], s.r[i+1:]...)
			i--
		}
	}
}

// first returns the lowest interval.
func (s *rangeSet) first() (ival, bool) {
	if len(s.r) == 0 {
		return ival{}, false
	}
	return s.r[0], true
}

func (s *rangeSet) empty() bool { return len(s.r) == 0 }

// trimLow keeps at most n intervals, dropping the lowest ones.
func (s *rangeSet) trimLow(n int) {
	if len(s.r) > n {
		s.r = append(s.r[:0], s.r[len(s.r)-n:]...)
	}
}
