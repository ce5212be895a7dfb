package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

type vector struct {
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	EncodedHex string `json:"encoded_hex"`
	InputHex   string `json:"input_hex"`
	Verdict    string `json:"verdict"`
	ErrorKind  string `json:"error_kind"`
	MsgType    uint8  `json:"msg_type"`
	MessageID  uint64 `json:"message_id"`
	TraceID    uint64 `json:"trace_id"`
	PayloadHex string `json:"payload_hex"`
}

func mxpd(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), code
}

// TestDebugDecodeEncodeVectors runs every message vector through
// `mxpd debug decode` and every decoded message back through `mxpd debug encode`.
func TestDebugDecodeEncodeVectors(t *testing.T) {
	f, err := os.Open("../../testdata/vectors/messages.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 8<<20)
	n := 0
	for sc.Scan() {
		var v vector
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		n++
		in := v.EncodedHex + v.InputHex
		// The argument form for short inputs, stdin for the long ones.
		var out string
		var code int
		if len(in) < 4096 {
			out, code = mxpd(t, "", "debug", "decode", in)
		} else {
			out, code = mxpd(t, in+"\n", "debug", "decode")
		}
		if v.Verdict == "error" && v.Name != "type_0xef" {
			var e map[string]string
			if code != 1 || json.Unmarshal([]byte(out), &e) != nil || e["error"] != v.ErrorKind || e["detail"] == "" {
				t.Errorf("%s: exit %d, output %s; want exit 1 and error %s", v.Name, code, out, v.ErrorKind)
			}
			continue
		}
		var m struct {
			Type       uint8  `json:"type"`
			MessageID  uint64 `json:"message_id"`
			TraceID    uint64 `json:"trace_id"`
			PayloadHex string `json:"payload_hex"`
			Consumed   int    `json:"consumed"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &m) != nil {
			t.Fatalf("%s: exit %d, output %.200s", v.Name, code, out)
		}
		if v.Name != "type_0xef" && (m.Type != v.MsgType || m.MessageID != v.MessageID || m.TraceID != v.TraceID || m.PayloadHex != v.PayloadHex) {
			t.Errorf("%s: decoded %.200s", v.Name, out)
		}
		enc, code := mxpd(t, out, "debug", "encode")
		if code != 0 || strings.TrimSpace(enc) != in[:2*m.Consumed] {
			t.Errorf("%s: encode of the decode gave exit %d, %.100s", v.Name, code, enc)
		}
	}
	if n != 87 {
		t.Fatalf("read %d vectors, want 87", n)
	}
}

func TestDebugErrors(t *testing.T) {
	cases := []struct {
		args  []string
		stdin string
		code  int
		want  string
	}{
		{[]string{"debug", "decode", ""}, "", 1, `{"error":"BufferTooSmall","detail":"BufferTooSmall { needed: 40, got: 0 }"}`},
		{[]string{"debug", "decode", "zz"}, "", 1, `"error":"InvalidHex"`},
		{[]string{"debug", "decode"}, "31 50 58\n", 1, `"error":"BufferTooSmall"`},
		{[]string{"debug", "encode", `{"type":19}`}, "", 1, `"error":"InvalidMessageType"`},
		{[]string{"debug", "encode", `{"type":16,"flags":16}`}, "", 1, `"error":"InvalidFlags"`},
		{[]string{"debug", "encode", `{"type":16,"type_name":"Event"}`}, "", 1, `"error":"InvalidJSON"`},
		{[]string{"debug", "encode", `{"type":16,"payload_len":3,"payload_hex":"00"}`}, "", 1, `"error":"InvalidJSON"`},
		{[]string{"debug", "encode", `{"flags":0}`}, "", 1, `missing field`},
		{[]string{"debug", "encode", `{"type":16,"bogus":1}`}, "", 1, `"error":"InvalidJSON"`},
		{[]string{"debug", "encode", `{"type":128,"payload_hex":""}`}, "", 0, "3150584d8000"},
		{[]string{"debug", "--help"}, "", 0, "usage: mxpd debug"},
		{[]string{"debug", "frobnicate"}, "", 2, ""},
		{[]string{"nope"}, "", 2, ""},
		{[]string{"--help"}, "", 0, "commands:"},
	}
	for _, c := range cases {
		out, code := mxpd(t, c.stdin, c.args...)
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("mxpd %q: exit %d, output %q; want exit %d containing %q", c.args, code, out, c.code, c.want)
		}
	}
}

func TestSelfCheckPasses(t *testing.T) {
	out, code := mxpd(t, "", "debug", "selfcheck")
	if code != 0 || !strings.Contains(out, "self-check passed") || strings.Contains(out, "FAIL") {
		t.Fatalf("demo exit %d:\n%s", code, out)
	}
}

func TestDebugBackends(t *testing.T) {
	out, code := mxpd(t, "", "debug", "backends", "--shards", "1")
	if code != 0 || !strings.Contains(out, "not chosen: xdp") ||
		!(strings.Contains(out, "backend: portable") || strings.Contains(out, "backend: uring")) {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	// On loopback AF_XDP cannot run: forcing it fails with the reason.
	if _, code := mxpd(t, "", "debug", "backends", "--backend", "xdp"); code != 1 {
		t.Fatalf("forcing an unavailable backend exited %d, want 1", code)
	}
	if out, code := mxpd(t, "", "debug", "backends", "--backend", "portable", "--shards", "2"); code != 0 || !strings.Contains(out, "udp gso:") {
		t.Fatalf("portable: exit %d\n%s", code, out)
	}
}
