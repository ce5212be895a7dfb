//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// dgramMux turns an unreliable datagram socket into a concurrent-safe Call:
// each request carries an 8-byte id that the server echoes; a lost request or
// response is resent after rto. There is no reader goroutine: the caller that
// holds the reader token reads and hands other callers their responses, so a
// lone sequential caller does one send and one receive system call per call,
// as a hand-written ping-pong would.
type dgramMux struct {
	send func(pkt []byte) error
	// recv reads one datagram into buf, waiting at most until deadline; it
	// returns errRecvTimeout when the deadline passes.
	recv func(buf []byte, deadline time.Time) (int, error)
	rto  time.Duration

	tok     chan struct{} // reader token, capacity 1
	mu      sync.Mutex
	pending map[uint64]chan []byte
	next    atomic.Uint64
	buf     []byte // owned by the token holder
}

var errRecvTimeout = errors.New("receive timeout")

const idLen = 8

func newDgramMux(send func([]byte) error, recv func([]byte, time.Time) (int, error), maxPkt int) *dgramMux {
	m := &dgramMux{send: send, recv: recv, rto: 30 * time.Millisecond,
		tok: make(chan struct{}, 1), pending: map[uint64]chan []byte{}, buf: make([]byte, maxPkt)}
	m.tok <- struct{}{}
	return m
}

func (m *dgramMux) Call(ctx context.Context, req []byte) ([]byte, error) {
	id := m.next.Add(1)
	pkt := make([]byte, idLen+len(req))
	binary.LittleEndian.PutUint64(pkt, id)
	copy(pkt[idLen:], req)
	ch := make(chan []byte, 1)
	m.mu.Lock()
	m.pending[id] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.pending, id)
		m.mu.Unlock()
	}()
	if err := m.send(pkt); err != nil {
		return nil, err
	}
	var timer *time.Timer
	for {
		resend := time.Now().Add(m.rto)
		if d, ok := ctx.Deadline(); ok && d.Before(resend) {
			resend = d
		}
		select {
		case r := <-ch:
			return r, nil
		case <-m.tok:
			r, ok, err := m.lead(id, ch, resend)
			m.tok <- struct{}{}
			if ok || err != nil {
				return r, err
			}
		default:
			if timer == nil {
				timer = time.NewTimer(m.rto)
				defer timer.Stop()
			} else {
				timer.Reset(time.Until(resend))
			}
			select {
			case r := <-ch:
				return r, nil
			case <-m.tok:
				r, ok, err := m.lead(id, ch, resend)
				m.tok <- struct{}{}
				if ok || err != nil {
					return r, err
				}
			case <-timer.C:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err := m.send(pkt); err != nil {
			return nil, err
		}
	}
}

// lead reads datagrams until id's response arrives or deadline passes
// (ok false: the caller resends). Others' responses go to their channels.
func (m *dgramMux) lead(id uint64, ch chan []byte, deadline time.Time) (resp []byte, ok bool, err error) {
	for {
		select {
		case r := <-ch:
			return r, true, nil
		default:
		}
		n, err := m.recv(m.buf, deadline)
		if err == errRecvTimeout {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		if n < idLen {
			continue
		}
		got := binary.LittleEndian.Uint64(m.buf)
		resp := make([]byte, n-idLen)
		copy(resp, m.buf[idLen:n])
		if got == id {
			return resp, true, nil
		}
		m.mu.Lock()
		other := m.pending[got]
		m.mu.Unlock()
		if other != nil {
			select {
			case other <- resp:
			default: // a duplicate after a resend
			}
		}
	}
}
