package ring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The Prep functions fill a zeroed SQE (from GetSQE) for one operation. A
// pointer they store in the SQE is an integer to Go: the caller keeps what it
// points to alive and in place (heap or mmap memory that it holds) until the
// request completes.

// fileFlags returns fd for the SQE and the fixed-file flag if fixed.
func setFile(sqe *SQE, fd int, fixed bool) {
	sqe.Fd = int32(fd)
	if fixed {
		sqe.Flags |= SQEFixedFile
	}
}

// PrepNop prepares a no-op that completes with res 0.
func PrepNop(sqe *SQE, userData uint64) {
	sqe.Opcode = OpNop
	sqe.UserData = userData
}

// PrepRecvmsgMultishot prepares a multishot IORING_OP_RECVMSG (Linux 6.0) on
// fd (a fixed-file index when fixed): every datagram becomes one CQE with
// CQEFMore set while the request stays armed, in a buffer of group bgid
// that starts with a RecvmsgOut header, then msg.Namelen bytes of name
// area, msg.Controllen bytes of control area, then the payload. msg needs
// no iovec; its Name and Control pointers are not written.
func PrepRecvmsgMultishot(sqe *SQE, fd int, fixed bool, msg *unix.Msghdr, bgid uint16, userData uint64) {
	sqe.Opcode = OpRecvmsg
	setFile(sqe, fd, fixed)
	sqe.Flags |= SQEBufferSelect
	sqe.Ioprio = RecvMultishot
	sqe.Addr = uint64(uintptr(unsafe.Pointer(msg)))
	sqe.Len = 1
	sqe.BufIndex = bgid
	sqe.UserData = userData
}

// PrepSendmsg prepares IORING_OP_SENDMSG of msg on fd.
func PrepSendmsg(sqe *SQE, fd int, fixed bool, msg *unix.Msghdr, msgFlags uint32, userData uint64) {
	sqe.Opcode = OpSendmsg
	setFile(sqe, fd, fixed)
	sqe.Addr = uint64(uintptr(unsafe.Pointer(msg)))
	sqe.Len = 1
	sqe.OpFlags = msgFlags
	sqe.UserData = userData
}

// PrepRead prepares IORING_OP_READ of len(buf) bytes at offset off (-1: the
// file position) into buf.
func PrepRead(sqe *SQE, fd int, fixed bool, buf []byte, off int64, userData uint64) {
	sqe.Opcode = OpRead
	setFile(sqe, fd, fixed)
	sqe.Addr = uint64(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
	sqe.Len = uint32(len(buf))
	sqe.Off = uint64(off)
	sqe.UserData = userData
}

// PrepCancel prepares IORING_OP_ASYNC_CANCEL of the request with userData
// target; the canceled request completes with -ECANCELED.
func PrepCancel(sqe *SQE, target, userData uint64) {
	sqe.Opcode = OpAsyncCancel
	sqe.Fd = -1
	sqe.Addr = target
	sqe.UserData = userData
}

// Flags of IORING_OP_ASYNC_CANCEL (in SQE.OpFlags).
const (
	CancelAll = 1 << 0 // every request that matches, not just the first (5.19)
	CancelFD  = 1 << 1 // match by file descriptor instead of user data
	CancelAny = 1 << 2 // match every request
)

// PrepCancelAll prepares an IORING_OP_ASYNC_CANCEL of every request in
// flight on the ring (Linux 5.19); its own res is the number canceled.
func PrepCancelAll(sqe *SQE, userData uint64) {
	sqe.Opcode = OpAsyncCancel
	sqe.Fd = -1
	sqe.OpFlags = CancelAny | CancelAll
	sqe.UserData = userData
}
