package transport

import (
	"errors"
	"sync"

	"github.com/mxp-dataplane/mxp/scheduler"
	"github.com/mxp-dataplane/mxp/wire"
)

// Stream is one reliable, ordered byte stream of a connection. Its methods
// are called from the goroutine that drives the connection (the shard).
type Stream struct {
	id    uint64
	conn  *Conn
	class scheduler.Class

	// Sending: buf holds the bytes [sendBase, writeEnd) not yet
	// acknowledged, inside backing, which is reused once they are.
	buf        []byte
	backing    []byte
	box        *[]byte  // the bigSendBufs box backing came in, if any
	blocked    bool     // a write was refused (ErrWouldBlock): EventStreamWritable due
	sendBase   uint64   // lowest unacknowledged offset
	sendNext   uint64   // next offset never sent
	retrans    rangeSet // lost ranges to send again
	acked      rangeSet // acknowledged ranges above sendBase
	peerMax    uint64   // the peer's limit on our offsets (its StreamMaxData)
	finWritten bool     // the application closed its side
	finSent    bool     // a StreamFin is in flight or acknowledged
	finAcked   bool
	openSent   bool // our StreamOpen went out (for locally opened streams)
	resetCode  uint64
	resetSent  bool

	// Receiving: rbuf[rhead:] holds the bytes from readOff on.
	rbuf      []byte
	rhead     int
	readOff   uint64
	recvd     rangeSet // received offsets ≥ readOff
	recvHigh  uint64   // highest offset received (for connection flow control)
	localMax  uint64   // our advertised limit
	finalSize uint64
	haveFinal bool
	readDone  bool // the application read FIN
	reset     bool
	sendMax   bool // a StreamMaxData update is due
}

// Errors of the stream API.
var (
	ErrStreamClosed = errors.New("transport: stream closed for writing")
	ErrStreamReset  = errors.New("transport: stream reset by the peer")
	ErrWouldBlock   = errors.New("transport: send buffer full")
)

// ID returns the stream's ID (index<<2 | role<<1 | kind).
func (s *Stream) ID() uint64 { return s.id }

// Class returns the stream's priority class.
func (s *Stream) Class() scheduler.Class { return s.class }

// Unidirectional reports whether data flows only from the opener.
func (s *Stream) Unidirectional() bool {
	return wire.StreamID(s.id).Kind() == wire.StreamIDUnidirectional
}

// Buffered returns the bytes written and not yet acknowledged.
func (s *Stream) Buffered() int { return len(s.buf) }

// Write queues p for sending and returns how much it took: all of p, or
// what fits under the connection's per-stream send buffer limit (then
// ErrWouldBlock: write the rest after an EventStreamWritable).
func (s *Stream) Write(p []byte) (int, error) {
	if s.finWritten || s.resetSent {
		return 0, ErrStreamClosed
	}
	room := s.conn.cfg.StreamSendBuffer - len(s.buf)
	n := min(len(p), max(room, 0))
	s.reserve(n)
	s.buf = append(s.buf, p[:n]...)
	if n > 0 {
		s.conn.streamReady(s)
	}
	if n < len(p) {
		s.blocked = true
		return n, ErrWouldBlock
	}
	return n, nil
}

// reserve makes room for n more bytes in buf without reallocating on every
// append: the unacknowledged bytes move to the front of backing when they
// fit, else to a backing twice as large (or a big one a drained stream
// gave back).
func (s *Stream) reserve(n int) {
	if cap(s.buf)-len(s.buf) >= n {
		return
	}
	need := len(s.buf) + n
	if cap(s.backing) < need {
		old, oldBox := s.backing, s.box
		s.backing, s.box = nil, nil
		if p, _ := bigSendBufs.Get().(*[]byte); p != nil {
			if cap(*p) >= need {
				s.backing, s.box = (*p)[:0], p
				*p = nil
			} else {
				*p = nil // too small: the garbage collector's
			}
		}
		if s.backing == nil {
			s.backing = make([]byte, 0, max(2*need, 4096))
		}
		s.buf = append(s.backing, s.buf...)
		putBigSendBuf(old, oldBox)
		return
	}
	s.buf = append(s.backing[:0], s.buf...)
}

// keepSendBuf is the largest send buffer a drained stream keeps: a larger
// one goes back to bigSendBufs, so an idle stream holds little memory
// while a busy one does not allocate a new buffer after every drain.
const keepSendBuf = 64 << 10

// bigSendBufs holds *[]byte (empty, capacity over keepSendBuf) that
// drained streams gave back; a stream keeps the box of the one it took.
var bigSendBufs sync.Pool

func putBigSendBuf(b []byte, box *[]byte) {
	if cap(b) <= keepSendBuf {
		return
	}
	if box == nil {
		box = new([]byte)
	}
	*box = b[:0]
	bigSendBufs.Put(box)
}

// Close ends the sending side: the peer reads FIN after the data written.
func (s *Stream) Close() error {
	if s.finWritten {
		return nil
	}
	s.finWritten = true
	s.conn.streamReady(s)
	return nil
}

// Reset abandons the sending side with an application error code.
func (s *Stream) Reset(code uint64) {
	if s.resetSent || s.finAcked {
		return
	}
	s.resetCode, s.resetSent = code, true
	s.buf, s.retrans.r = nil, s.retrans.r[:0]
	s.conn.queueReset(s)
}

// Readable returns how many bytes Read can return now.
func (s *Stream) Readable() int { return int(s.recvd.prefixEnd(s.readOff) - s.readOff) }

// Read copies received bytes in order into p. fin is true once every byte
// up to the peer's FIN has been read; err is ErrStreamReset after a reset.
func (s *Stream) Read(p []byte) (n int, fin bool, err error) {
	if s.reset {
		return 0, false, ErrStreamReset
	}
	avail := s.Readable()
	n = copy(p, s.rbuf[s.rhead:s.rhead+avail])
	s.consume(n)
	fin = s.haveFinal && s.readOff == s.finalSize
	if fin {
		s.readDone = true
	}
	return n, fin, nil
}

// peek returns the contiguous received bytes without consuming them.
func (s *Stream) peek() []byte { return s.rbuf[s.rhead : s.rhead+s.Readable()] }

// consume marks n bytes as read, compacts the buffer and schedules a
// flow-control update once half the window is used.
func (s *Stream) consume(n int) {
	if n == 0 {
		return
	}
	s.rhead += n
	s.readOff += uint64(n)
	s.recvd.removeBelow(s.readOff)
	if s.rhead == len(s.rbuf) {
		s.rbuf, s.rhead = s.rbuf[:0], 0
		if cap(s.rbuf) > 64<<10 {
			s.rbuf = nil // an idle stream keeps no big buffer
		}
	} else if s.rhead > len(s.rbuf)/2 {
		m := copy(s.rbuf, s.rbuf[s.rhead:])
		s.rbuf, s.rhead = s.rbuf[:m], 0
	}
	s.conn.consumed(uint64(n))
	win := s.conn.cfg.StreamWindow
	if s.localMax-s.readOff < win/2 && !s.haveFinal {
		s.localMax = s.readOff + win
		s.sendMax = true
		s.conn.queueControl()
	}
}

// onData stores a received StreamData frame. It returns a connection error
// if the peer broke flow control or changed the final size.
func (s *Stream) onData(off uint64, data []byte) error {
	end := off + uint64(len(data))
	if end > s.localMax {
		return errFlowControl
	}
	if s.haveFinal && end > s.finalSize {
		return errFinalSize
	}
	if end > s.recvHigh {
		if err := s.conn.chargeRecv(end - s.recvHigh); err != nil {
			return err
		}
		s.recvHigh = end
	}
	if end <= s.readOff || s.reset {
		return nil // a duplicate of what was read already
	}
	if off < s.readOff {
		data = data[s.readOff-off:]
		off = s.readOff
	}
	need := s.rhead + int(end-s.readOff)
	if need > len(s.rbuf) {
		if need > cap(s.rbuf) {
			nb := make([]byte, need, max(need, 2*cap(s.rbuf), 4096))
			copy(nb, s.rbuf)
			s.rbuf = nb
		}
		s.rbuf = s.rbuf[:need]
	}
	copy(s.rbuf[s.rhead+int(off-s.readOff):], data)
	before := s.Readable()
	s.recvd.add(off, end)
	if s.Readable() > before || (s.haveFinal && s.readOff+uint64(s.Readable()) == s.finalSize) {
		return s.conn.readable(s)
	}
	return nil
}

func (s *Stream) onFin(final uint64) error {
	if (s.haveFinal && final != s.finalSize) || final < s.recvHigh || final > s.localMax {
		return errFinalSize
	}
	if !s.haveFinal {
		if final > s.recvHigh {
			if err := s.conn.chargeRecv(final - s.recvHigh); err != nil {
				return err
			}
			s.recvHigh = final
		}
		s.haveFinal, s.finalSize = true, final
		if s.readOff+uint64(s.Readable()) == final {
			return s.conn.readable(s)
		}
	}
	return nil
}

func (s *Stream) onReset(final uint64) error {
	if err := s.onFin(final); err != nil {
		return err
	}
	if !s.reset {
		s.reset = true
		s.rbuf, s.rhead = nil, 0
		s.conn.ep.emit(Event{Kind: EventStreamReadable, Conn: s.conn, Stream: s})
	}
	return nil
}

// wantsToSend reports whether the stream has frames to send.
func (s *Stream) wantsToSend() bool {
	if s.resetSent {
		return false
	}
	return !s.retrans.empty() || s.hasNewData() || (s.finWritten && !s.finSent && s.allDataSent())
}

func (s *Stream) writeEnd() uint64 { return s.sendBase + uint64(len(s.buf)) }

func (s *Stream) hasNewData() bool {
	return s.sendNext < s.writeEnd() && s.sendNext < s.peerMax && s.conn.sendCredit() > 0
}

func (s *Stream) allDataSent() bool { return s.sendNext == s.writeEnd() && s.retrans.empty() }

// nextChunk picks the next bytes to send, at most max: lost bytes first,
// then new ones within flow control. It returns the offset and the data
// (a view of the send buffer).
func (s *Stream) nextChunk(limit int) (uint64, []byte) {
	if iv, ok := s.retrans.first(); ok {
		n := min(iv.end-iv.start, uint64(limit))
		s.retrans.remove(iv.start, iv.start+n)
		i := iv.start - s.sendBase
		return iv.start, s.buf[i : i+n]
	}
	n := min(s.writeEnd()-s.sendNext, s.peerMax-s.sendNext, uint64(limit), s.conn.sendCredit())
	off := s.sendNext
	s.sendNext += n
	s.conn.spendCredit(n)
	i := off - s.sendBase
	return off, s.buf[i : i+n]
}

// onAcked records that [off, off+n) arrived.
func (s *Stream) onAcked(off, n uint64, fin bool) {
	if fin {
		s.finAcked = true
	}
	if n == 0 || off+n <= s.sendBase {
		s.maybeDone()
		return
	}
	s.acked.add(max(off, s.sendBase), off+n)
	s.retrans.remove(off, off+n)
	if nb := s.acked.prefixEnd(s.sendBase); nb > s.sendBase {
		s.buf = s.buf[nb-s.sendBase:]
		s.sendBase = nb
		s.acked.removeBelow(nb)
		if len(s.buf) == 0 {
			s.buf = s.backing[:0]
			if cap(s.backing) > keepSendBuf { // an idle stream keeps no big buffer
				putBigSendBuf(s.backing, s.box)
				s.buf, s.backing, s.box = nil, nil, nil
			}
		}
		s.conn.writable(s)
	}
	s.maybeDone()
}

// onLost queues the unacknowledged part of [off, off+n) for retransmission.
func (s *Stream) onLost(off, n uint64, fin bool) {
	if s.resetSent {
		return
	}
	if fin && !s.finAcked {
		s.finSent = false
	}
	lo := max(off, s.sendBase)
	if lo < off+n {
		s.retrans.add(lo, off+n)
		for _, iv := range s.acked.r {
			s.retrans.remove(iv.start, iv.end)
		}
	}
	if s.wantsToSend() {
		s.conn.streamReady(s)
	}
}

// maybeDone forgets the stream once both directions are finished.
func (s *Stream) maybeDone() {
	sendDone := s.finAcked || s.resetSent || (s.Unidirectional() && !s.conn.locallyOpened(s.id))
	recvDone := s.readDone || s.reset || (s.Unidirectional() && s.conn.locallyOpened(s.id))
	if sendDone && recvDone {
		s.conn.forget(s)
	}
}
