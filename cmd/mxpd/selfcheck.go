package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"time"

	"github.com/mxp-dataplane/mxp/wire"
)

// demoPayloads is one realistic payload of every message type.
func demoPayloads() []wire.Payload {
	planner := wire.UUID{0x01, 0x9a, 0x6e, 0x2c, 0x41, 0x00, 0x70, 0x00, 0x80, 0x00, 0, 0, 0, 0, 0, 1}
	writer := wire.UUID{0x01, 0x9a, 0x6e, 0x2c, 0x41, 0x00, 0x70, 0x00, 0x80, 0x00, 0, 0, 0, 0, 0, 2}
	stream := wire.UUID{0x01, 0x9a, 0x6e, 0x2c, 0x41, 0x00, 0x70, 0x00, 0x80, 0x00, 0, 0, 0, 0, 0, 3}
	rec := wire.AgentRecord{ID: writer, Name: "writer", Capabilities: []string{"llm.generate", "summarize"},
		Endpoint: netip.MustParseAddrPort("[2001:db8::7]:9000")}
	return []wire.Payload{
		&wire.AgentRegister{AgentRecord: rec},
		&wire.AgentDiscover{Kind: wire.DiscoverQuery, Capability: "summarize", Limit: 8},
		&wire.AgentDiscover{Kind: wire.DiscoverResult, QueryID: 2, Agents: []wire.DiscoveredAgent{{Key: [32]byte{7}, AgentRecord: rec}}},
		&wire.AgentHeartbeat{AgentID: writer, Sequence: 42, Status: wire.StatusHealthy, InFlight: 3},
		&wire.Call{Target: writer, TimeoutSeconds: 30, Data: []byte(`{"text":"MXP is a binary protocol..."}`)},
		&wire.Response{CallID: 5, Data: []byte(`{"summary":"fast agent messaging"}`)},
		&wire.Event{Source: planner, Topic: "plan.updated", Data: []byte(`{"step":2}`)},
		&wire.StreamOpen{StreamID: stream, Target: writer, Kind: wire.StreamUnidirectional},
		&wire.StreamChunk{StreamID: stream, Sequence: 0, Data: []byte("Hello")},
		&wire.StreamClose{StreamID: stream, Code: wire.CodeOK},
		&wire.Ack{MessageIDs: []uint64{5, 6, 7}},
		&wire.ErrorPayload{InReplyTo: 9, Code: wire.CodeNotFound, Message: `no agent offers "translate"`},
	}
}

// runSelfCheck checks the message layer: every message type is encoded,
// decoded and compared, corruption is shown to be caught, and the codec is
// timed (mxpd debug selfcheck).
func runSelfCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("debug selfcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mxpd debug selfcheck\n\nA self-check of the MXP message layer.")
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	fmt.Fprintln(stdout, "mxpd: MXP message layer self-check")
	failed := 0
	check := func(ok bool, format string, a ...any) {
		mark := "ok  "
		if !ok {
			mark, failed = "FAIL", failed+1
		}
		fmt.Fprintf(stdout, "  %s %s\n", mark, fmt.Sprintf(format, a...))
	}

	var buf []byte
	const traceID = 0x5ca1ab1e0ddba11
	for i, p := range demoPayloads() {
		payload, err := p.AppendPayload(nil)
		if err != nil {
			check(false, "%s: encode payload: %v", p.MessageType(), err)
			continue
		}
		start := len(buf)
		buf, err = wire.AppendMessage(buf, &wire.Message{Type: p.MessageType(), MessageID: uint64(i + 1), TraceID: traceID, Payload: payload})
		if err != nil {
			check(false, "%s: encode message: %v", p.MessageType(), err)
			continue
		}
		m, n, err := wire.DecodeMessage(buf[start:])
		got := wire.NewPayload(m.Type)
		ok := err == nil && n == len(buf)-start && m.TraceID == traceID && got != nil &&
			got.DecodePayload(m.Payload) == nil && reflect.DeepEqual(got, p)
		check(ok, "%-14s payload %3d B, message %3d B, round trip", p.MessageType(), len(payload), n)
	}

	// Every message above shares one buffer, as they would share a packet.
	count, off := 0, 0
	for off < len(buf) {
		_, n, err := wire.DecodeMessage(buf[off:])
		if err != nil {
			break
		}
		off, count = off+n, count+1
	}
	check(off == len(buf) && count == len(demoPayloads()), "%d messages decoded back to back from one %d-byte buffer", count, len(buf))

	bad := bytes.Clone(buf)
	bad[wire.HeaderSize+3] ^= 0x20
	_, _, err := wire.DecodeMessage(bad)
	check(errors.Is(err, wire.ErrChecksumMismatch), "a flipped payload bit is caught: %v", err)

	// A rough timing of the 256-byte codec; benchmarks (go test -bench ./wire) are the reference.
	m := wire.Message{Type: wire.TypeCall, MessageID: 1, TraceID: traceID, Payload: make([]byte, 256)}
	enc := make([]byte, 0, wire.EncodedLen(256))
	const rounds = 200000
	t0 := time.Now()
	for range rounds {
		enc, _ = wire.AppendMessage(enc[:0], &m)
	}
	t1 := time.Now()
	for range rounds {
		_, _, _ = wire.DecodeMessage(enc)
	}
	t2 := time.Now()
	fmt.Fprintf(stdout, "  info 256-byte message: encode %.1f ns, decode+verify %.1f ns (rough; see go test -bench ./wire)\n",
		float64(t1.Sub(t0).Nanoseconds())/rounds, float64(t2.Sub(t1).Nanoseconds())/rounds)

	if failed > 0 {
		fmt.Fprintf(stdout, "self-check FAILED: %d problem(s)\n", failed)
		return 1
	}
	fmt.Fprintln(stdout, "self-check passed")
	return 0
}
