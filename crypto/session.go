package crypto

import (
	"crypto/cipher"
	"encoding/binary"
	"time"

	"github.com/mxp-dataplane/mxp/wire"
)

// MaxPacketNumber is the largest packet number a Session sends. Reaching it
// ends the session (Seal returns ErrExhausted); packet numbers never wrap,
// so a (key, nonce) pair can never repeat.
const MaxPacketNumber = 1<<62 - 1

// PacketOverhead is what protection adds to a payload: header plus tag.
const PacketOverhead = wire.PacketHeaderLen + tagLen

// MaxPayload is the largest payload one packet carries (u16 length field).
const MaxPayload = 0xffff

// Default key update policy.
const (
	// DefaultKeyUpdateThresholdAESGCM follows RFC 9001 §6.6's confidentiality
	// limit for AES-GCM.
	DefaultKeyUpdateThresholdAESGCM = 1 << 23
	// DefaultKeyUpdateThresholdChaCha is well before the 2^32 packets per key
	// that the spec allows.
	DefaultKeyUpdateThresholdChaCha = 1 << 31
	// HardPacketsPerKey: a key is never used for more packets than this,
	// whatever the configuration; Seal fails instead.
	HardPacketsPerKey = 1 << 32
	// DefaultKeyUpdateGrace is how long packets of the previous key phase are
	// still accepted after the peer moved to a new phase.
	DefaultKeyUpdateGrace = 5 * time.Second
)

// Integrity limits (failed decryptions per session, RFC 9001 §6.6).
const (
	integrityLimitAESGCM = 1 << 52
	integrityLimitChaCha = 1 << 36
)

// sealFlags are the flag bits a caller may ask Seal to set.
const sealFlags = wire.PacketFlagAckEliciting | wire.PacketFlagAck | wire.PacketFlagProbe

// hpFlagMask: header protection masks every flag bit except HANDSHAKE, which
// must stay readable to tell handshake packets from protected ones.
const hpFlagMask = ^wire.PacketFlagHandshake

// phaseKeys are the AEAD key and IV of one direction in one key phase.
type phaseKeys struct {
	aead   cipher.AEAD
	iv     [ivLen]byte
	secret [32]byte
}

func derivePhaseKeys(s Suite, secret [32]byte) (phaseKeys, error) {
	e := newExpander(secret[:])
	defer e.wipe()
	return derivePhaseKeysWith(s, secret, e)
}

// derivePhaseKeysWith is derivePhaseKeys with e, an expander of secret.
func derivePhaseKeysWith(s Suite, secret [32]byte, e *expander) (phaseKeys, error) {
	k := phaseKeys{secret: secret}
	var key [keyLen]byte
	e.expandTo(key[:], labelKey)
	aead, err := newAEAD(s, key[:])
	clear(key[:])
	if err != nil {
		return k, err
	}
	k.aead = aead
	e.expandTo(k.iv[:], labelIV)
	return k, nil
}

func (k *phaseKeys) next(s Suite) (phaseKeys, error) {
	n := k.nextSecret()
	keys, err := derivePhaseKeys(s, n.secret)
	n.wipe()
	return keys, err
}

// nextSecret is the next phase with its secret only: its keys are derived
// when first needed (Session.Open).
func (k *phaseKeys) nextSecret() phaseKeys {
	e := newExpander(k.secret[:])
	defer e.wipe()
	return phaseKeys{secret: e.expand32(labelKeyUpdate)}
}

func (k *phaseKeys) wipe() {
	clear(k.secret[:])
	clear(k.iv[:])
	k.aead = nil
}

// nonce writes iv XOR (0^4 || pn as 64-bit big-endian) into out.
func (k *phaseKeys) nonce(out *[ivLen]byte, pn uint64) {
	*out = k.iv
	v := binary.BigEndian.Uint64(out[4:]) ^ pn
	binary.BigEndian.PutUint64(out[4:], v)
}

// SessionConfig is the per-session policy; zero fields take defaults.
type SessionConfig struct {
	// KeyUpdateThreshold: packets sent under one key before the sender
	// updates keys. 0 = DefaultKeyUpdateThreshold* for the suite. Tests set it
	// small to cross key updates.
	KeyUpdateThreshold uint64
	// KeyUpdateGrace: how long the previous phase's keys stay usable.
	KeyUpdateGrace time.Duration
}

// Session is an established secure session: it protects and unprotects
// 1-RTT packets for one connection. It is not safe for concurrent use; a
// connection owns its Session.
type Session struct {
	suite     Suite
	initiator bool
	connID    uint64
	peer      PublicKey
	hash      [32]byte
	resume    [32]byte
	ticketSeq uint64

	// sending
	sendHP      headerProtector
	send        phaseKeys
	sendPhase   uint64
	sentInPhase uint64
	nextPN      uint64
	// first packet number sent in the current send phase, and whether the
	// peer acknowledged one of the packets sent since
	phaseStartPN uint64
	phaseAcked   bool

	// receiving
	recvHP        headerProtector
	recvCur       phaseKeys
	recvNext      phaseKeys
	recvPrev      phaseKeys
	havePrev      bool
	prevDeadline  time.Time
	recvPhase     uint64
	phaseFirstPN  uint64
	window        ReplayWindow
	authFailures  uint64
	integrityLim  uint64
	threshold     uint64
	hardLimit     uint64
	grace         time.Duration
	amp           AmplificationLimit
	confirmed     bool
	refill        *EphemeralPool // responder: the pool to signal on confirmation
	earlyAccepted bool
	closed        bool
	finished      [32]byte    // InitiatorFinish MAC key (responder)
	tickets       *TicketKeys // responder: issues tickets

	// scratch space, kept here so the hot path does not allocate
	nonceBuf [ivLen]byte
	maskBuf  [16]byte
}

func newSession(suite Suite, initiator bool, connID uint64, peer PublicKey, sec *handshakeSecrets, cfg SessionConfig) (*Session, error) {
	s := &Session{suite: suite, initiator: initiator, connID: connID, peer: peer, hash: sec.hash, resume: sec.resumption}
	sendSecret, recvSecret := sec.r2i, sec.i2r
	if initiator {
		sendSecret, recvSecret = sec.i2r, sec.r2i
	}
	// One keyed HMAC per secret serves all its labels.
	se, re := newExpander(sendSecret[:]), newExpander(recvSecret[:])
	defer se.wipe()
	defer re.wipe()
	var hp [keyLen]byte
	defer clear(hp[:])
	var err error
	se.expandTo(hp[:], labelHP)
	if s.sendHP, err = newHeaderProtector(suite, hp[:]); err != nil {
		return nil, err
	}
	re.expandTo(hp[:], labelHP)
	if s.recvHP, err = newHeaderProtector(suite, hp[:]); err != nil {
		return nil, err
	}
	if s.send, err = derivePhaseKeysWith(suite, sendSecret, se); err != nil {
		return nil, err
	}
	if s.recvCur, err = derivePhaseKeysWith(suite, recvSecret, re); err != nil {
		return nil, err
	}
	// The next phase's keys are derived when a packet of that phase first
	// comes (most connections never update keys): its secret only, now.
	s.recvNext = phaseKeys{secret: re.expand32(labelKeyUpdate)}
	s.threshold = cfg.KeyUpdateThreshold
	if s.threshold == 0 {
		s.threshold = DefaultKeyUpdateThresholdChaCha
		if suite == SuiteAES256GCM {
			s.threshold = DefaultKeyUpdateThresholdAESGCM
		}
	}
	if s.threshold > HardPacketsPerKey/2 {
		s.threshold = HardPacketsPerKey / 2
	}
	s.hardLimit = 2 * s.threshold
	s.grace = cfg.KeyUpdateGrace
	if s.grace <= 0 {
		s.grace = DefaultKeyUpdateGrace
	}
	s.integrityLim = integrityLimitChaCha
	if suite == SuiteAES256GCM {
		s.integrityLim = integrityLimitAESGCM
	}
	if initiator {
		// The initiator chose the address itself; the responder proved it
		// holds its key by answering.
		s.amp.Validate()
		s.confirmed = true
	}
	return s, nil
}

// Suite returns the negotiated cipher suite.
func (s *Session) Suite() Suite { return s.suite }

// ConnID returns the connection ID carried in every packet.
func (s *Session) ConnID() uint64 { return s.connID }

// Peer returns the authenticated static public key of the peer.
func (s *Session) Peer() PublicKey { return s.peer }

// HandshakeHash returns the Noise handshake hash, usable as channel binding.
func (s *Session) HandshakeHash() [32]byte { return s.hash }

// IsInitiator reports which side of the handshake this session is.
func (s *Session) IsInitiator() bool { return s.initiator }

// confirm marks the handshake confirmed: the initiator's address is
// validated, and the ephemeral pool's held-back refill may start.
func (s *Session) confirm() {
	s.confirmed = true
	s.amp.Validate()
	if s.refill != nil {
		s.refill.signalLow()
		s.refill = nil
	}
}

// Confirmed reports whether the handshake is confirmed: always for the
// initiator; for the responder once InitiatorFinish or any 1-RTT packet from
// the initiator authenticated.
func (s *Session) Confirmed() bool { return s.confirmed }

// EarlyDataAccepted reports whether the responder accepted 0-RTT data.
func (s *Session) EarlyDataAccepted() bool { return s.earlyAccepted }

// KeyPhase returns the send and receive key phase counters.
func (s *Session) KeyPhase() (send, recv uint64) { return s.sendPhase, s.recvPhase }

// NextPacketNumber returns the packet number the next Seal will use.
func (s *Session) NextPacketNumber() uint64 { return s.nextPN }

// Amplification exposes the session's anti-amplification accounting, so
// the connection can also count datagrams it drops before Open.
func (s *Session) Amplification() *AmplificationLimit { return &s.amp }

// OnPacketAcked tells the session that the peer acknowledged packet pn.
// As in RFC 9001 §6.1, a new key update waits until a packet sent under the
// current keys was acknowledged (and the peer was seen using them), so the
// one-bit KEY_PHASE can never skip a phase at the receiver.
func (s *Session) OnPacketAcked(pn uint64) {
	if pn >= s.phaseStartPN && pn < s.nextPN {
		s.phaseAcked = true
	}
}

// canUpdate: the peer received our current phase (ack) and sends in it.
func (s *Session) canUpdate() bool { return s.phaseAcked && s.sendPhase == s.recvPhase }

// UpdateKeys starts a key update now: the next sealed packet uses the next
// key phase and flips KEY_PHASE. It fails with ErrState until a packet of
// the current phase has been acknowledged (OnPacketAcked) and the peer has
// followed the previous update.
func (s *Session) UpdateKeys() error {
	if !s.canUpdate() {
		return newError(KindState, "previous key phase not yet acknowledged and followed by peer", nil)
	}
	return s.advanceSend()
}

func (s *Session) advanceSend() error {
	nk, err := s.send.next(s.suite)
	if err != nil {
		return err
	}
	s.send.wipe()
	s.send = nk
	s.sendPhase++
	s.sentInPhase = 0
	s.phaseStartPN = s.nextPN
	s.phaseAcked = false
	return nil
}

// Seal protects one packet: it writes header, ciphertext and tag into
// dst[:len(payload)+PacketOverhead] (dst needs that capacity) and returns
// the packet and its packet number. payload may be dst[32:32+len(payload)]
// (sealed in place) or any buffer not overlapping dst. flags may contain
// ACK_ELICITING, ACK and PROBE; KEY_PHASE is set by the session.
func (s *Session) Seal(dst []byte, flags uint8, payload []byte) ([]byte, uint64, error) {
	n := len(payload) + PacketOverhead
	if cap(dst) < n {
		return nil, 0, ErrBufferTooSmall
	}
	pkt := dst[:n]
	if len(payload) > 0 && &pkt[wire.PacketHeaderLen] != &payload[0] {
		copy(pkt[wire.PacketHeaderLen:], payload)
	}
	pn, err := s.sealInPlace(pkt, flags)
	if err != nil {
		return nil, 0, err
	}
	return pkt, pn, nil
}

// Close wipes the session's keys (best effort: Go may have copied them);
// later Seal and Open calls fail with ErrState.
func (s *Session) Close() {
	s.closed = true
	s.send.wipe()
	s.recvCur.wipe()
	s.recvNext.wipe()
	s.recvPrev.wipe()
	s.havePrev = false
	clear(s.resume[:])
	clear(s.finished[:])
	s.sendHP = headerProtector{}
	s.recvHP = headerProtector{}
}

// sealInPlace seals pkt, whose plaintext is pkt[32:len(pkt)-16].
func (s *Session) sealInPlace(pkt []byte, flags uint8) (uint64, error) {
	if s.closed {
		return 0, ErrState
	}
	plen := len(pkt) - PacketOverhead
	if plen < 0 {
		return 0, ErrBufferTooSmall
	}
	if plen > MaxPayload {
		return 0, newError(KindInvalidArgument, "payload longer than 65535 bytes", nil)
	}
	if flags&^sealFlags != 0 {
		return 0, newError(KindInvalidArgument, "flags outside ACK_ELICITING|ACK|PROBE", nil)
	}
	if s.sentInPhase >= s.threshold && s.canUpdate() {
		if err := s.advanceSend(); err != nil {
			return 0, err
		}
	}
	if s.sentInPhase >= s.hardLimit {
		return 0, ErrExhausted
	}
	pn := s.nextPN
	if pn > MaxPacketNumber {
		return 0, ErrExhausted
	}
	if err := s.amp.TrySend(len(pkt)); err != nil {
		return 0, err
	}
	if s.sendPhase&1 == 1 {
		flags |= wire.PacketFlagKeyPhase
	}
	hdr := pkt[:wire.PacketHeaderLen]
	binary.LittleEndian.PutUint64(hdr[wire.PacketOffsetConnID:], s.connID)
	binary.LittleEndian.PutUint64(hdr[wire.PacketOffsetPacketNumber:], pn)
	hdr[wire.PacketOffsetFlags] = flags
	hdr[wire.PacketOffsetReserved] = 0
	binary.LittleEndian.PutUint16(hdr[wire.PacketOffsetPayloadLen:], uint16(plen))
	clear(hdr[wire.PacketOffsetNonce:])

	s.send.nonce(&s.nonceBuf, pn)
	body := pkt[wire.PacketHeaderLen : wire.PacketHeaderLen+plen]
	s.send.aead.Seal(body[:0], s.nonceBuf[:], body, hdr)
	s.nextPN++
	s.sentInPhase++

	s.sendHP.mask(&s.maskBuf, pkt[wire.PacketHeaderLen:wire.PacketHeaderLen+sampleLen])
	applyMask(hdr, &s.maskBuf)
	return pn, nil
}

// applyMask XORs the packet number with mask[0:8] and the protected flag
// bits with mask[8]. It is its own inverse.
func applyMask(hdr []byte, mask *[16]byte) {
	pn := hdr[wire.PacketOffsetPacketNumber : wire.PacketOffsetPacketNumber+8]
	for i := range pn {
		pn[i] ^= mask[i]
	}
	hdr[wire.PacketOffsetFlags] ^= mask[8] & hpFlagMask
}

// Opened describes a packet that Open authenticated.
type Opened struct {
	PacketNumber uint64
	Flags        uint8 // unprotected flags, including KEY_PHASE
	Payload      []byte
}

// Open authenticates and decrypts one protected packet in place (pkt is
// modified: header unmasked, payload decrypted) and returns the payload,
// which aliases pkt. The datagram must hold exactly one packet. The
// anti-replay window is checked after authentication. now drives the grace
// period of the previous key phase.
func (s *Session) Open(pkt []byte, now time.Time) (Opened, error) {
	s.amp.OnReceive(len(pkt))
	if s.closed {
		return Opened{}, ErrState
	}
	if s.authFailures >= s.integrityLim {
		return Opened{}, ErrIntegrityLimit
	}
	if len(pkt) < PacketOverhead {
		return Opened{}, ErrMalformed
	}
	hdr := pkt[:wire.PacketHeaderLen]
	if hdr[wire.PacketOffsetFlags]&wire.PacketFlagHandshake != 0 || hdr[wire.PacketOffsetReserved] != 0 {
		return Opened{}, ErrMalformed
	}
	plen := int(binary.LittleEndian.Uint16(hdr[wire.PacketOffsetPayloadLen:]))
	if len(pkt) != plen+PacketOverhead {
		return Opened{}, ErrMalformed
	}
	if binary.LittleEndian.Uint64(hdr[wire.PacketOffsetConnID:]) != s.connID {
		return Opened{}, ErrMalformed
	}
	if s.havePrev && !now.Before(s.prevDeadline) {
		s.recvPrev.wipe()
		s.havePrev = false
	}

	s.recvHP.mask(&s.maskBuf, pkt[wire.PacketHeaderLen:wire.PacketHeaderLen+sampleLen])
	applyMask(hdr, &s.maskBuf)
	pn := binary.LittleEndian.Uint64(hdr[wire.PacketOffsetPacketNumber:])
	flags := hdr[wire.PacketOffsetFlags]

	// Pick the key: same phase bit -> current keys; otherwise the previous
	// phase if pn is older than the current phase's first packet, else next.
	const (
		useCur = iota
		usePrev
		useNext
	)
	which := useCur
	keys := &s.recvCur
	if (flags&wire.PacketFlagKeyPhase != 0) != (s.recvPhase&1 == 1) {
		if s.recvPhase > 0 && pn < s.phaseFirstPN {
			if !s.havePrev {
				return Opened{}, ErrKeyPhase
			}
			which, keys = usePrev, &s.recvPrev
		} else {
			which, keys = useNext, &s.recvNext
			if keys.aead == nil {
				k, err := derivePhaseKeys(s.suite, keys.secret)
				if err != nil {
					return Opened{}, err
				}
				*keys = k
			}
		}
	}
	keys.nonce(&s.nonceBuf, pn)
	body := pkt[wire.PacketHeaderLen:]
	plain, err := keys.aead.Open(body[:0], s.nonceBuf[:], body, hdr)
	if err != nil {
		s.authFailures++
		return Opened{}, ErrAuthFailed
	}
	if err := s.window.Accept(pn); err != nil {
		return Opened{}, err
	}
	switch which {
	case useNext:
		if err := s.promote(pn, now); err != nil {
			return Opened{}, err
		}
	case useCur:
		if pn < s.phaseFirstPN {
			s.phaseFirstPN = pn
		}
	}
	if !s.confirmed {
		s.confirm()
	}
	return Opened{PacketNumber: pn, Flags: flags, Payload: plain}, nil
}

// promote moves the receive side to the next key phase after a packet of
// that phase authenticated, and makes the send side follow.
func (s *Session) promote(pn uint64, now time.Time) error {
	nn := s.recvNext.nextSecret()
	s.recvPrev.wipe()
	s.recvPrev = s.recvCur
	s.havePrev = true
	s.prevDeadline = now.Add(s.grace)
	s.recvCur = s.recvNext
	s.recvNext = nn
	s.recvPhase++
	s.phaseFirstPN = pn
	for s.sendPhase < s.recvPhase {
		if err := s.advanceSend(); err != nil {
			return err
		}
	}
	return nil
}

// BatchPacket is one packet of a SealBatch or OpenBatch call.
//
// SealBatch: put the plaintext at Buf[32:32+Len] with cap(Buf) >= Len+48 and
// set Flags; on return Buf is the protected packet (Buf[:Len+48]) and PN its
// packet number.
//
// OpenBatch: Buf is a received packet; on return Payload aliases the
// decrypted payload inside Buf, Flags and PN are unprotected, and Err is the
// packet's verdict (nil when accepted).
type BatchPacket struct {
	Buf     []byte
	Len     int
	Flags   uint8
	PN      uint64
	Payload []byte
	Err     error
}

// SealBatch seals pkts in order with the session's current cipher state
// and without allocating. It stops at the first failure and returns how many
// packets were sealed together with that error.
func (s *Session) SealBatch(pkts []BatchPacket) (int, error) {
	for i := range pkts {
		p := &pkts[i]
		n := p.Len + PacketOverhead
		if p.Len < 0 || cap(p.Buf) < n {
			return i, ErrBufferTooSmall
		}
		p.Buf = p.Buf[:n]
		pn, err := s.sealInPlace(p.Buf, p.Flags)
		if err != nil {
			return i, err
		}
		p.PN = pn
	}
	return len(pkts), nil
}

// OpenBatch opens every packet of pkts in place, recording each verdict in
// its Err field, and returns the number accepted. It does not allocate.
func (s *Session) OpenBatch(pkts []BatchPacket, now time.Time) int {
	ok := 0
	for i := range pkts {
		p := &pkts[i]
		o, err := s.Open(p.Buf, now)
		p.Err = err
		if err != nil {
			p.Payload = nil
			continue
		}
		p.PN, p.Flags, p.Payload = o.PacketNumber, o.Flags, o.Payload
		ok++
	}
	return ok
}
