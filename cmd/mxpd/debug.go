package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/mxp-dataplane/mxp/wire"
)

const debugUsage = `usage: mxpd debug <decode|encode|backends|selfcheck|latency|capture> [INPUT]

  decode [HEX]   decode one encoded MXP message given as hex (the argument, where
                 an empty argument means zero bytes, or else stdin) and print it
                 as JSON; bad input prints {"error":"<kind>","detail":".."} and
                 exits with status 1.
  encode [JSON]  the reverse: read the JSON decode prints (the argument or stdin)
                 and print the encoded message as hex.

  backends       probe the dataplane backends as mxpd start does, open the
                 chosen one on loopback and report its features
                 (mxpd debug backends --help for its flags).
  selfcheck      round-trip every message type through the codec.
  latency        call an agent repeatedly and print latency percentiles
                 (mxpd debug latency --help).
  capture        write the local node's decrypted messages to a pcap file
                 (--output x.pcap --duration 10s), for Wireshark or tcpdump.

JSON fields: type, type_name, flags, message_id, trace_id, payload_len,
payload_hex, consumed. 64-bit values are JSON numbers.
`

// messageJSON is the operator-facing form of one message.
type messageJSON struct {
	Type       *uint8  `json:"type"`
	TypeName   string  `json:"type_name"`
	Flags      uint8   `json:"flags"`
	MessageID  uint64  `json:"message_id"`
	TraceID    uint64  `json:"trace_id"`
	PayloadLen *uint64 `json:"payload_len"`
	PayloadHex string  `json:"payload_hex"`
	Consumed   *int    `json:"consumed,omitempty"`
}

type errorJSON struct {
	Error  string `json:"error"`
	Detail string `json:"detail"`
}

func runDebug(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stdout, debugUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "backends":
		return debugBackends(args[1:], stdout, stderr)
	case "selfcheck":
		return runSelfCheck(args[1:], stdout, stderr)
	case "latency":
		return debugLatency(args[1:], stdout, stderr)
	case "capture":
		return debugCapture(args[1:], stdout, stderr)
	}
	if len(args) > 2 || (len(args) == 2 && isHelp(args[1])) {
		fmt.Fprint(stderr, debugUsage)
		return 2
	}
	input := func() (string, error) {
		if len(args) == 2 {
			return args[1], nil
		}
		b, err := io.ReadAll(stdin)
		return string(b), err
	}
	switch args[0] {
	case "decode":
		in, err := input()
		if err != nil {
			return printJSON(stdout, errorJSON{"ReadError", err.Error()}, 1)
		}
		return debugDecode(in, stdout)
	case "encode":
		in, err := input()
		if err != nil {
			return printJSON(stdout, errorJSON{"ReadError", err.Error()}, 1)
		}
		return debugEncode(in, stdout)
	}
	fmt.Fprintf(stderr, "mxpd debug: unknown subcommand %q\n\n%s", args[0], debugUsage)
	return 2
}

func debugDecode(in string, stdout io.Writer) int {
	raw, err := hex.DecodeString(strings.Join(strings.Fields(in), ""))
	if err != nil {
		return printJSON(stdout, errorJSON{"InvalidHex", err.Error()}, 1)
	}
	m, n, err := wire.DecodeMessage(raw)
	if err != nil {
		var me *wire.MessageError
		if errors.As(err, &me) {
			return printJSON(stdout, errorJSON{me.Kind.String(), me.Error()}, 1)
		}
		return printJSON(stdout, errorJSON{"DecodeError", err.Error()}, 1)
	}
	t := uint8(m.Type)
	plen := uint64(len(m.Payload))
	return printJSON(stdout, messageJSON{
		Type: &t, TypeName: m.Type.String(), Flags: uint8(m.Flags),
		MessageID: m.MessageID, TraceID: m.TraceID, PayloadLen: &plen,
		PayloadHex: hex.EncodeToString(m.Payload), Consumed: &n,
	}, 0)
}

func debugEncode(in string, stdout io.Writer) int {
	dec := json.NewDecoder(strings.NewReader(in))
	dec.DisallowUnknownFields()
	var j messageJSON
	if err := dec.Decode(&j); err != nil {
		return printJSON(stdout, errorJSON{"InvalidJSON", err.Error()}, 1)
	}
	if j.Type == nil {
		return printJSON(stdout, errorJSON{"InvalidJSON", `missing field "type"`}, 1)
	}
	t := wire.MsgType(*j.Type)
	if j.TypeName != "" && j.TypeName != t.String() {
		return printJSON(stdout, errorJSON{"InvalidJSON", fmt.Sprintf("type_name %q does not match type %d (%s)", j.TypeName, *j.Type, t)}, 1)
	}
	payload, err := hex.DecodeString(j.PayloadHex)
	if err != nil {
		return printJSON(stdout, errorJSON{"InvalidHex", "payload_hex: " + err.Error()}, 1)
	}
	if j.PayloadLen != nil && *j.PayloadLen != uint64(len(payload)) {
		return printJSON(stdout, errorJSON{"InvalidJSON", fmt.Sprintf("payload_len %d does not match the %d bytes of payload_hex", *j.PayloadLen, len(payload))}, 1)
	}
	enc, err := wire.AppendMessage(nil, &wire.Message{
		Type: t, Flags: wire.MsgFlags(j.Flags), MessageID: j.MessageID, TraceID: j.TraceID, Payload: payload,
	})
	if err != nil {
		var me *wire.MessageError
		if errors.As(err, &me) {
			return printJSON(stdout, errorJSON{me.Kind.String(), me.Error()}, 1)
		}
		return printJSON(stdout, errorJSON{"EncodeError", err.Error()}, 1)
	}
	fmt.Fprintln(stdout, hex.EncodeToString(enc))
	return 0
}

func printJSON(w io.Writer, v any, status int) int {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // only our own plain structs are encoded
	}
	w.Write(buf.Bytes())
	return status
}
