//go:build linux

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// nats: an embedded nats-server on loopback (plain TCP, no TLS) and a
// responder connection with two queue subscribers on "echo"; a client is one
// nats.Conn doing request-reply, so every call crosses the server twice
// (client → server → responder → server → client), which is how NATS is
// deployed. Tokens: the responder publishes one 16-byte message per token to
// the client's inbox, at most natsWindow ahead of the client's cumulative
// acks, because core NATS has no flow control of its own.
type natsSystem struct {
	srv  *server.Server
	resp *nats.Conn
}

const (
	natsWindow = 64 << 10
	natsAckGap = 8 << 10
)

func init() { register("nats", func() System { return &natsSystem{} }) }

func (s *natsSystem) Name() string { return "nats" }

func (s *natsSystem) Setup(ctx context.Context) error {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		return err
	}
	go srv.Start()
	if !srv.ReadyForConnections(5 * time.Second) {
		srv.Shutdown()
		return errors.New("nats-server did not start")
	}
	s.srv = srv
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		srv.Shutdown()
		return err
	}
	s.resp = nc
	for range 2 {
		if _, err := nc.QueueSubscribe("echo", "svc", func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
			return err
		}
	}
	if _, err := nc.Subscribe("tokens", func(m *nats.Msg) {
		if len(m.Data) == 8 && m.Reply != "" {
			go s.sendTokens(m.Reply, int(binary.LittleEndian.Uint64(m.Data)))
		}
	}); err != nil {
		return err
	}
	return nc.Flush()
}

func (s *natsSystem) sendTokens(inbox string, n int) {
	acks, err := s.resp.SubscribeSync(inbox + ".ack")
	if err != nil {
		return
	}
	defer acks.Unsubscribe()
	token := make([]byte, TokenSize)
	acked := 0
	for sent := 0; sent < n; sent++ {
		for sent >= acked+natsWindow {
			m, err := acks.NextMsg(2 * time.Second)
			if err != nil || len(m.Data) != 8 {
				return
			}
			acked = max(acked, int(binary.LittleEndian.Uint64(m.Data)))
		}
		if err := s.resp.Publish(inbox, token); err != nil {
			return
		}
	}
	_ = s.resp.Flush()
}

func (s *natsSystem) Teardown() error {
	s.resp.Close()
	s.srv.Shutdown()
	s.srv.WaitForShutdown()
	return nil
}

type natsClient struct{ nc *nats.Conn }

func (s *natsSystem) Dial(ctx context.Context) (Client, error) {
	nc, err := nats.Connect(s.srv.ClientURL(), nats.NoReconnect())
	if err != nil {
		return nil, err
	}
	return &natsClient{nc: nc}, nil
}

func (c *natsClient) Call(ctx context.Context, req []byte) ([]byte, error) {
	m, err := c.nc.RequestWithContext(ctx, "echo", req)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

func (c *natsClient) Stream(ctx context.Context, n int) (int, error) {
	inbox := c.nc.NewInbox()
	sub, err := c.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, err
	}
	defer sub.Unsubscribe()
	if err := sub.SetPendingLimits(2*natsWindow, 64<<20); err != nil {
		return 0, err
	}
	if err := c.nc.PublishRequest("tokens", inbox, binary.LittleEndian.AppendUint64(nil, uint64(n))); err != nil {
		return 0, err
	}
	ack := make([]byte, 8)
	got := 0
	for got < n {
		if got%1024 == 0 && ctx.Err() != nil {
			return got, ctx.Err()
		}
		m, err := sub.NextMsg(2 * time.Second)
		if err != nil {
			return got, fmt.Errorf("after %d tokens: %w", got, err)
		}
		if len(m.Data) != TokenSize {
			return got, fmt.Errorf("token of %d bytes", len(m.Data))
		}
		got++
		if got%natsAckGap == 0 {
			binary.LittleEndian.PutUint64(ack, uint64(got))
			if err := c.nc.Publish(inbox+".ack", ack); err != nil {
				return got, err
			}
		}
	}
	return got, nil
}

func (c *natsClient) Close() error {
	c.nc.Close()
	return nil
}
