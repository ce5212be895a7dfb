package transport

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/wire"
)

// Stateless reset: a responder that lost a connection's state (a restarted
// node) answers its packets with a reset that the initiator can trust
// without any shared state left: a 16-byte token derived from the
// responder's long-term key and the connection ID, which the responder gave
// the initiator (in a ResetToken control frame) right after the handshake.
// The initiator then closes at once instead of waiting for the idle timeout.
//
//	packet header (conn ID, HANDSHAKE flag, packet number 0, zero nonce) |
//	type 0x10 | version | token (16)

// MsgStatelessReset is the handshake-packet type of a stateless reset
// (beside crypto's Msg* types).
const MsgStatelessReset = 0x10

const resetTokenLen = 16

// resetPacketLen is the size of a stateless reset; only larger packets are
// answered, so a reset never amplifies and two endpoints cannot loop.
const resetPacketLen = wire.PacketHeaderLen + 2 + resetTokenLen

// ErrStatelessReset closes a connection whose peer lost its state.
var ErrStatelessReset = errors.New("transport: the peer lost the connection (stateless reset)")

// resetToken derives the token of cid from the endpoint's static key.
func (e *Endpoint) resetToken(cid uint64) (tok [resetTokenLen]byte) {
	key := e.cfg.Crypto.Identity.Private
	h := hmac.New(sha256.New, key[:])
	h.Write([]byte("mxp/1 stateless reset"))
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], cid)
	h.Write(b[:])
	copy(tok[:], h.Sum(nil))
	return tok
}

// appendReset appends a stateless reset for cid.
func (e *Endpoint) appendReset(dst []byte, cid uint64) []byte {
	hdr := wire.PacketHeader{ConnID: cid, Flags: wire.PacketFlagHandshake, PayloadLen: 2 + resetTokenLen}
	dst = wire.AppendPacketHeader(dst, &hdr)
	dst = append(dst, MsgStatelessReset, crypto.HandshakeVersion)
	tok := e.resetToken(cid)
	return append(dst, tok[:]...)
}

// onReset closes c if pkt carries the token its peer gave it.
func (c *Conn) onReset(pkt []byte, now time.Time) {
	if !c.haveResetToken || len(pkt) != resetPacketLen {
		return
	}
	if hmac.Equal(pkt[wire.PacketHeaderLen+2:], c.resetToken[:]) {
		c.closeErr = ErrStatelessReset
		c.finish(now)
	}
}
