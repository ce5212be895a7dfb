//go:build linux

package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
)

// grpc-tls: gRPC-Go over TLS 1.3, unary Call per request.
// grpc-tls-bidi: the same server, each caller keeps a long-lived
// bidirectional stream and sends one message and receives one per call;
// tokens arrive as one 16-byte message each on a server stream.
//
// Messages are plain []byte through a codec registered as "mxpraw", so there
// is no protobuf marshalling on either side; the service is described by hand.

type rawCodec struct{}

func (rawCodec) Name() string { return "mxpraw" }

func (rawCodec) Marshal(v any) ([]byte, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("mxpraw: cannot marshal %T", v)
	}
	return *p, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("mxpraw: cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}

func init() {
	encoding.RegisterCodec(rawCodec{})
	register("grpc-tls", func() System { return &grpcSystem{name: "grpc-tls"} })
	register("grpc-tls-bidi", func() System { return &grpcSystem{name: "grpc-tls-bidi", bidi: true} })
}

type echoService interface{}

type echoImpl struct{}

var echoDesc = grpc.ServiceDesc{
	ServiceName: "mxpcompare.Echo",
	HandlerType: (*echoService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Call",
		Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var req []byte
			if err := dec(&req); err != nil {
				return nil, err
			}
			return &req, nil
		},
	}},
	Streams: []grpc.StreamDesc{
		{
			StreamName:    "Bidi",
			ClientStreams: true,
			ServerStreams: true,
			Handler: func(_ any, st grpc.ServerStream) error {
				var msg []byte
				for {
					if err := st.RecvMsg(&msg); err != nil {
						if errors.Is(err, io.EOF) {
							return nil
						}
						return err
					}
					if err := st.SendMsg(&msg); err != nil {
						return err
					}
				}
			},
		},
		{
			StreamName:    "Tokens",
			ServerStreams: true,
			Handler: func(_ any, st grpc.ServerStream) error {
				var req []byte
				if err := st.RecvMsg(&req); err != nil {
					return err
				}
				if len(req) != 8 {
					return errors.New("want an 8-byte count")
				}
				n := binary.LittleEndian.Uint64(req)
				token := make([]byte, TokenSize)
				for range n {
					if err := st.SendMsg(&token); err != nil {
						return err
					}
				}
				return nil
			},
		},
	},
}

type grpcSystem struct {
	name string
	bidi bool
	srv  *grpc.Server
	addr string
	// sessions is the TLS session cache of DialResumed's connections.
	sessions tls.ClientSessionCache
}

func (s *grpcSystem) Name() string { return s.name }

func (s *grpcSystem) Setup(ctx context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	s.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS("h2"))))
	s.srv.RegisterService(&echoDesc, echoImpl{})
	s.addr = ln.Addr().String()
	go func() { _ = s.srv.Serve(ln) }()
	return nil
}

func (s *grpcSystem) Teardown() error {
	s.srv.Stop()
	return nil
}

type grpcClient struct {
	resumed *atomic.Bool // set by DialResumed's TLS handshake; nil for Dial
	cc      *grpc.ClientConn
	bidi    bool
	idle    chan *bidiStream
	ctx     context.Context
	close   context.CancelFunc
}

type bidiStream struct {
	st     grpc.ClientStream
	cancel context.CancelFunc
}

func (s *grpcSystem) Dial(ctx context.Context) (Client, error) {
	return s.dial(clientTLS("h2"), nil)
}

// DialResumed resumes the TLS session of the connection before (TLS 1.3
// session tickets: a PSK with a fresh ECDHE, no certificate signature or
// chain check), as the server issues tickets.
func (s *grpcSystem) DialResumed(ctx context.Context) (Client, error) {
	if s.sessions == nil {
		s.sessions = tls.NewLRUClientSessionCache(8)
	}
	cfg := clientTLS("h2")
	cfg.ClientSessionCache = s.sessions
	resumed := new(atomic.Bool)
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		resumed.Store(cs.DidResume)
		return nil
	}
	return s.dial(cfg, resumed)
}

func (s *grpcSystem) dial(cfg *tls.Config, resumed *atomic.Bool) (Client, error) {
	cc, err := grpc.NewClient("passthrough:///"+s.addr,
		grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.CallContentSubtype(rawCodec{}.Name())))
	if err != nil {
		return nil, err
	}
	c := &grpcClient{cc: cc, bidi: s.bidi, idle: make(chan *bidiStream, 256), resumed: resumed}
	c.ctx, c.close = context.WithCancel(context.Background())
	if s.bidi {
		return grpcStreamClient{c}, nil
	}
	return c, nil
}

func (c *grpcClient) Call(ctx context.Context, req []byte) ([]byte, error) {
	if !c.bidi {
		var resp []byte
		err := c.cc.Invoke(ctx, "/mxpcompare.Echo/Call", &req, &resp)
		return resp, err
	}
	var bs *bidiStream
	select {
	case bs = <-c.idle:
	default:
		sctx, cancel := context.WithCancel(c.ctx)
		st, err := c.cc.NewStream(sctx, &echoDesc.Streams[0], "/mxpcompare.Echo/Bidi")
		if err != nil {
			cancel()
			return nil, err
		}
		bs = &bidiStream{st: st, cancel: cancel}
	}
	// A call's deadline cancels the stream it borrowed.
	stop := context.AfterFunc(ctx, bs.cancel)
	var resp []byte
	err := bs.st.SendMsg(&req)
	if err == nil {
		err = bs.st.RecvMsg(&resp)
	}
	if !stop() || err != nil {
		bs.cancel()
		if err == nil {
			err = ctx.Err()
		}
		return nil, err
	}
	select {
	case c.idle <- bs:
	default:
		bs.cancel()
	}
	return resp, nil
}

func (c *grpcClient) Close() error {
	c.close()
	return c.cc.Close()
}

// grpcStreamClient adds Stream, for grpc-tls-bidi only.
type grpcStreamClient struct{ *grpcClient }

// Resumed reports whether the TLS handshake resumed a session.
func (c *grpcClient) Resumed() bool { return c.resumed != nil && c.resumed.Load() }

func (c grpcStreamClient) Stream(ctx context.Context, n int) (int, error) {
	st, err := c.cc.NewStream(ctx, &echoDesc.Streams[1], "/mxpcompare.Echo/Tokens")
	if err != nil {
		return 0, err
	}
	req := binary.LittleEndian.AppendUint64(nil, uint64(n))
	if err := st.SendMsg(&req); err != nil {
		return 0, err
	}
	if err := st.CloseSend(); err != nil {
		return 0, err
	}
	var tok []byte
	got := 0
	for got < n {
		if err := st.RecvMsg(&tok); err != nil {
			return got, err
		}
		got++
	}
	return got, nil
}
