package xdp

// This file is the backend's one use of unsafe: the AF_XDP socket options
// that take structs (XDP_UMEM_REG, XDP_MMAP_OFFSETS), and the four rings and
// the UMEM, which are memory shared with the kernel through mmap (outside
// the Go heap; unmapped only by Close, after the socket is closed).
//
// Ring protocol (Documentation/networking/af_xdp.rst): each ring has a
// producer and a consumer index, free-running u32s, and a power-of-two
// array of entries. The producer writes entries, then publishes them by
// storing the producer index; the consumer reads the producer index, then
// the entries, then stores its consumer index to hand the slots back. The
// sync/atomic loads and stores give the acquire/release ordering this needs
// (Go's atomics are sequentially consistent). We produce to the fill and TX
// rings and consume from the RX and completion rings.

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring is one mmapped AF_XDP ring. Entries are u64 addresses (fill,
// completion) or xdp_desc (RX, TX).
type ring struct {
	mem      []byte
	producer *uint32
	consumer *uint32
	flags    *uint32 // nil when the kernel has no need_wakeup flags
	entries  unsafe.Pointer
	mask     uint32
	size     uint32
	// cached copies of the indexes: ours is exact, the kernel's is refreshed
	// only when the cached value says the ring is full (producer) or empty
	// (consumer).
	cachedProd, cachedCons uint32
}

func mapRing(fd int, off unix.XDPRingOffset, hasFlags bool, pgoff int64, size uint32, entrySize uintptr) (*ring, error) {
	length := int(off.Desc + uint64(size)*uint64(entrySize))
	mem, err := unix.Mmap(fd, pgoff, length, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap ring", err)
	}
	base := unsafe.Pointer(&mem[0])
	r := &ring{
		mem:      mem,
		producer: (*uint32)(unsafe.Add(base, off.Producer)),
		consumer: (*uint32)(unsafe.Add(base, off.Consumer)),
		entries:  unsafe.Add(base, off.Desc),
		mask:     size - 1,
		size:     size,
	}
	if hasFlags {
		r.flags = (*uint32)(unsafe.Add(base, off.Flags))
	}
	r.cachedProd = atomic.LoadUint32(r.producer)
	r.cachedCons = atomic.LoadUint32(r.consumer)
	return r, nil
}

func (r *ring) unmap() error {
	if r == nil || r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	return err
}

// needWakeup reports the kernel's XDP_RING_NEED_WAKEUP flag on the ring.
func (r *ring) needWakeup() bool {
	return r.flags != nil && atomic.LoadUint32(r.flags)&unix.XDP_RING_NEED_WAKEUP != 0
}

// Producer side (fill, TX).

// free returns how many entries may be produced (at least want if possible:
// the kernel's consumer index is re-read only when the cache is short).
func (r *ring) free(want uint32) uint32 {
	n := r.size - (r.cachedProd - r.cachedCons)
	if n >= want {
		return n
	}
	r.cachedCons = atomic.LoadUint32(r.consumer)
	return r.size - (r.cachedProd - r.cachedCons)
}

func (r *ring) setAddr(i uint32, addr uint64) {
	*(*uint64)(unsafe.Add(r.entries, uintptr(i&r.mask)*8)) = addr
}

func (r *ring) setDesc(i uint32, addr uint64, length uint32) {
	d := (*unix.XDPDesc)(unsafe.Add(r.entries, uintptr(i&r.mask)*unsafe.Sizeof(unix.XDPDesc{})))
	d.Addr, d.Len, d.Options = addr, length, 0
}

// submit publishes n entries written at cachedProd..cachedProd+n-1.
func (r *ring) submit(n uint32) {
	r.cachedProd += n
	atomic.StoreUint32(r.producer, r.cachedProd)
}

// pending is how many produced entries the kernel has not consumed yet.
func (r *ring) pending() uint32 {
	r.cachedCons = atomic.LoadUint32(r.consumer)
	return r.cachedProd - r.cachedCons
}

// Consumer side (RX, completion).

// available returns how many entries may be consumed, re-reading the
// kernel's producer index when the cache is empty.
func (r *ring) available() uint32 {
	n := r.cachedProd - r.cachedCons
	if n > 0 {
		return n
	}
	r.cachedProd = atomic.LoadUint32(r.producer)
	return r.cachedProd - r.cachedCons
}

func (r *ring) addr(i uint32) uint64 {
	return *(*uint64)(unsafe.Add(r.entries, uintptr(i&r.mask)*8))
}

func (r *ring) desc(i uint32) unix.XDPDesc {
	return *(*unix.XDPDesc)(unsafe.Add(r.entries, uintptr(i&r.mask)*unsafe.Sizeof(unix.XDPDesc{})))
}

// release hands n consumed entries back to the kernel.
func (r *ring) release(n uint32) {
	r.cachedCons += n
	atomic.StoreUint32(r.consumer, r.cachedCons)
}

// Socket options with struct arguments.

func setUmemReg(fd int, reg *unix.XDPUmemReg) error {
	_, _, e := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_UMEM_REG,
		uintptr(unsafe.Pointer(reg)), unsafe.Sizeof(*reg), 0)
	if e != 0 {
		return e
	}
	return nil
}

// mmapOffsets reads XDP_MMAP_OFFSETS; hasFlags is false on kernels (before
// 5.4) whose layout has no flags word.
func mmapOffsets(fd int) (off unix.XDPMmapOffsets, hasFlags bool, err error) {
	n := uint32(unsafe.Sizeof(off))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return off, false, e
	}
	if n == uint32(unsafe.Sizeof(off)) {
		return off, true, nil
	}
	// The v1 layout: {producer, consumer, desc} per ring, no flags.
	var v1 [4][3]uint64
	if uintptr(n) != unsafe.Sizeof(v1) {
		return off, false, fmt.Errorf("XDP_MMAP_OFFSETS returned %d bytes", n)
	}
	_, _, e = unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&v1)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return off, false, e
	}
	rs := []*unix.XDPRingOffset{&off.Rx, &off.Tx, &off.Fr, &off.Cr}
	for i, r := range rs {
		r.Producer, r.Consumer, r.Desc = v1[i][0], v1[i][1], v1[i][2]
	}
	return off, false, nil
}

func xdpStatistics(fd int) (unix.XDPStatistics, error) {
	var s unix.XDPStatistics
	n := uint32(unsafe.Sizeof(s))
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_XDP, unix.XDP_STATISTICS,
		uintptr(unsafe.Pointer(&s)), uintptr(unsafe.Pointer(&n)), 0)
	if e != 0 {
		return s, e
	}
	return s, nil
}

// umemBase is the address of the UMEM's first byte, for Release to find
// the frame a packet's buffer is a view of.
func umemBase(umem []byte) uintptr { return uintptr(unsafe.Pointer(&umem[0])) }

// bufAddr is the address of b's first byte (of its array when len(b) is 0
// but cap(b) is not); 0 for a nil slice.
func bufAddr(b []byte) uintptr {
	if cap(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))
}
