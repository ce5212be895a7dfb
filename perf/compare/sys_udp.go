//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// udp is the floor: a raw UDP echo with an 8-byte request id and a resend
// after 30 ms, and a token stream packed into datagrams with a cumulative-ack
// window. No encryption, no framing beyond that.
type udpSystem struct {
	echo, stream *net.UDPConn
	wg           sync.WaitGroup
}

func init() { register("udp", func() System { return &udpSystem{} }) }

func (s *udpSystem) Name() string { return "udp" }

// udpMax is the largest datagram the harness sends (16 KiB payload + id).
const udpMax = 64 << 10

func listenUDP() (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	bigBuffers(c)
	return c, nil
}

// bigBuffers asks for 4 MiB socket buffers, past rmem_max when root, so the
// 64-caller workloads do not overflow them.
func bigBuffers(c *net.UDPConn) {
	const size = 4 << 20
	_ = c.SetReadBuffer(size)
	_ = c.SetWriteBuffer(size)
	if rc, err := c.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, size)
			_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUFFORCE, size)
		})
	}
}

func (s *udpSystem) Setup(ctx context.Context) error {
	var err error
	if s.echo, err = listenUDP(); err != nil {
		return err
	}
	if s.stream, err = listenUDP(); err != nil {
		s.echo.Close()
		return err
	}
	// Two echo readers, one per core.
	for range 2 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, udpMax)
			for {
				n, addr, err := s.echo.ReadFromUDPAddrPort(buf)
				if err != nil {
					if errors.Is(err, net.ErrClosed) {
						return
					}
					continue
				}
				_, _ = s.echo.WriteToUDPAddrPort(buf[:n], addr)
			}
		}()
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); serveUDPStream(s.stream) }()
	return nil
}

func (s *udpSystem) Teardown() error {
	s.echo.Close()
	s.stream.Close()
	s.wg.Wait()
	return nil
}

type udpClient struct {
	*dgramMux
	conn   *net.UDPConn
	stream *net.UDPAddr
}

func (s *udpSystem) Dial(ctx context.Context) (Client, error) {
	c, err := net.DialUDP("udp", nil, s.echo.LocalAddr().(*net.UDPAddr))
	if err != nil {
		return nil, err
	}
	bigBuffers(c)
	cl := &udpClient{conn: c, stream: s.stream.LocalAddr().(*net.UDPAddr)}
	cl.dgramMux = newDgramMux(
		func(p []byte) error { _, err := c.Write(p); return err },
		func(buf []byte, deadline time.Time) (int, error) { return udpRecv(c, buf, deadline) },
		udpMax)
	return cl, nil
}

func udpRecv(c *net.UDPConn, buf []byte, deadline time.Time) (int, error) {
	if err := c.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	n, err := c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, errRecvTimeout
	}
	return n, err
}

func (c *udpClient) Close() error { return c.conn.Close() }

// Stream protocol: the client sends {1, n uint64}; the server sends
// datagrams {seq uint32, up to streamPack tokens}; the client acks with
// {2, next expected seq uint32} every 16 datagrams and on any gap or stall;
// the server keeps at most streamWindow datagrams unacknowledged and goes
// back to the last ack after a 20 ms stall.
const (
	streamPack   = 88 // 88*16 = 1408 bytes of tokens per datagram
	streamWindow = 128
)

func streamDatagrams(n int) uint32 { return uint32((n + streamPack - 1) / streamPack) }

type udpStreamState struct {
	acked  atomic.Uint32
	notify chan struct{}
}

func serveUDPStream(c *net.UDPConn) {
	streams := map[string]*udpStreamState{}
	buf := make([]byte, 64)
	for {
		n, addr, err := c.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		switch {
		case n == 9 && buf[0] == 1:
			if _, ok := streams[addr.String()]; ok {
				continue // a resent start
			}
			st := &udpStreamState{notify: make(chan struct{}, 1)}
			streams[addr.String()] = st
			tokens := int(binary.LittleEndian.Uint64(buf[1:]))
			go sendUDPStream(c, addr, st, tokens)
		case n == 5 && buf[0] == 2:
			st := streams[addr.String()]
			if st == nil {
				continue
			}
			a := binary.LittleEndian.Uint32(buf[1:])
			if a > st.acked.Load() {
				st.acked.Store(a)
			}
			select {
			case st.notify <- struct{}{}:
			default:
			}
		}
	}
}

func sendUDPStream(c *net.UDPConn, to *net.UDPAddr, st *udpStreamState, tokens int) {
	total := streamDatagrams(tokens)
	pkt := make([]byte, 4+streamPack*TokenSize)
	for i := 4; i < len(pkt); i++ {
		pkt[i] = byte(i)
	}
	var next uint32
	progress := time.Now()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for st.acked.Load() < total && time.Since(progress) < 2*time.Second {
		a := st.acked.Load()
		next = max(next, a)
		if next < total && next < a+streamWindow {
			k := streamPack
			if next == total-1 && tokens%streamPack != 0 {
				k = tokens % streamPack
			}
			binary.LittleEndian.PutUint32(pkt, next)
			if _, err := c.WriteToUDP(pkt[:4+k*TokenSize], to); err != nil && errors.Is(err, net.ErrClosed) {
				return
			}
			next++
			continue
		}
		timer.Reset(20 * time.Millisecond)
		select {
		case <-st.notify:
			if st.acked.Load() > a {
				progress = time.Now()
			}
		case <-timer.C:
			next = st.acked.Load() // go back N
		}
	}
}

func (c *udpClient) Stream(ctx context.Context, n int) (int, error) {
	conn, err := net.DialUDP("udp", nil, c.stream)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	bigBuffers(conn)
	start := make([]byte, 9)
	start[0] = 1
	binary.LittleEndian.PutUint64(start[1:], uint64(n))
	if _, err := conn.Write(start); err != nil {
		return 0, err
	}
	ack := make([]byte, 5)
	ack[0] = 2
	sendAck := func(next uint32) {
		binary.LittleEndian.PutUint32(ack[1:], next)
		_, _ = conn.Write(ack)
	}
	total := streamDatagrams(n)
	buf := make([]byte, 2048)
	var expect uint32
	got := 0
	for expect < total {
		if ctx.Err() != nil {
			return got, ctx.Err()
		}
		m, err := udpRecv(conn, buf, time.Now().Add(20*time.Millisecond))
		if err == errRecvTimeout {
			if expect == 0 {
				_, _ = conn.Write(start)
			}
			sendAck(expect)
			continue
		}
		if err != nil {
			return got, err
		}
		if m < 4 {
			continue
		}
		if binary.LittleEndian.Uint32(buf) != expect {
			sendAck(expect)
			continue
		}
		got += (m - 4) / TokenSize
		expect++
		if expect%16 == 0 || expect == total {
			sendAck(expect)
		}
	}
	return got, nil
}
