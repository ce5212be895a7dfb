//go:build linux

package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// quic-go, three ways over one server:
//   - quic-stream: a new bidirectional stream per call (write the request,
//     close the send side, read the response to EOF);
//   - quic-long: each caller keeps a long-lived stream and sends
//     length-prefixed messages on it; tokens are 16-byte writes on one stream;
//   - quic-dgram: RFC 9221 datagrams with an 8-byte id and a resend after
//     30 ms, as the udp floor does (payloads must fit in one packet).
//
// The first byte of each stream says which: 's' for one call, 'l' for a
// long-lived stream, 't' for a token stream.
type quicSystem struct {
	name string
	ln   *quic.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	live map[*quic.Conn]struct{}
}

func init() {
	for _, n := range []string{"quic-stream", "quic-long", "quic-dgram"} {
		register(n, func() System { return &quicSystem{name: n} })
	}
}

const quicALPN = "mxp-compare"

// quicDgramMax is a conservative payload bound for one datagram (loopback
// starts at a 1280-byte packet before path MTU discovery).
const quicDgramMax = 1100

func quicConfig() *quic.Config {
	return &quic.Config{
		EnableDatagrams:    true,
		MaxIncomingStreams: 1000,
		MaxIdleTimeout:     30 * time.Second,
	}
}

func (s *quicSystem) Name() string { return s.name }

func (s *quicSystem) MaxPayload() int {
	if s.name == "quic-dgram" {
		return quicDgramMax
	}
	return 1 << 30
}

func (s *quicSystem) Setup(ctx context.Context) error {
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS(quicALPN), quicConfig())
	if err != nil {
		return err
	}
	s.ln = ln
	s.live = map[*quic.Conn]struct{}{}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			s.mu.Lock()
			s.live[conn] = struct{}{}
			s.mu.Unlock()
			s.wg.Add(2)
			go func() { defer s.wg.Done(); s.serveStreams(conn) }()
			go func() { defer s.wg.Done(); serveDatagrams(conn) }()
		}
	}()
	return nil
}

func (s *quicSystem) serveStreams(conn *quic.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.live, conn)
		s.mu.Unlock()
	}()
	for {
		st, err := conn.AcceptStream(context.Background())
		if err != nil {
			return
		}
		go serveQUICStream(st)
	}
}

func serveQUICStream(st *quic.Stream) {
	defer st.Close()
	r := bufio.NewReaderSize(st, 32<<10)
	kind, err := r.ReadByte()
	if err != nil {
		st.CancelRead(1)
		return
	}
	switch kind {
	case 's':
		body, err := io.ReadAll(r)
		if err != nil {
			return
		}
		_, _ = st.Write(body)
	case 'l':
		var msg []byte
		for {
			msg, err = readFrame(r, msg)
			if err != nil {
				return
			}
			if err := writeFrame(st, msg); err != nil {
				return
			}
		}
	case 't':
		var hdr [8]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := binary.LittleEndian.Uint64(hdr[:])
		token := make([]byte, TokenSize)
		for range n {
			if _, err := st.Write(token); err != nil {
				return
			}
		}
	}
}

func serveDatagrams(conn *quic.Conn) {
	for {
		d, err := conn.ReceiveDatagram(context.Background())
		if err != nil {
			return
		}
		if err := conn.SendDatagram(d); err != nil {
			var tooLarge *quic.DatagramTooLargeError
			if errors.As(err, &tooLarge) {
				continue
			}
			return
		}
	}
}

// readFrame reads a 4-byte little-endian length and the message.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return buf, err
	}
	n := int(binary.LittleEndian.Uint32(hdr[:]))
	if n > 64<<20 {
		return buf, fmt.Errorf("frame of %d bytes", n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	_, err := io.ReadFull(r, buf)
	return buf, err
}

// writeFrame writes the length and the message in one Write.
func writeFrame(w io.Writer, msg []byte) error {
	out := make([]byte, 4+len(msg))
	binary.LittleEndian.PutUint32(out, uint32(len(msg)))
	copy(out[4:], msg)
	_, err := w.Write(out)
	return err
}

func (s *quicSystem) Teardown() error {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.live {
		_ = c.CloseWithError(0, "teardown")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(3 * time.Second):
		return errors.New("quic server goroutines did not stop in 3 s")
	}
}

type quicClient struct {
	kind byte // 's', 'l' or 'd'
	conn *quic.Conn
	idle chan *longStream
	*dgramMux
}

type longStream struct {
	st *quic.Stream
	r  *bufio.Reader
}

func (s *quicSystem) Dial(ctx context.Context) (Client, error) {
	conn, err := quic.DialAddr(ctx, s.ln.Addr().String(), clientTLS(quicALPN), quicConfig())
	if err != nil {
		return nil, err
	}
	c := &quicClient{conn: conn}
	switch s.name {
	case "quic-stream":
		c.kind = 's'
	case "quic-long":
		c.kind = 'l'
		c.idle = make(chan *longStream, 256)
		return quicStreamClient{c}, nil
	case "quic-dgram":
		c.kind = 'd'
		c.dgramMux = newDgramMux(conn.SendDatagram, func(buf []byte, deadline time.Time) (int, error) {
			rctx, cancel := context.WithDeadline(context.Background(), deadline)
			defer cancel()
			d, err := conn.ReceiveDatagram(rctx)
			if err != nil {
				if rctx.Err() != nil && conn.Context().Err() == nil {
					return 0, errRecvTimeout
				}
				return 0, err
			}
			return copy(buf, d), nil
		}, quicDgramMax+idLen)
	}
	return c, nil
}

func (c *quicClient) Call(ctx context.Context, req []byte) ([]byte, error) {
	switch c.kind {
	case 's':
		st, err := c.conn.OpenStreamSync(ctx)
		if err != nil {
			return nil, err
		}
		if d, ok := ctx.Deadline(); ok {
			_ = st.SetDeadline(d)
		}
		out := make([]byte, 1+len(req))
		out[0] = 's'
		copy(out[1:], req)
		if _, err := st.Write(out); err != nil {
			st.CancelRead(1)
			return nil, err
		}
		if err := st.Close(); err != nil {
			return nil, err
		}
		resp := make([]byte, 0, len(req))
		for {
			if len(resp) == cap(resp) {
				resp = append(resp, 0)[:len(resp)]
			}
			n, err := st.Read(resp[len(resp):cap(resp)])
			resp = resp[:len(resp)+n]
			if err == io.EOF {
				return resp, nil
			}
			if err != nil {
				st.CancelRead(1)
				return nil, err
			}
		}
	case 'l':
		var ls *longStream
		select {
		case ls = <-c.idle:
		default:
			st, err := c.conn.OpenStreamSync(ctx)
			if err != nil {
				return nil, err
			}
			if _, err := st.Write([]byte{'l'}); err != nil {
				return nil, err
			}
			ls = &longStream{st: st, r: bufio.NewReaderSize(st, 32<<10)}
		}
		d, _ := ctx.Deadline()
		_ = ls.st.SetDeadline(d)
		err := writeFrame(ls.st, req)
		var resp []byte
		if err == nil {
			resp, err = readFrame(ls.r, nil)
		}
		if err != nil {
			ls.st.CancelRead(1)
			ls.st.CancelWrite(1)
			return nil, err
		}
		select {
		case c.idle <- ls:
		default:
			ls.st.Close()
		}
		return resp, nil
	default:
		return c.dgramMux.Call(ctx, req)
	}
}

func (c *quicClient) Close() error {
	return c.conn.CloseWithError(0, "")
}

// quicStreamClient adds Stream, for quic-long only.
type quicStreamClient struct{ *quicClient }

func (c quicStreamClient) Stream(ctx context.Context, n int) (int, error) {
	st, err := c.conn.OpenStreamSync(ctx)
	if err != nil {
		return 0, err
	}
	defer st.CancelRead(0)
	if d, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(d)
	}
	req := append([]byte{'t'}, binary.LittleEndian.AppendUint64(nil, uint64(n))...)
	if _, err := st.Write(req); err != nil {
		return 0, err
	}
	_ = st.Close()
	r := bufio.NewReaderSize(st, 64<<10)
	token := make([]byte, TokenSize)
	got := 0
	for got < n {
		if _, err := io.ReadFull(r, token); err != nil {
			return got, err
		}
		got++
	}
	return got, nil
}
