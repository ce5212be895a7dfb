//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// http and https: net/http HTTP/1.1 with keep-alive; POST /echo returns the
// body; GET /stream?n= writes n 16-byte tokens as a chunked body, one Write
// per token (net/http buffers them into chunks). A client is an http.Client
// whose transport holds at most one connection, so 64 callers over one
// connection queue behind each other as HTTP/1.1 allows. https adds TLS 1.3
// (HTTP/2 is not offered).
type httpSystem struct {
	name string
	tls  bool
	ln   net.Listener
	srv  *http.Server
	url  string
}

func init() {
	register("http", func() System { return &httpSystem{name: "http"} })
	register("https", func() System { return &httpSystem{name: "https", tls: true} })
}

func (s *httpSystem) Name() string { return s.name }

func (s *httpSystem) Setup(ctx context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("n"))
		if err != nil || n < 0 {
			http.Error(w, "bad n", http.StatusBadRequest)
			return
		}
		token := make([]byte, TokenSize)
		for i := 0; i < n; i++ {
			if _, err := w.Write(token); err != nil {
				return
			}
		}
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	scheme := "http"
	if s.tls {
		scheme = "https"
		ln = tls.NewListener(ln, serverTLS("http/1.1"))
	}
	s.ln = ln
	s.url = fmt.Sprintf("%s://%s", scheme, ln.Addr())
	go func() { _ = s.srv.Serve(ln) }()
	return nil
}

func (s *httpSystem) Teardown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		return s.srv.Close()
	}
	return nil
}

type httpClient struct {
	tr  *http.Transport
	c   *http.Client
	url string
}

func (s *httpSystem) Dial(ctx context.Context) (Client, error) {
	tr := &http.Transport{
		MaxConnsPerHost:     1,
		MaxIdleConnsPerHost: 1,
		DisableCompression:  true,
		TLSNextProto:        map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	if s.tls {
		tr.TLSClientConfig = clientTLS("http/1.1")
	}
	return &httpClient{tr: tr, c: &http.Client{Transport: tr}, url: s.url}, nil
}

func (c *httpClient) Call(ctx context.Context, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+"/echo", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	out := make([]byte, 0, len(body))
	buf := bytes.NewBuffer(out)
	_, err = buf.ReadFrom(resp.Body)
	return buf.Bytes(), err
}

func (c *httpClient) Stream(ctx context.Context, n int) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url+"/stream?n="+strconv.Itoa(n), nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	r := bufio.NewReaderSize(resp.Body, 64<<10)
	token := make([]byte, TokenSize)
	got := 0
	for got < n {
		if _, err := io.ReadFull(r, token); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return got, err
		}
		got++
	}
	return got, nil
}

func (c *httpClient) Close() error {
	c.tr.CloseIdleConnections()
	return nil
}
