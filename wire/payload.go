package wire

import (
	"encoding/hex"
	"errors"
	"net/netip"
)

// Payload is the typed body of one message type. AppendPayload appends the
// encoding to dst (returning dst unchanged and a *PayloadError when a field
// cannot be encoded); DecodePayload replaces the receiver's fields with the
// decoding of b, or returns a *PayloadError. Byte-slice fields of a decoded
// payload alias b; strings are copies. The layouts are in docs/payloads.md.
type Payload interface {
	MessageType() MsgType
	AppendPayload(dst []byte) ([]byte, error)
	DecodePayload(b []byte) error
}

// NewPayload returns an empty payload of the type's codec, or nil for types
// without one (extension types).
func NewPayload(t MsgType) Payload {
	switch t {
	case TypeAgentRegister:
		return new(AgentRegister)
	case TypeAgentDiscover:
		return new(AgentDiscover)
	case TypeAgentHeartbeat:
		return new(AgentHeartbeat)
	case TypeCall:
		return new(Call)
	case TypeResponse:
		return new(Response)
	case TypeEvent:
		return new(Event)
	case TypeStreamOpen:
		return new(StreamOpen)
	case TypeStreamChunk:
		return new(StreamChunk)
	case TypeStreamClose:
		return new(StreamClose)
	case TypeAck:
		return new(Ack)
	case TypeError:
		return new(ErrorPayload)
	}
	return nil
}

// UUID is a 16-byte identifier (agents, streams), carried as raw bytes.
type UUID [16]byte

// String renders u in the canonical 8-4-4-4-12 hex form.
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// ParseUUID parses the canonical 8-4-4-4-12 form or 32 bare hex digits.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	var digits [32]byte
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '-' && len(s) == 36 && (i == 8 || i == 13 || i == 18 || i == 23) {
			continue
		}
		if n == len(digits) {
			return u, errBadUUID
		}
		digits[n] = c
		n++
	}
	if n != len(digits) || (len(s) != 32 && len(s) != 36) {
		return u, errBadUUID
	}
	if _, err := hex.Decode(u[:], digits[:]); err != nil {
		return UUID{}, errBadUUID
	}
	return u, nil
}

var errBadUUID = errors.New("wire: UUID must be 32 hex digits, optionally as 8-4-4-4-12")

// AgentRecord describes an agent: the AgentRegister payload, and each entry of
// a discovery result.
//
//	agent ID (16) | u16 name length | name | u16 capability count |
//	count × (u16 length | capability) | endpoint
//
// The endpoint fills the rest of the payload: 6 bytes (IPv4 | u16 port) as in
// SPEC.md, or 18 bytes (IPv6 | u16 port), this project's IPv6 form. An
// IPv4-mapped IPv6 address keeps the 18-byte form, so decoding and encoding
// again gives the same bytes; IPv6 zones cannot be carried.
type AgentRecord struct {
	ID           UUID
	Name         string
	Capabilities []string
	Endpoint     netip.AddrPort
}

// AgentRegister registers an agent with a node (SPEC.md layout).
type AgentRegister struct{ AgentRecord }

func (*AgentRegister) MessageType() MsgType { return TypeAgentRegister }

func (p *AgentRegister) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeAgentRegister}
	p.write(&w)
	return w.done(dst)
}

func (p *AgentRegister) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeAgentRegister}
	p.read(&r)
	return r.end()
}

func (a *AgentRecord) write(w *payloadWriter) {
	w.raw(a.ID[:])
	w.str(a.Name, "name")
	w.count(len(a.Capabilities), "capability_count")
	for _, c := range a.Capabilities {
		w.str(c, "capability")
	}
	ap := a.Endpoint
	addr := ap.Addr()
	switch {
	case addr.Is4():
		a4 := addr.As4()
		w.raw(a4[:])
	case addr.Is6() && addr.Zone() == "":
		a16 := addr.As16()
		w.raw(a16[:])
	default:
		w.fail(PayloadInvalidValue, "endpoint")
	}
	w.u16(ap.Port())
}

func (a *AgentRecord) read(r *payloadReader) {
	a.ID = r.id("agent_id")
	a.Name = r.str("name")
	n := int(r.u16("capability_count"))
	a.Capabilities = a.Capabilities[:0]
	for i := 0; i < n && r.err == nil; i++ {
		a.Capabilities = append(a.Capabilities, r.str("capability"))
	}
	if r.err != nil {
		return
	}
	var addr netip.Addr
	switch len(r.b) - r.off {
	case 6:
		addr = netip.AddrFrom4([4]byte(r.take(4, "endpoint")))
	case 18:
		addr = netip.AddrFrom16([16]byte(r.take(16, "endpoint")))
	default:
		kind := PayloadTruncated
		if len(r.b)-r.off > 6 {
			kind = PayloadInvalidValue
		}
		r.fail(kind, "endpoint")
		return
	}
	a.Endpoint = netip.AddrPortFrom(addr, r.u16("endpoint_port"))
}

// DiscoverKind tells a discovery query from its result.
type DiscoverKind uint8

// AgentDiscover kinds.
const (
	DiscoverQuery  DiscoverKind = 0x01
	DiscoverResult DiscoverKind = 0x02
)

// AgentDiscover asks a node for the agents with a capability, or answers.
//
//	query:  kind 0x01 | u16 length | capability | u16 limit (0 = no limit)
//	result: kind 0x02 | u64 query message ID | u16 count |
//	        count × (u16 length | static key (32) | AgentRegister payload)
//
// An empty capability matches every agent. Each result carries the agent's
// static public key as the node authenticated it, so agents can also
// connect to each other directly.
type AgentDiscover struct {
	Kind       DiscoverKind
	Capability string            // query
	Limit      uint16            // query
	QueryID    uint64            // result: the message ID of the query answered
	Agents     []DiscoveredAgent // result
}

// DiscoveredAgent is one agent of a discovery result.
type DiscoveredAgent struct {
	Key [32]byte // the agent's static public key (zero if unknown)
	AgentRecord
}

func (*AgentDiscover) MessageType() MsgType { return TypeAgentDiscover }

func (p *AgentDiscover) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeAgentDiscover}
	w.u8(uint8(p.Kind))
	switch p.Kind {
	case DiscoverQuery:
		w.str(p.Capability, "capability")
		w.u16(p.Limit)
	case DiscoverResult:
		w.u64(p.QueryID)
		w.count(len(p.Agents), "agent_count")
		for i := range p.Agents {
			at := len(w.b)
			w.u16(0)
			w.raw(p.Agents[i].Key[:])
			p.Agents[i].write(&w)
			n := len(w.b) - at - 2
			if n > 0xFFFF {
				w.fail(PayloadFieldTooLong, "agent")
			}
			w.b[at], w.b[at+1] = byte(n), byte(n>>8)
		}
	default:
		w.fail(PayloadInvalidValue, "kind")
	}
	return w.done(dst)
}

func (p *AgentDiscover) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeAgentDiscover}
	agents := p.Agents[:0]
	*p = AgentDiscover{Kind: DiscoverKind(r.u8("kind"))}
	switch p.Kind {
	case DiscoverQuery:
		p.Capability = r.str("capability")
		p.Limit = r.u16("limit")
	case DiscoverResult:
		p.QueryID = r.u64("query_id")
		n := int(r.u16("agent_count"))
		for i := 0; i < n && r.err == nil; i++ {
			rec := r.take(int(r.u16("agent_length")), "agent")
			if r.err != nil {
				break
			}
			sub := payloadReader{b: rec, typ: TypeAgentDiscover}
			var a DiscoveredAgent
			copy(a.Key[:], sub.take(32, "agent_key"))
			a.read(&sub)
			if err := sub.end(); err != nil {
				e := err.(*PayloadError)
				e.Offset += r.off - len(rec)
				return e
			}
			agents = append(agents, a)
		}
		p.Agents = agents
	default:
		r.invalid(1, "kind")
	}
	return r.end()
}

// AgentStatus is an agent's self-reported health.
type AgentStatus uint8

// Agent statuses.
const (
	StatusHealthy  AgentStatus = 0
	StatusDegraded AgentStatus = 1
	StatusDraining AgentStatus = 2
)

// AgentHeartbeat keeps an agent's registration alive.
//
//	agent ID (16) | u64 sequence | u8 status | u32 in-flight calls
type AgentHeartbeat struct {
	AgentID  UUID
	Sequence uint64
	Status   AgentStatus
	InFlight uint32
}

func (*AgentHeartbeat) MessageType() MsgType { return TypeAgentHeartbeat }

func (p *AgentHeartbeat) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeAgentHeartbeat}
	w.raw(p.AgentID[:])
	w.u64(p.Sequence)
	if p.Status > StatusDraining {
		w.fail(PayloadInvalidValue, "status")
	}
	w.u8(uint8(p.Status))
	w.u32(p.InFlight)
	return w.done(dst)
}

func (p *AgentHeartbeat) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeAgentHeartbeat}
	p.AgentID = r.id("agent_id")
	p.Sequence = r.u64("sequence")
	p.Status = AgentStatus(r.u8("status"))
	if p.Status > StatusDraining {
		r.invalid(1, "status")
	}
	p.InFlight = r.u32("in_flight")
	return r.end()
}

// Call invokes a target agent (SPEC.md layout).
//
//	target agent ID (16) | u32 timeout seconds (0 = none) | call data
type Call struct {
	Target         UUID
	TimeoutSeconds uint32
	Data           []byte
}

func (*Call) MessageType() MsgType { return TypeCall }

func (p *Call) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeCall}
	w.raw(p.Target[:])
	w.u32(p.TimeoutSeconds)
	w.raw(p.Data)
	return w.done(dst)
}

func (p *Call) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeCall}
	p.Target = r.id("target")
	p.TimeoutSeconds = r.u32("timeout")
	p.Data = r.rest()
	return r.end()
}

// Response answers a Call.
//
//	u64 call message ID | response data
type Response struct {
	CallID uint64
	Data   []byte
}

func (*Response) MessageType() MsgType { return TypeResponse }

func (p *Response) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeResponse}
	w.u64(p.CallID)
	w.raw(p.Data)
	return w.done(dst)
}

func (p *Response) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeResponse}
	p.CallID = r.u64("call_id")
	p.Data = r.rest()
	return r.end()
}

// Event is a fire-and-forget notification on a topic.
//
//	source agent ID (16) | u16 length | topic | event data
type Event struct {
	Source UUID
	Topic  string
	Data   []byte
}

func (*Event) MessageType() MsgType { return TypeEvent }

func (p *Event) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeEvent}
	w.raw(p.Source[:])
	w.str(p.Topic, "topic")
	w.raw(p.Data)
	return w.done(dst)
}

func (p *Event) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeEvent}
	p.Source = r.id("source")
	p.Topic = r.str("topic")
	p.Data = r.rest()
	return r.end()
}

// StreamKind is the StreamOpen stream type.
type StreamKind uint8

// Stream kinds (SPEC.md).
const (
	StreamUnidirectional StreamKind = 0x01
	StreamBidirectional  StreamKind = 0x02
)

// StreamOpen opens an application stream to an agent (SPEC.md layout).
//
//	stream ID (16) | target agent ID (16) | u8 stream type (0x01 uni, 0x02 bidi)
type StreamOpen struct {
	StreamID UUID
	Target   UUID
	Kind     StreamKind
}

func (*StreamOpen) MessageType() MsgType { return TypeStreamOpen }

func (p *StreamOpen) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeStreamOpen}
	w.raw(p.StreamID[:])
	w.raw(p.Target[:])
	if p.Kind != StreamUnidirectional && p.Kind != StreamBidirectional {
		w.fail(PayloadInvalidValue, "stream_type")
	}
	w.u8(uint8(p.Kind))
	return w.done(dst)
}

func (p *StreamOpen) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeStreamOpen}
	p.StreamID = r.id("stream_id")
	p.Target = r.id("target")
	p.Kind = StreamKind(r.u8("stream_type"))
	if p.Kind != StreamUnidirectional && p.Kind != StreamBidirectional {
		r.invalid(1, "stream_type")
	}
	return r.end()
}

// StreamChunk carries one chunk of an application stream.
//
//	stream ID (16) | u64 sequence (0 for the first chunk) | chunk data
type StreamChunk struct {
	StreamID UUID
	Sequence uint64
	Data     []byte
}

func (*StreamChunk) MessageType() MsgType { return TypeStreamChunk }

func (p *StreamChunk) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeStreamChunk}
	w.raw(p.StreamID[:])
	w.u64(p.Sequence)
	w.raw(p.Data)
	return w.done(dst)
}

func (p *StreamChunk) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeStreamChunk}
	p.StreamID = r.id("stream_id")
	p.Sequence = r.u64("sequence")
	p.Data = r.rest()
	return r.end()
}

// StreamClose ends an application stream.
//
//	stream ID (16) | u16 code (0 = normal close) | u16 length | reason
type StreamClose struct {
	StreamID UUID
	Code     ErrorCode
	Reason   string
}

func (*StreamClose) MessageType() MsgType { return TypeStreamClose }

func (p *StreamClose) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeStreamClose}
	w.raw(p.StreamID[:])
	w.u16(uint16(p.Code))
	w.str(p.Reason, "reason")
	return w.done(dst)
}

func (p *StreamClose) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeStreamClose}
	p.StreamID = r.id("stream_id")
	p.Code = ErrorCode(r.u16("code"))
	p.Reason = r.str("reason")
	return r.end()
}

// Ack acknowledges one or more messages by message ID.
//
//	u16 count (≥ 1) | count × u64 message ID
type Ack struct {
	MessageIDs []uint64
}

func (*Ack) MessageType() MsgType { return TypeAck }

func (p *Ack) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeAck}
	if len(p.MessageIDs) == 0 {
		w.fail(PayloadInvalidValue, "count")
	}
	w.count(len(p.MessageIDs), "count")
	for _, id := range p.MessageIDs {
		w.u64(id)
	}
	return w.done(dst)
}

// DecodePayload reuses the capacity of p.MessageIDs, so a long-lived Ack
// decodes without allocating.
func (p *Ack) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeAck}
	n := int(r.u16("count"))
	p.MessageIDs = p.MessageIDs[:0]
	if n == 0 {
		r.invalid(2, "count")
	}
	if r.err == nil && len(b)-r.off < 8*n {
		r.fail(PayloadTruncated, "message_id")
	}
	for i := 0; i < n && r.err == nil; i++ {
		p.MessageIDs = append(p.MessageIDs, r.u64("message_id"))
	}
	return r.end()
}

// ErrorCode classifies a failure carried by an Error message or a StreamClose.
// Codes from 0x8000 are the application's own.
type ErrorCode uint16

// Error codes.
const (
	CodeOK                ErrorCode = 0 // no error (normal StreamClose)
	CodeBadRequest        ErrorCode = 1 // the request is malformed
	CodeNotFound          ErrorCode = 2 // no such agent, capability or method
	CodeDeadlineExceeded  ErrorCode = 3 // the call's timeout expired
	CodeUnavailable       ErrorCode = 4 // the target cannot take calls now
	CodeInternal          ErrorCode = 5 // the handler or the node failed
	CodeCanceled          ErrorCode = 6 // the caller canceled
	CodePermissionDenied  ErrorCode = 7 // the caller is not allowed
	CodeResourceExhausted ErrorCode = 8 // a limit or quota was hit
	CodeUnimplemented     ErrorCode = 9 // the message type or method is not supported

	// CodeApplicationFirst is the first code an application may define.
	CodeApplicationFirst ErrorCode = 0x8000
)

// ErrorPayload is the body of an Error message: the failure of a request.
//
//	u64 message ID of the failed request | u16 code | u16 length | message
type ErrorPayload struct {
	InReplyTo uint64
	Code      ErrorCode
	Message   string
}

func (*ErrorPayload) MessageType() MsgType { return TypeError }

func (p *ErrorPayload) AppendPayload(dst []byte) ([]byte, error) {
	w := payloadWriter{b: dst, typ: TypeError}
	w.u64(p.InReplyTo)
	w.u16(uint16(p.Code))
	w.str(p.Message, "message")
	return w.done(dst)
}

func (p *ErrorPayload) DecodePayload(b []byte) error {
	r := payloadReader{b: b, typ: TypeError}
	p.InReplyTo = r.u64("in_reply_to")
	p.Code = ErrorCode(r.u16("code"))
	p.Message = r.str("message")
	return r.end()
}
