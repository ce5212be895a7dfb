package crypto

import (
	"encoding/binary"

	"github.com/mxp-dataplane/mxp/wire"
)

// Handshake message types: the first byte of a handshake packet's payload
// (NewTicket travels inside protected packets instead).
const (
	MsgInitiatorHello  = 0x01
	MsgResponderHello  = 0x02
	MsgInitiatorFinish = 0x03
	MsgCookieReply     = 0x04
	MsgNewTicket       = 0x05
)

// HandshakeVersion is the version byte that follows the type byte.
const HandshakeVersion = 0x01

// Handshake sizes.
const (
	// MinHelloPacket: InitiatorHello packets are padded to at least this many
	// bytes so that the responder's answers stay far below 3x of it.
	MinHelloPacket = 1200
	// MaxHelloPacket: an InitiatorHello, 0-RTT data included, fits one
	// 1500-byte Ethernet frame over IPv6 and UDP.
	MaxHelloPacket = 1452
	macLen         = 16
	dhLen          = 32
	noiseTag       = 16
	// noise message 1 without payload: e | enc(s)
	noiseMsg1Min = dhLen + dhLen + noiseTag + noiseTag
	// noise message 2 without payload: e
	noiseMsg2Min  = dhLen + noiseTag
	finishLen     = 2 + 32
	cookieNonce   = 24
	cookieLen     = 16
	cookieReplyLn = 2 + cookieNonce + cookieLen + tagLen
	maxSuites     = 8
)

// helloPayload is the plaintext carried inside Noise message 1.
//
//	u8 suite count n (1..8) | n x u8 suite code | u8 capabilities (bit0 hardware AES)
type helloPayload struct {
	suites [maxSuites]Suite
	n      int
	hwAES  bool
}

func (p *helloPayload) list() []Suite { return p.suites[:p.n] }

func appendHelloPayload(dst []byte, suites []Suite, hwAES bool) []byte {
	dst = append(dst, byte(len(suites)))
	for _, s := range suites {
		dst = append(dst, byte(s))
	}
	var caps byte
	if hwAES {
		caps |= 1
	}
	return append(dst, caps)
}

func parseHelloPayload(b []byte) (helloPayload, error) {
	var p helloPayload
	if len(b) < 2 {
		return p, newError(KindMalformed, "hello payload too short", nil)
	}
	n := int(b[0])
	if n == 0 || n > maxSuites || len(b) != 1+n+1 {
		return p, newError(KindMalformed, "hello payload suite list", nil)
	}
	for i := 0; i < n; i++ {
		s := Suite(b[1+i])
		if s.valid() { // unknown suites are ignored
			p.suites[p.n] = s
			p.n++
		}
	}
	p.hwAES = b[1+n]&1 != 0
	return p, nil
}

// responderPayload is the plaintext inside Noise message 2:
//
//	u8 chosen suite | u8 flags (bit0 0-RTT data accepted)
type responderPayload struct {
	suite         Suite
	earlyAccepted bool
}

func parseResponderPayload(b []byte) (responderPayload, error) {
	if len(b) != 2 || b[1]&^1 != 0 {
		return responderPayload{}, newError(KindMalformed, "responder payload", nil)
	}
	return responderPayload{suite: Suite(b[0]), earlyAccepted: b[1]&1 != 0}, nil
}

// parseHandshakeHeader checks the header of a handshake packet and returns
// the conn ID and the message (the packet's payload). A handshake packet has
// flags exactly HANDSHAKE, packet number 0, a zero nonce field, and
// payload length equal to the rest of the datagram.
func parseHandshakeHeader(pkt []byte) (connID uint64, msg []byte, err error) {
	var h wire.PacketHeader
	if err := wire.ParsePacketHeader(pkt, &h); err != nil {
		return 0, nil, newError(KindMalformed, "handshake header", err)
	}
	if h.Flags != wire.PacketFlagHandshake || h.PacketNumber != 0 || h.Nonce != [wire.PacketNonceLen]byte{} {
		return 0, nil, newError(KindMalformed, "not a handshake packet", nil)
	}
	if int(h.PayloadLen) != len(pkt)-wire.PacketHeaderLen {
		return 0, nil, newError(KindMalformed, "handshake payload length", nil)
	}
	msg = pkt[wire.PacketHeaderLen:]
	if len(msg) < 2 {
		return 0, nil, newError(KindMalformed, "handshake message too short", nil)
	}
	if msg[1] != HandshakeVersion {
		return 0, nil, newError(KindMalformed, "handshake version", nil)
	}
	return h.ConnID, msg, nil
}

// HandshakeType returns the handshake message type of a HANDSHAKE packet
// (one of the Msg* constants), so a caller can route it, or an error.
func HandshakeType(pkt []byte) (byte, error) {
	_, msg, err := parseHandshakeHeader(pkt)
	if err != nil {
		return 0, err
	}
	return msg[0], nil
}

func appendHandshakeHeader(dst []byte, connID uint64, msgLen int) []byte {
	h := wire.PacketHeader{ConnID: connID, Flags: wire.PacketFlagHandshake, PayloadLen: uint16(msgLen)}
	return wire.AppendPacketHeader(dst, &h)
}

// initiatorHello is a parsed InitiatorHello packet. Layout of the message:
//
//	u8 type 0x01 | u8 version | u16 noise length | Noise message 1
//	| u16 ticket length | ticket | u16 0-RTT length | 0-RTT ciphertext
//	| zero padding | mac1 [16] | mac2 [16]
type initiatorHello struct {
	connID    uint64
	noise     []byte
	ticket    []byte
	early     []byte
	earlyAAD  []byte // packet bytes before the 0-RTT length field
	mac1      []byte
	mac2      []byte
	mac1Input []byte // packet bytes covered by mac1
	mac2Input []byte // packet bytes covered by mac2
}

func parseInitiatorHello(pkt []byte) (initiatorHello, error) {
	var m initiatorHello
	connID, msg, err := parseHandshakeHeader(pkt)
	if err != nil {
		return m, err
	}
	if msg[0] != MsgInitiatorHello {
		return m, newError(KindMalformed, "not an InitiatorHello", nil)
	}
	if len(pkt) < MinHelloPacket || len(pkt) > MaxHelloPacket {
		return m, newError(KindMalformed, "InitiatorHello size", nil)
	}
	m.connID = connID
	end := len(msg) - 2*macLen
	r := msg[2:end]
	var ok bool
	if m.noise, r, ok = takeU16(r); !ok || len(m.noise) < noiseMsg1Min {
		return m, newError(KindMalformed, "InitiatorHello noise message", nil)
	}
	if m.ticket, r, ok = takeU16(r); !ok {
		return m, newError(KindMalformed, "InitiatorHello ticket", nil)
	}
	m.earlyAAD = pkt[:len(pkt)-2*macLen-len(r)]
	if m.early, r, ok = takeU16(r); !ok || (len(m.early) > 0 && len(m.early) < tagLen) {
		return m, newError(KindMalformed, "InitiatorHello 0-RTT data", nil)
	}
	for _, c := range r {
		if c != 0 {
			return m, newError(KindMalformed, "InitiatorHello padding not zero", nil)
		}
	}
	m.mac1 = msg[end : end+macLen]
	m.mac2 = msg[end+macLen:]
	m.mac1Input = pkt[:len(pkt)-2*macLen]
	m.mac2Input = pkt[:len(pkt)-macLen]
	return m, nil
}

// takeU16 splits a u16-length-prefixed field off b.
func takeU16(b []byte) (field, rest []byte, ok bool) {
	if len(b) < 2 {
		return nil, nil, false
	}
	n := int(binary.LittleEndian.Uint16(b))
	if len(b)-2 < n {
		return nil, nil, false
	}
	return b[2 : 2+n], b[2+n:], true
}

// responderHello: u8 type 0x02 | u8 version | u16 noise length | Noise message 2
type responderHello struct {
	connID uint64
	noise  []byte
}

func parseResponderHello(pkt []byte) (responderHello, error) {
	var m responderHello
	connID, msg, err := parseHandshakeHeader(pkt)
	if err != nil {
		return m, err
	}
	if msg[0] != MsgResponderHello {
		return m, newError(KindMalformed, "not a ResponderHello", nil)
	}
	noise, rest, ok := takeU16(msg[2:])
	if !ok || len(rest) != 0 || len(noise) < noiseMsg2Min {
		return m, newError(KindMalformed, "ResponderHello noise message", nil)
	}
	m.connID, m.noise = connID, noise
	return m, nil
}

// initiatorFinish: u8 type 0x03 | u8 version | confirm [32]
type initiatorFinish struct {
	connID  uint64
	confirm []byte
}

func parseInitiatorFinish(pkt []byte) (initiatorFinish, error) {
	connID, msg, err := parseHandshakeHeader(pkt)
	if err != nil {
		return initiatorFinish{}, err
	}
	if msg[0] != MsgInitiatorFinish || len(msg) != finishLen {
		return initiatorFinish{}, newError(KindMalformed, "not an InitiatorFinish", nil)
	}
	return initiatorFinish{connID: connID, confirm: msg[2:]}, nil
}

// cookieReply: u8 type 0x04 | u8 version | nonce [24] | sealed cookie [16+16]
type cookieReply struct {
	connID uint64
	nonce  []byte
	sealed []byte
}

func parseCookieReply(pkt []byte) (cookieReply, error) {
	connID, msg, err := parseHandshakeHeader(pkt)
	if err != nil {
		return cookieReply{}, err
	}
	if msg[0] != MsgCookieReply || len(msg) != cookieReplyLn {
		return cookieReply{}, newError(KindMalformed, "not a CookieReply", nil)
	}
	return cookieReply{connID: connID, nonce: msg[2 : 2+cookieNonce], sealed: msg[2+cookieNonce:]}, nil
}

// newTicketMsg: u8 type 0x05 | u8 version | u32 lifetime seconds | u64
// ticket sequence | u16 ticket length | ticket. Sent by the responder inside
// protected packets (in a Crypto frame).
type newTicketMsg struct {
	lifetime uint32
	seq      uint64
	ticket   []byte
}

const newTicketFixed = 2 + 4 + 8

func parseNewTicket(b []byte) (newTicketMsg, error) {
	var m newTicketMsg
	if len(b) < newTicketFixed+2 || b[0] != MsgNewTicket || b[1] != HandshakeVersion {
		return m, newError(KindMalformed, "not a NewTicket", nil)
	}
	m.lifetime = binary.LittleEndian.Uint32(b[2:])
	m.seq = binary.LittleEndian.Uint64(b[6:])
	t, rest, ok := takeU16(b[newTicketFixed:])
	if !ok || len(rest) != 0 || len(t) != ticketBlobLen {
		return m, newError(KindMalformed, "NewTicket ticket", nil)
	}
	m.ticket = t
	return m, nil
}
