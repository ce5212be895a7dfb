package crypto

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"net/netip"
	"time"

	"github.com/flynn/noise"
	"github.com/mxp-dataplane/mxp/wire"
	"golang.org/x/crypto/chacha20poly1305"
)

// NoiseProtocolName is the Noise protocol of handshake messages one and two.
const NoiseProtocolName = "Noise_IK_25519_ChaChaPoly_SHA256"

// prologueLabel starts the Noise prologue; the conn ID (u64 LE) follows, so
// the handshake is bound to the connection it sets up.
const prologueLabel = "mxp/1 handshake"

// DefaultMaxEarlyData bounds 0-RTT data; what fits in one InitiatorHello.
const DefaultMaxEarlyData = 1024

// Config is the configuration of one endpoint, shared by its Initiators and
// its Responder. Fields marked responder-only are ignored by initiators.
type Config struct {
	// Identity is this endpoint's long-term static key pair. Required.
	Identity Identity
	// Rand supplies all randomness (crypto/rand.Reader when nil).
	Rand io.Reader
	// Suites lists the cipher suites this endpoint accepts. nil means
	// both. The order does not matter: negotiation follows the hardware rule.
	Suites []Suite
	// AES says whether to claim hardware AES (AESAuto: detect).
	AES AESPolicy
	// Session is the key update policy of the sessions created.
	Session SessionConfig

	// Authorize is the responder's allow-list hook: it is called with the
	// authenticated static key of each initiator, and a false result
	// refuses the handshake (ErrPeerRefused). nil accepts everyone.
	Authorize func(peer PublicKey) bool
	// TicketKeys enables session tickets and 0-RTT (responder-only).
	TicketKeys *TicketKeys
	// Strike makes 0-RTT single-use (responder-only). With TicketKeys set and
	// Strike nil, 0-RTT data is always rejected.
	Strike *StrikeRegister
	// MaxEarlyData bounds accepted 0-RTT data (default DefaultMaxEarlyData).
	MaxEarlyData int
	// StaticCache, when set, caches the static-static DH per peer so repeat
	// handshakes cost 4 X25519 operations per side instead of 5.
	StaticCache *StaticSecretCache
	// Ephemerals, when set, supplies ephemeral key pairs generated ahead
	// of time (the owner refills it off the critical path): one X25519
	// operation fewer per handshake on the critical path, two for a peer
	// met recently (its DH with the peer's static key — the initiator's
	// es, the responder's se — is precomputed too).
	Ephemerals *EphemeralPool
	// ParallelDH computes the two independent Diffie-Hellman values of a
	// handshake step (ee and se; an initiator's es and ss on first contact)
	// at once, one on a helper goroutine that lives only for that
	// computation, when GOMAXPROCS > 1. The results are the same either
	// way. It only pays when a core is idle: the helper must start within
	// one scalar multiplication. On the shared 2-core test machine it
	// almost never did (docs/crypto.md, "Cost"), so it is off by default;
	// runPair also falls back to sequential by itself while helpers keep
	// starting late.
	ParallelDH bool
}

func randOrDefault(r io.Reader) io.Reader {
	if r == nil {
		return rand.Reader
	}
	return r
}

func (c *Config) suites() []Suite {
	if len(c.Suites) == 0 {
		if c.AES.hardware() {
			return []Suite{SuiteAES256GCM, SuiteChaCha20Poly1305}
		}
		return []Suite{SuiteChaCha20Poly1305, SuiteAES256GCM}
	}
	return c.Suites
}

func (c *Config) check() error {
	if c == nil || c.Identity.Public.IsZero() {
		return newError(KindInvalidArgument, "config needs an Identity", nil)
	}
	if len(c.Suites) > maxSuites {
		return newError(KindInvalidArgument, "too many suites", nil)
	}
	for _, s := range c.Suites {
		if !s.valid() {
			return newError(KindInvalidArgument, "unknown suite "+s.String(), nil)
		}
	}
	return nil
}

func prologue(connID uint64) []byte {
	p := make([]byte, 0, len(prologueLabel)+8)
	p = append(p, prologueLabel...)
	return binary.LittleEndian.AppendUint64(p, connID)
}

func finishedMAC(key [32]byte, hash [32]byte) [32]byte {
	m := hmac.New(sha256.New, key[:])
	m.Write(hash[:])
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// earlyKey derives the 0-RTT key from a ticket's resumption secret, bound
// to the initiator's ephemeral key and the connection ID: a fresh key per
// hello, so the all-zero AEAD nonce is used once per key.
func earlyKey(secret [32]byte, ephemeral []byte, connID uint64) []byte {
	ctx := binary.LittleEndian.AppendUint64(append([]byte(nil), ephemeral...), connID)
	return expand(secret[:], label0RTT, ctx, keyLen)
}

func splitSecrets(hs *noise.HandshakeState, cs1, cs2 *noise.CipherState) handshakeSecrets {
	k1, k2 := cs1.UnsafeKey(), cs2.UnsafeKey()
	s := deriveHandshakeSecrets(hs.ChannelBinding(), k1, k2)
	clear(k1[:])
	clear(k2[:])
	return s
}

// Initiator runs the initiator side of one handshake. Use it once.
type Initiator struct {
	cfg    *Config
	peer   PublicKey
	connID uint64
	hs     *noise.HandshakeState
	dh     *handshakeDH
	noise  []byte // Noise message 1, built once, resent unchanged
	ticket *Ticket
	early  []byte
	offer  []Suite

	mac1Key    [32]byte
	cookieKey  [32]byte
	lastMAC1   [macLen]byte
	sentHello  bool
	cookie     [cookieLen]byte
	cookieAt   time.Time
	haveCookie bool
	done       bool
}

// NewInitiator prepares a handshake with the responder whose static key is
// peer, for the connection connID (chosen by the caller, e.g. at random).
func NewInitiator(cfg *Config, peer PublicKey, connID uint64) (*Initiator, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if peer.IsZero() {
		return nil, newError(KindInvalidArgument, "responder key required", nil)
	}
	peerBytes := append([]byte(nil), peer[:]...)
	dh, err := newHandshakeDH(cfg, func() []byte { return peerBytes })
	if err != nil {
		return nil, err
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   dh.suite(),
		Random:        randOrDefault(cfg.Rand),
		Pattern:       noise.HandshakeIK,
		Initiator:     true,
		Prologue:      prologue(connID),
		StaticKeypair: noise.DHKey{Private: cfg.Identity.Private[:], Public: cfg.Identity.Public[:]},
		PeerStatic:    peer[:],
	})
	if err != nil {
		return nil, newError(KindHandshake, "noise", err)
	}
	return &Initiator{
		cfg: cfg, peer: peer, connID: connID, hs: hs, dh: dh, offer: cfg.suites(),
		mac1Key: hashKey(labelMAC1, peer), cookieKey: hashKey(labelCookie, peer),
	}, nil
}

// UseTicket asks for resumption with 0-RTT: early is sent encrypted in the
// InitiatorHello. Call before the first Hello. Only send 0-RTT data that is
// safe to replay and safe without forward secrecy (see docs/crypto.md); if
// the responder rejects it (Session.EarlyDataAccepted false) send it again
// as 1-RTT data. The ticket must not be used again.
func (i *Initiator) UseTicket(t *Ticket, early []byte, now time.Time) error {
	if i.sentHello {
		return newError(KindState, "UseTicket after Hello", nil)
	}
	if t == nil || len(t.Blob) != ticketBlobLen || !t.Peer.Equal(i.peer) || !t.Suite.valid() {
		return newError(KindTicket, "ticket not for this responder", nil)
	}
	if !now.Before(t.Expires) {
		return newError(KindTicket, "ticket expired", nil)
	}
	noiseLen := noiseMsg1Min + len(appendHelloPayload(nil, i.offer, false))
	if helloPacketLen(noiseLen, len(t.Blob), len(early)+tagLen) > MaxHelloPacket {
		return newError(KindInvalidArgument, "0-RTT data does not fit in the InitiatorHello", nil)
	}
	i.ticket = t
	i.early = append([]byte(nil), early...)
	return nil
}

// Hello returns the InitiatorHello packet to send. The first call runs the
// Noise write; later calls (retransmission, or after a CookieReply) return
// the same message with fresh MACs, including mac2 while a cookie is valid.
func (i *Initiator) Hello(now time.Time) ([]byte, error) {
	if i.done {
		return nil, newError(KindState, "handshake finished", nil)
	}
	if !i.sentHello {
		if err := i.dh.prepareHello(i.peer, randOrDefault(i.cfg.Rand)); err != nil {
			return nil, err
		}
		payload := appendHelloPayload(nil, i.offer, i.cfg.AES.hardware())
		msg, _, _, err := i.hs.WriteMessage(nil, payload)
		i.dh.clearPre()
		if err != nil {
			return nil, newError(KindHandshake, "noise write", err)
		}
		i.noise = msg
		i.sentHello = true
	}
	var ticket, early []byte
	earlyCT := 0
	if i.ticket != nil {
		ticket = i.ticket.Blob
		early = i.early
		earlyCT = len(early) + tagLen
	}
	pktLen := helloPacketLen(len(i.noise), len(ticket), earlyCT)
	if pktLen > MaxHelloPacket {
		return nil, newError(KindInvalidArgument, "0-RTT data does not fit in the InitiatorHello", nil)
	}
	pkt := make([]byte, 0, pktLen)
	pkt = appendHandshakeHeader(pkt, i.connID, pktLen-wire.PacketHeaderLen)
	pkt = append(pkt, MsgInitiatorHello, HandshakeVersion)
	pkt = binary.LittleEndian.AppendUint16(pkt, uint16(len(i.noise)))
	pkt = append(pkt, i.noise...)
	pkt = binary.LittleEndian.AppendUint16(pkt, uint16(len(ticket)))
	pkt = append(pkt, ticket...)
	if i.ticket != nil {
		aad := pkt[:len(pkt):len(pkt)]
		pkt = binary.LittleEndian.AppendUint16(pkt, uint16(earlyCT))
		key := earlyKey(i.ticket.Secret, i.hs.LocalEphemeral().Public, i.connID)
		a, err := newAEAD(i.ticket.Suite, key)
		clear(key)
		if err != nil {
			return nil, err
		}
		var zero [ivLen]byte
		pkt = a.Seal(pkt, zero[:], early, aad)
	} else {
		pkt = binary.LittleEndian.AppendUint16(pkt, 0)
	}
	pkt = pkt[:pktLen-2*macLen] // zero padding (fresh slice memory)
	i.lastMAC1 = mac(i.mac1Key[:], pkt)
	pkt = append(pkt, i.lastMAC1[:]...)
	var mac2 [macLen]byte
	if i.haveCookie && now.Sub(i.cookieAt) < CookieLifetime {
		mac2 = mac(i.cookie[:], pkt)
	}
	pkt = append(pkt, mac2[:]...)
	return pkt, nil
}

// helloPacketLen is the size of an InitiatorHello packet, padding included.
func helloPacketLen(noiseLen, ticketLen, earlyCTLen int) int {
	n := wire.PacketHeaderLen + 2 + 2 + noiseLen + 2 + ticketLen + 2 + earlyCTLen + 2*macLen
	return max(n, MinHelloPacket)
}

// HandleCookieReply stores the cookie of a CookieReply answering our last
// Hello. The caller then sends Hello again (after a back-off of its choice).
func (i *Initiator) HandleCookieReply(pkt []byte, now time.Time) error {
	if !i.sentHello || i.done {
		return newError(KindState, "no hello outstanding", nil)
	}
	m, err := parseCookieReply(pkt)
	if err != nil {
		return err
	}
	if m.connID != i.connID {
		return newError(KindMalformed, "conn ID", nil)
	}
	c, err := openCookie(i.cookieKey, m.nonce, m.sealed, i.lastMAC1[:])
	if err != nil {
		return err
	}
	i.cookie, i.cookieAt, i.haveCookie = c, now, true
	return nil
}

// HandleResponderHello completes the handshake: it authenticates the
// responder, returns the established Session and the InitiatorFinish packet
// to send. A forged ResponderHello is rejected without spoiling the
// Initiator, which can still process the genuine one.
func (i *Initiator) HandleResponderHello(pkt []byte, now time.Time) (*Session, []byte, error) {
	if !i.sentHello || i.done {
		return nil, nil, newError(KindState, "no hello outstanding", nil)
	}
	m, err := parseResponderHello(pkt)
	if err != nil {
		return nil, nil, err
	}
	if m.connID != i.connID {
		return nil, nil, newError(KindMalformed, "conn ID", nil)
	}
	i.dh.prepareFinish(m.noise)
	payload, cs1, cs2, err := i.hs.ReadMessage(nil, m.noise)
	i.dh.clearPre()
	if err != nil {
		return nil, nil, newError(KindAuthFailed, "ResponderHello", err)
	}
	if cs1 == nil || cs2 == nil {
		return nil, nil, newError(KindHandshake, "noise did not split", nil)
	}
	rp, err := parseResponderPayload(payload)
	if err != nil {
		return nil, nil, err
	}
	offered := false
	for _, s := range i.offer {
		offered = offered || s == rp.suite
	}
	if !offered {
		return nil, nil, newError(KindNoCommonSuite, "responder chose a suite we did not offer", nil)
	}
	if rp.earlyAccepted && i.ticket == nil {
		return nil, nil, newError(KindHandshake, "0-RTT accepted but none sent", nil)
	}
	i.dh.commit() // the responder is authenticated now
	sec := splitSecrets(i.hs, cs1, cs2)
	s, err := newSession(rp.suite, true, i.connID, i.peer, &sec, i.cfg.Session)
	if err != nil {
		return nil, nil, err
	}
	s.earlyAccepted = rp.earlyAccepted
	conf := finishedMAC(sec.finished, sec.hash)
	fin := appendHandshakeHeader(make([]byte, 0, wire.PacketHeaderLen+finishLen), i.connID, finishLen)
	fin = append(fin, MsgInitiatorFinish, HandshakeVersion)
	fin = append(fin, conf[:]...)
	clear(sec.finished[:])
	i.done = true
	i.dh.signalRefill() // past the initiator's critical path
	return s, fin, nil
}

// Responder answers handshakes for one static identity. It keeps no state
// per handshake attempt: HandleInitiatorHello returns either a stateless
// CookieReply or a Session. It is not safe for concurrent use.
type Responder struct {
	cfg       *Config
	mac1Key   [32]byte
	cookieKey [32]byte
	cookies   *cookieJar
}

// NewResponder makes a responder for cfg.Identity.
func NewResponder(cfg *Config) (*Responder, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	return &Responder{
		cfg:       cfg,
		mac1Key:   hashKey(labelMAC1, cfg.Identity.Public),
		cookieKey: hashKey(labelCookie, cfg.Identity.Public),
		cookies:   newCookieJar(cfg.Rand),
	}, nil
}

// HelloResult is the outcome of HandleInitiatorHello.
type HelloResult struct {
	// Reply is the packet to send back: a ResponderHello, or a CookieReply
	// when CookieReply is true.
	Reply []byte
	// CookieReply is true when the responder is under load and the hello had
	// no valid mac2: no handshake state was created.
	CookieReply bool
	// Session is the new (not yet confirmed) session, nil for a CookieReply.
	Session *Session
	// EarlyData is the 0-RTT data, when accepted.
	EarlyData []byte
	// EarlyRefused is true when the hello carried 0-RTT data that was not
	// accepted (no ticket keys or strike register, an unknown, expired or
	// foreign ticket, data that did not authenticate, a ticket used before,
	// a full strike register): the initiator sends it again after the
	// handshake.
	EarlyRefused bool
}

// HandleInitiatorHello processes an InitiatorHello packet from addr.
// underLoad is the caller's load signal: when true, hellos without a valid
// cookie (mac2) get a CookieReply and cost no Diffie-Hellman and no state.
//
// The checks run cheapest first: packet layout and size, mac1 (proves the
// sender knows our public key), cookie when under load, then Noise.
func (r *Responder) HandleInitiatorHello(pkt []byte, addr netip.AddrPort, now time.Time, underLoad bool) (HelloResult, error) {
	m, err := parseInitiatorHello(pkt)
	if err != nil {
		return HelloResult{}, err
	}
	want := mac(r.mac1Key[:], m.mac1Input)
	if !hmac.Equal(want[:], m.mac1) {
		return HelloResult{}, newError(KindAuthFailed, "mac1", nil)
	}
	// A valid cookie proves the sender receives at addr. Under load it is
	// required; otherwise it is checked only when present.
	addrValid := false
	if underLoad || !isZero(m.mac2) {
		addrValid = r.cookies.validMAC2(addr, m.mac2Input, m.mac2, now)
	}
	if underLoad && !addrValid {
		reply, err := r.cookieReply(m, addr, now)
		if err != nil {
			return HelloResult{}, err
		}
		return HelloResult{Reply: reply, CookieReply: true}, nil
	}

	var hs *noise.HandshakeState
	dh, err := newHandshakeDH(r.cfg, func() []byte { return hs.PeerStatic() })
	if err != nil {
		return HelloResult{}, err
	}
	hs, err = noise.NewHandshakeState(noise.Config{
		CipherSuite:   dh.suite(),
		Random:        randOrDefault(r.cfg.Rand),
		Pattern:       noise.HandshakeIK,
		Initiator:     false,
		Prologue:      prologue(m.connID),
		StaticKeypair: noise.DHKey{Private: r.cfg.Identity.Private[:], Public: r.cfg.Identity.Public[:]},
	})
	if err != nil {
		return HelloResult{}, newError(KindHandshake, "noise", err)
	}
	payload, _, _, err := hs.ReadMessage(nil, m.noise)
	if err != nil {
		return HelloResult{}, newError(KindAuthFailed, "InitiatorHello", err)
	}
	var peer PublicKey
	copy(peer[:], hs.PeerStatic())
	if r.cfg.Authorize != nil && !r.cfg.Authorize(peer) {
		return HelloResult{}, ErrPeerRefused
	}
	// Message 1 authenticated the initiator's static key (the payload
	// decrypted under a key that depends on ss), and the peer is allowed.
	dh.commit()
	hp, err := parseHelloPayload(payload)
	if err != nil {
		return HelloResult{}, err
	}
	suite, ok := negotiateSuite(hp.list(), hp.hwAES, r.cfg.suites(), r.cfg.AES.hardware())
	if !ok {
		return HelloResult{}, ErrNoCommonSuite
	}

	early := r.acceptEarly(&m, peer, hs.PeerEphemeral(), now)

	var flags byte
	if early != nil {
		flags = 1
	}
	if err := dh.prepareReply(hs.PeerEphemeral(), hs.PeerStatic(), randOrDefault(r.cfg.Rand)); err != nil {
		return HelloResult{}, err
	}
	msg2, cs1, cs2, err := hs.WriteMessage(nil, []byte{byte(suite), flags})
	dh.clearPre()
	if err != nil || cs1 == nil || cs2 == nil {
		return HelloResult{}, newError(KindHandshake, "noise write", err)
	}
	sec := splitSecrets(hs, cs1, cs2)
	s, err := newSession(suite, false, m.connID, peer, &sec, r.cfg.Session)
	if err != nil {
		return HelloResult{}, err
	}
	s.finished = sec.finished
	s.tickets = r.cfg.TicketKeys
	if dh.refill {
		// Refill once the initiator confirmed: until then the initiator is
		// computing its last DHs, and the session may never confirm.
		s.refill, dh.refill = dh.pool, false
	}
	s.earlyAccepted = early != nil
	s.amp.OnReceive(len(pkt))
	if addrValid {
		s.amp.Validate()
	}
	msgLen := 2 + 2 + len(msg2)
	reply := appendHandshakeHeader(make([]byte, 0, wire.PacketHeaderLen+msgLen), m.connID, msgLen)
	reply = append(reply, MsgResponderHello, HandshakeVersion)
	reply = binary.LittleEndian.AppendUint16(reply, uint16(len(msg2)))
	reply = append(reply, msg2...)
	if err := s.amp.TrySend(len(reply)); err != nil {
		return HelloResult{}, err
	}
	return HelloResult{Reply: reply, Session: s, EarlyData: early, EarlyRefused: early == nil && len(m.early) > 0}, nil
}

// acceptEarly returns the decrypted 0-RTT data, or nil when there is none
// or it is rejected (unknown/expired ticket, ticket of another initiator,
// bad tag, replay, no strike register). Rejection is not an error: the
// handshake continues and the initiator resends the data as 1-RTT.
func (r *Responder) acceptEarly(m *initiatorHello, peer PublicKey, ephemeral []byte, now time.Time) []byte {
	if len(m.ticket) == 0 || len(m.early) == 0 || r.cfg.TicketKeys == nil || r.cfg.Strike == nil {
		return nil
	}
	maxEarly := r.cfg.MaxEarlyData
	if maxEarly <= 0 {
		maxEarly = DefaultMaxEarlyData
	}
	if len(m.early)-tagLen > maxEarly {
		return nil
	}
	tc, err := r.cfg.TicketKeys.open(m.ticket, now)
	if err != nil || !tc.initiator.Equal(peer) {
		return nil
	}
	key := earlyKey(tc.secret, ephemeral, m.connID)
	a, err := newAEAD(tc.suite, key)
	clear(key)
	if err != nil {
		return nil
	}
	var zero [ivLen]byte
	plain, err := a.Open(nil, zero[:], m.early, m.earlyAAD)
	if err != nil {
		return nil
	}
	// Strike only authentic attempts, so a forged copy cannot burn a ticket.
	if !r.cfg.Strike.Use(tc.id, tc.expires(), now) {
		return nil
	}
	if plain == nil {
		plain = []byte{}
	}
	return plain
}

func (r *Responder) cookieReply(m initiatorHello, addr netip.AddrPort, now time.Time) ([]byte, error) {
	c, err := r.cookies.cookie(addr, now)
	if err != nil {
		return nil, err
	}
	var nonce [chacha20poly1305.NonceSizeX]byte
	if _, err := io.ReadFull(randOrDefault(r.cfg.Rand), nonce[:]); err != nil {
		return nil, newError(KindInvalidArgument, "cookie nonce randomness", err)
	}
	reply := appendHandshakeHeader(make([]byte, 0, wire.PacketHeaderLen+cookieReplyLn), m.connID, cookieReplyLn)
	reply = append(reply, MsgCookieReply, HandshakeVersion)
	reply = append(reply, nonce[:]...)
	return sealCookie(reply, r.cookieKey, nonce[:], c, m.mac1), nil
}

// HandleInitiatorFinish checks the initiator's key confirmation (responder
// sessions only). Success confirms the handshake and validates the address.
func (s *Session) HandleInitiatorFinish(pkt []byte) error {
	s.amp.OnReceive(len(pkt))
	if s.initiator {
		return newError(KindState, "InitiatorFinish sent to an initiator", nil)
	}
	m, err := parseInitiatorFinish(pkt)
	if err != nil {
		return err
	}
	if m.connID != s.connID {
		return newError(KindMalformed, "conn ID", nil)
	}
	want := finishedMAC(s.finished, s.hash)
	if !hmac.Equal(want[:], m.confirm) {
		return newError(KindAuthFailed, "InitiatorFinish", nil)
	}
	s.confirm()
	return nil
}

// NewTicket issues a session ticket (responder sessions with TicketKeys
// only) and returns the NewTicket message, to be carried to the initiator
// in a Crypto frame of a protected packet.
func (s *Session) NewTicket(now time.Time) ([]byte, error) {
	if s.initiator || s.tickets == nil {
		return nil, newError(KindState, "tickets are issued by responders with TicketKeys", nil)
	}
	// Before the initiator's Finish only when its 0-RTT data was accepted:
	// the hello was then a first use of a ticket issued to the initiator
	// Noise authenticated (the strike register refuses replays), and the
	// ticket travels under the new 1-RTT keys, which only that initiator
	// can read.
	if !s.confirmed && !s.earlyAccepted {
		return nil, newError(KindState, "handshake not confirmed", nil)
	}
	seq := s.ticketSeq
	s.ticketSeq++
	tc := ticketContents{
		suite:     s.suite,
		issued:    now.Unix(),
		lifetime:  uint32(s.tickets.Lifetime() / time.Second),
		initiator: s.peer,
		secret:    ticketSecret(s.resume, seq),
	}
	if err := s.tickets.newID(&tc.id); err != nil {
		return nil, err
	}
	blob, err := s.tickets.seal(&tc, now)
	clear(tc.secret[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, newTicketFixed+2+len(blob))
	out = append(out, MsgNewTicket, HandshakeVersion)
	out = binary.LittleEndian.AppendUint32(out, tc.lifetime)
	out = binary.LittleEndian.AppendUint64(out, seq)
	out = binary.LittleEndian.AppendUint16(out, uint16(len(blob)))
	return append(out, blob...), nil
}

// HandleNewTicket turns a NewTicket message into a Ticket (initiator
// sessions only). now is the receive time the expiry counts from.
func (s *Session) HandleNewTicket(msg []byte, now time.Time) (Ticket, error) {
	if !s.initiator {
		return Ticket{}, newError(KindState, "NewTicket sent to a responder", nil)
	}
	m, err := parseNewTicket(msg)
	if err != nil {
		return Ticket{}, err
	}
	return Ticket{
		Blob:    append([]byte(nil), m.ticket...),
		Secret:  ticketSecret(s.resume, m.seq),
		Peer:    s.peer,
		Suite:   s.suite,
		Expires: now.Add(time.Duration(m.lifetime) * time.Second),
	}, nil
}

func isZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}

func ticketSecret(resume [32]byte, seq uint64) [32]byte {
	return expand32(resume[:], labelTicket, binary.LittleEndian.AppendUint64(nil, seq))
}
