package ring

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BufRing is a provided-buffer ring (IORING_REGISTER_PBUF_RING, Linux 5.19):
// the application puts buffers in it and the kernel takes one for each
// receive that selects a buffer of its group (SQEBufferSelect), naming it in
// the CQE (CQE.BufferID). A buffer comes back to the ring only when the
// application adds it again.
//
// The ring memory is an anonymous mapping (page-aligned, never moved). The
// buffers it points to are the caller's and must stay mapped while the ring
// is registered.
type BufRing struct {
	r         *Ring
	mem       []byte
	entries   []ringBuf
	tailWord  *uint32 // entry 0's bid and the ring tail, as one aligned word
	mask      uint16
	tail      uint16 // local: where the next Add goes
	published uint16 // the tail the kernel sees
	bgid      uint16
}

// ErrBufRingFull is returned by Add when every slot holds a buffer the
// kernel has not taken yet.
var ErrBufRingFull = errors.New("io_uring: buffer ring full")

// RegisterBufRing creates and registers a buffer ring of entries slots (a
// power of two up to 32768) for buffer group bgid.
func (r *Ring) RegisterBufRing(entries int, bgid uint16) (*BufRing, error) {
	if entries <= 0 || entries > 1<<15 || entries&(entries-1) != 0 {
		return nil, fmt.Errorf("io_uring: buffer ring of %d entries: want a power of two up to 32768", entries)
	}
	size := entries * int(unsafe.Sizeof(ringBuf{}))
	size = (size + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANONYMOUS|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("io_uring: buffer ring memory: %w", err)
	}
	b := &BufRing{r: r, mem: mem, mask: uint16(entries - 1), bgid: bgid}
	b.entries = unsafe.Slice((*ringBuf)(unsafe.Pointer(&mem[0])), entries)
	b.tailWord = (*uint32)(unsafe.Pointer(&mem[12])) // bufs[0].bid (12..13) + tail (14..15)
	reg := bufReg{RingAddr: uint64(uintptr(unsafe.Pointer(&mem[0]))), RingEntries: uint32(entries), Bgid: bgid}
	if err := r.register(registerPbufRing, unsafe.Pointer(&reg), 1); err != nil {
		unix.Munmap(mem)
		return nil, os.NewSyscallError("io_uring_register(PBUF_RING)", err)
	}
	return b, nil
}

// Entries is the ring's capacity.
func (b *BufRing) Entries() int { return len(b.entries) }

// Group is the ring's buffer group ID.
func (b *BufRing) Group() uint16 { return b.bgid }

// Add puts buf (with ID bid) in the next slot; the kernel sees it after
// Publish. The caller keeps count: adding more buffers than the kernel has
// taken overwrites slots it has not consumed yet, so a caller adds only
// buffers it was given back (or the initial set, up to Entries).
func (b *BufRing) Add(buf []byte, bid uint16) {
	e := &b.entries[b.tail&b.mask]
	e.Addr = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
	e.Len = uint32(len(buf))
	e.Bid = bid
	b.tail++
}

// Pending is the number of buffers added since the last Publish.
func (b *BufRing) Pending() int { return int(b.tail - b.published) }

// Publish makes every added buffer visible to the kernel: one release store
// of the tail. The tail is 16 bits sharing an aligned 32-bit word with entry
// 0's buffer ID; Go has no 16-bit atomic store, so the word is stored whole,
// with entry 0's bid as we last wrote it. The kernel only reads the ring
// entries, so rewriting that bid with its own value races with nothing.
func (b *BufRing) Publish() {
	if b.tail == b.published {
		return
	}
	b.published = b.tail
	w := [2]uint16{b.entries[0].Bid, b.tail} // native order: bid at 12, tail at 14
	atomic.StoreUint32(b.tailWord, *(*uint32)(unsafe.Pointer(&w)))
}

// Close unregisters the ring and unmaps it. The kernel stops using the
// buffers before it returns.
func (b *BufRing) Close() error {
	if b.mem == nil {
		return nil
	}
	var errs []error
	if b.r.fd >= 0 {
		reg := bufReg{Bgid: b.bgid}
		if err := b.r.register(unregisterPbufRing, unsafe.Pointer(&reg), 1); err != nil {
			errs = append(errs, os.NewSyscallError("io_uring_register(UNREGISTER_PBUF_RING)", err))
		}
	}
	errs = append(errs, unix.Munmap(b.mem))
	b.mem, b.entries = nil, nil
	return errors.Join(errs...)
}
