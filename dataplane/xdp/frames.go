package xdp

// Frame owners. Every UMEM frame is owned by exactly one at any time; the
// shard checks each transition against the owner it expects, so a frame
// the kernel hands back twice, or a buffer released twice, is counted as a
// violation instead of corrupting the free list.
const (
	ownFree     uint8 = iota // on the free list
	ownKernelRx              // in the fill ring, or the kernel's for RX, until it shows up in the RX ring
	ownHandler               // received: the handler's between Recv and Release
	ownTxBuf                 // handed out by TxBuffers, until Send
	ownKernelTx              // in the TX ring, or the kernel's, until it shows up in the completion ring
	numOwners
)

// FrameAccount is a snapshot of who owns a shard's UMEM frames.
type FrameAccount struct {
	Total      int // frames in the UMEM
	Free       int // on the free list
	KernelRx   int // in the fill ring or held by the kernel for receiving
	Handler    int // received, not yet released
	TxBuffers  int // handed out by TxBuffers, not yet sent
	KernelTx   int // in the TX ring, or sent and not yet reaped from the completion ring
	Violations int // transitions from an unexpected owner (double release, bogus address): must stay 0
}

// Balanced reports whether every frame is owned exactly once.
func (a FrameAccount) Balanced() bool {
	return a.Free+a.KernelRx+a.Handler+a.TxBuffers+a.KernelTx == a.Total && a.Violations == 0
}

// frames tracks the owner of each UMEM frame, with the free list as a stack
// of frame indexes.
type frames struct {
	size       uint64 // bytes per frame (a power of two)
	shift      uint
	owner      []uint8
	count      [numOwners]int
	free       []uint32
	violations int
}

func newFrames(n int, size uint64) *frames {
	f := &frames{size: size, owner: make([]uint8, n), free: make([]uint32, 0, n)}
	for size > 1 {
		size >>= 1
		f.shift++
	}
	for i := n - 1; i >= 0; i-- {
		f.free = append(f.free, uint32(i))
	}
	f.count[ownFree] = n
	return f
}

// index returns the frame an address in the UMEM falls in, or -1.
func (f *frames) index(addr uint64) int {
	i := addr >> f.shift
	if i >= uint64(len(f.owner)) {
		return -1
	}
	return int(i)
}

func (f *frames) base(i int) uint64 { return uint64(i) << f.shift }

// move gives frame i to owner to if it belongs to from; otherwise it counts
// a violation and leaves the frame alone.
func (f *frames) move(i int, from, to uint8) bool {
	if i < 0 || f.owner[i] != from {
		f.violations++
		return false
	}
	f.owner[i] = to
	f.count[from]--
	f.count[to]++
	return true
}

// take pops a free frame for owner to, or returns -1 when none is free.
func (f *frames) take(to uint8) int {
	n := len(f.free)
	if n == 0 {
		return -1
	}
	i := int(f.free[n-1])
	f.free = f.free[:n-1]
	f.move(i, ownFree, to)
	return i
}

// put returns frame i from owner from to the free list.
func (f *frames) put(i int, from uint8) bool {
	if !f.move(i, from, ownFree) {
		return false
	}
	f.free = append(f.free, uint32(i))
	return true
}

func (f *frames) account() FrameAccount {
	return FrameAccount{
		Total: len(f.owner), Free: f.count[ownFree], KernelRx: f.count[ownKernelRx],
		Handler: f.count[ownHandler], TxBuffers: f.count[ownTxBuf], KernelTx: f.count[ownKernelTx],
		Violations: f.violations,
	}
}

// check recounts the owners from scratch and compares with the counters and
// the free list (for tests).
func (f *frames) check() bool {
	var c [numOwners]int
	for _, o := range f.owner {
		c[o]++
	}
	if c != f.count || len(f.free) != c[ownFree] {
		return false
	}
	for _, i := range f.free {
		if f.owner[i] != ownFree {
			return false
		}
	}
	return true
}
