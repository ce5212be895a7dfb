package uring

// This file is the backend's one use of unsafe: mapping a received
// datagram's slice back to the provided buffer it lies in.

import "unsafe"

// bidOf returns the ID of the receive buffer that b points into, or -1.
func (r *rxState) bidOf(b []byte) int {
	if r.slab == nil {
		return -1
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	base := uintptr(unsafe.Pointer(unsafe.SliceData(r.slab)))
	if p < base || p >= base+uintptr(len(r.slab)) {
		return -1
	}
	return int((p - base) / uintptr(r.size))
}
