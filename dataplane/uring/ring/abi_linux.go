package ring

// The io_uring ABI as include/uapi/linux/io_uring.h defines it: constants and
// the structures shared with the kernel, laid out field for field (checked by
// layout_test.go). Only what this package uses is defined.

// Setup flags (io_uring_params.flags).
const (
	SetupIOPoll       = 1 << 0
	SetupSQPoll       = 1 << 1
	SetupSQAff        = 1 << 2
	SetupCQSize       = 1 << 3
	SetupClamp        = 1 << 4
	SetupSubmitAll    = 1 << 7  // 5.18: keep submitting past a failed SQE
	SetupCoopTaskrun  = 1 << 8  // 5.19
	SetupTaskrunFlag  = 1 << 9  // 5.19
	SetupSingleIssuer = 1 << 12 // 6.0
	SetupDeferTaskrun = 1 << 13 // 6.1
)

// Features the kernel reports (io_uring_params.features).
const (
	FeatSingleMmap     = 1 << 0 // 5.4: SQ and CQ rings share one mapping
	FeatNoDrop         = 1 << 1 // 5.5: overflowed CQEs are kept, not dropped
	FeatSubmitStable   = 1 << 2 // 5.5: SQE data is read at submission only
	FeatRWCurPos       = 1 << 3
	FeatCurPersonality = 1 << 4
	FeatFastPoll       = 1 << 5 // 5.7: internal poll for network I/O
	FeatPoll32Bits     = 1 << 6
	FeatSQPollNonfixed = 1 << 7
	FeatExtArg         = 1 << 8 // 5.11: io_uring_enter takes io_uring_getevents_arg (timeouts)
	FeatNativeWorkers  = 1 << 9
	FeatRsrcTags       = 1 << 10
	FeatCQESkip        = 1 << 11
	FeatLinkedFile     = 1 << 12
)

// io_uring_enter flags.
const (
	EnterGetEvents = 1 << 0
	EnterSQWakeup  = 1 << 1
	EnterSQWait    = 1 << 2
	EnterExtArg    = 1 << 3
)

// SQ ring flags (the word at sq_off.flags).
const (
	SQNeedWakeup = 1 << 0 // the SQPOLL thread sleeps: wake it with EnterSQWakeup
	SQCQOverflow = 1 << 1 // CQEs wait in the kernel's overflow list
	SQTaskrun    = 1 << 2 // task work is pending (SetupTaskrunFlag)
)

// Opcodes (io_uring_sqe.opcode).
const (
	OpNop         = 0
	OpSendmsg     = 9
	OpRecvmsg     = 10
	OpTimeout     = 11
	OpAsyncCancel = 14
	OpRead        = 22
	OpWrite       = 23
	OpSend        = 26
	OpRecv        = 27
	OpLast        = 58 // a bound for probe buffers, not an opcode
)

// SQE flags (io_uring_sqe.flags).
const (
	SQEFixedFile      = 1 << 0
	SQEIODrain        = 1 << 1
	SQEIOLink         = 1 << 2
	SQEIOHardlink     = 1 << 3
	SQEAsync          = 1 << 4
	SQEBufferSelect   = 1 << 5
	SQECQESkipSuccess = 1 << 6
)

// Send/receive flags, in io_uring_sqe.ioprio for those opcodes.
const (
	RecvsendPollFirst = 1 << 0
	RecvMultishot     = 1 << 1 // 6.0
)

// CQE flags (io_uring_cqe.flags).
const (
	CQEFBuffer     = 1 << 0 // the upper 16 bits carry the buffer ID
	CQEFMore       = 1 << 1 // the request stays armed: more CQEs follow
	CQEFSockNempty = 1 << 2
	CQEFNotif      = 1 << 3
	CQEBufferShift = 16
)

// io_uring_register opcodes.
const (
	registerFiles       = 2
	unregisterFiles     = 3
	registerProbe       = 8
	registerPbufRing    = 22 // 5.19
	unregisterPbufRing  = 23
	opSupported         = 1 << 0 // io_uring_probe_op.flags
	probeOpsCapacity    = 256
	sizeofProbeHeader   = 16
	sizeofProbeOp       = 8
	sizeofBufReg        = 40
	offSQRing           = 0
	offCQRing           = 0x8000000
	offSQEs             = 0x10000000
	sizeofRecvmsgOutHdr = 16
)

// SQE is struct io_uring_sqe (64 bytes). Field names follow the first member
// of each kernel union; the Prep functions fill them for each opcode.
type SQE struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64 // off / addr2
	Addr        uint64 // addr / splice_off_in
	Len         uint32
	OpFlags     uint32 // rw_flags, msg_flags, timeout_flags, ...
	UserData    uint64
	BufIndex    uint16 // buf_index / buf_group
	Personality uint16
	FileIndex   uint32 // splice_fd_in / file_index / addr_len
	Addr3       uint64
	_           uint64
}

// CQE is struct io_uring_cqe (16 bytes; this package never sets up CQE32).
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// BufferID is the provided buffer the completion consumed (valid when
// Flags has CQEFBuffer).
func (c *CQE) BufferID() uint16 { return uint16(c.Flags >> CQEBufferShift) }

// More reports that the (multishot) request stays armed.
func (c *CQE) More() bool { return c.Flags&CQEFMore != 0 }

// sqRingOffsets is struct io_sqring_offsets.
type sqRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

// cqRingOffsets is struct io_cqring_offsets.
type cqRingOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, CQEs, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

// params is struct io_uring_params (120 bytes).
type params struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  sqRingOffsets
	CQOff                                                                  cqRingOffsets
}

// getEventsArg is struct io_uring_getevents_arg, for EnterExtArg.
type getEventsArg struct {
	Sigmask     uint64
	SigmaskSz   uint32
	MinWaitUsec uint32 // "pad" before 6.12
	TS          uint64 // a pointer to a struct __kernel_timespec
}

// bufReg is struct io_uring_buf_reg.
type bufReg struct {
	RingAddr    uint64
	RingEntries uint32
	Bgid        uint16
	Flags       uint16
	Resv        [3]uint64
}

// ringBuf is struct io_uring_buf, one entry of a provided-buffer ring. The
// ring's tail is the 16 bits at offset 14 of entry 0 (its resv field).
type ringBuf struct {
	Addr uint64
	Len  uint32
	Bid  uint16
	Resv uint16
}

// RecvmsgOut is struct io_uring_recvmsg_out: the header a multishot recvmsg
// writes at the start of each provided buffer, followed by the name area
// (msg_namelen bytes as given in the request's msghdr), the control area
// (msg_controllen bytes), then the payload.
type RecvmsgOut struct {
	Namelen    uint32 // the source address's real length (may exceed the area)
	Controllen uint32 // control bytes written
	Payloadlen uint32 // the datagram's length
	Flags      uint32 // MSG_TRUNC, MSG_CTRUNC, ...
}

// SizeofRecvmsgOut is the size of RecvmsgOut in the buffer.
const SizeofRecvmsgOut = sizeofRecvmsgOutHdr
