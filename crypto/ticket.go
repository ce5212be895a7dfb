package crypto

import (
	"crypto/cipher"
	"encoding/binary"
	"io"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Ticket blob layout (opaque to the initiator):
//
//	u32 key ID | nonce [24] | XChaCha20-Poly1305(ticket key, nonce, plaintext, AAD = key ID)
//
// plaintext: u8 version | u8 suite | u64 issued (unix seconds) | u32
// lifetime seconds | ticket ID [16] | initiator static key [32] |
// resumption secret [32]
const (
	ticketPlainLen = 1 + 1 + 8 + 4 + 16 + 32 + 32
	ticketBlobLen  = 4 + 24 + ticketPlainLen + tagLen
	ticketVersion  = 1
)

// DefaultTicketRotation is how often TicketKeys rotates when asked to
// rotate automatically; tickets live at most one rotation period.
const DefaultTicketRotation = 12 * time.Hour

// Ticket is what an initiator keeps to resume with a responder: the opaque
// blob, the resumption secret only the two ends know, and its limits.
// Tickets are single-use: use each one for one InitiatorHello only.
type Ticket struct {
	Blob    []byte
	Secret  [32]byte
	Peer    PublicKey // the responder the ticket is for
	Suite   Suite
	Expires time.Time
}

type ticketKey struct {
	id      uint32
	aead    cipher.AEAD
	created time.Time
}

// TicketKeys is the responder's rotating ticket encryption key: tickets are
// sealed under the current key and opened under the current or the previous
// one, so a ticket dies at most two rotations after issue (and earlier if
// its lifetime says so). It is safe for concurrent use: the shards of one
// host share it, since a resuming initiator may reach any of them.
type TicketKeys struct {
	mu       sync.Mutex
	rng      io.Reader
	every    time.Duration
	cur      ticketKey
	prev     ticketKey
	havePrev bool
	nextID   uint32
}

// NewTicketKeys creates a key ring that rotates every `every` (default
// DefaultTicketRotation when 0), with the first key created at now.
func NewTicketKeys(rng io.Reader, now time.Time, every time.Duration) (*TicketKeys, error) {
	if every <= 0 {
		every = DefaultTicketRotation
	}
	t := &TicketKeys{rng: randOrDefault(rng), every: every}
	var id [4]byte
	if _, err := io.ReadFull(t.rng, id[:]); err != nil {
		return nil, newError(KindInvalidArgument, "ticket key randomness", err)
	}
	t.nextID = binary.LittleEndian.Uint32(id[:])
	if err := t.Rotate(now); err != nil {
		return nil, err
	}
	t.havePrev = false
	return t, nil
}

// Rotate makes a fresh current key; the old current key becomes the
// previous one and the old previous key is forgotten.
func (t *TicketKeys) Rotate(now time.Time) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rotate(now)
}

func (t *TicketKeys) rotate(now time.Time) error {
	var k [32]byte
	if _, err := io.ReadFull(t.rng, k[:]); err != nil {
		return newError(KindInvalidArgument, "ticket key randomness", err)
	}
	a, err := chacha20poly1305.NewX(k[:])
	clear(k[:])
	if err != nil {
		return err
	}
	t.prev, t.havePrev = t.cur, t.cur.aead != nil
	t.cur = ticketKey{id: t.nextID, aead: a, created: now}
	t.nextID++
	return nil
}

// newID draws a ticket ID from the key ring's randomness (under its lock:
// a caller-supplied reader need not be safe for concurrent use).
func (t *TicketKeys) newID(id *[16]byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := io.ReadFull(t.rng, id[:]); err != nil {
		return newError(KindInvalidArgument, "ticket ID randomness", err)
	}
	return nil
}

// Lifetime is the longest lifetime a ticket issued now can have.
func (t *TicketKeys) Lifetime() time.Duration { return t.every }

func (t *TicketKeys) maybeRotate(now time.Time) error {
	if now.Sub(t.cur.created) >= t.every {
		return t.rotate(now)
	}
	return nil
}

type ticketContents struct {
	suite     Suite
	issued    int64
	lifetime  uint32
	id        [16]byte
	initiator PublicKey
	secret    [32]byte
}

func (t *TicketKeys) seal(c *ticketContents, now time.Time) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.maybeRotate(now); err != nil {
		return nil, err
	}
	out := make([]byte, 4+24, ticketBlobLen)
	binary.LittleEndian.PutUint32(out, t.cur.id)
	if _, err := io.ReadFull(t.rng, out[4:28]); err != nil {
		return nil, newError(KindInvalidArgument, "ticket nonce randomness", err)
	}
	var p [ticketPlainLen]byte
	p[0] = ticketVersion
	p[1] = byte(c.suite)
	binary.LittleEndian.PutUint64(p[2:], uint64(c.issued))
	binary.LittleEndian.PutUint32(p[10:], c.lifetime)
	copy(p[14:30], c.id[:])
	copy(p[30:62], c.initiator[:])
	copy(p[62:94], c.secret[:])
	out = t.cur.aead.Seal(out, out[4:28], p[:], out[:4])
	clear(p[:])
	return out, nil
}

// open decrypts and checks a ticket blob: key known, authentic, version,
// not expired at now.
func (t *TicketKeys) open(blob []byte, now time.Time) (ticketContents, error) {
	var c ticketContents
	if len(blob) != ticketBlobLen {
		return c, newError(KindTicket, "ticket size", nil)
	}
	id := binary.LittleEndian.Uint32(blob)
	var a cipher.AEAD
	t.mu.Lock()
	switch {
	case id == t.cur.id:
		a = t.cur.aead
	case t.havePrev && id == t.prev.id:
		a = t.prev.aead
	}
	t.mu.Unlock()
	if a == nil {
		return c, newError(KindTicket, "unknown ticket key", nil)
	}
	var p [ticketPlainLen]byte
	if _, err := a.Open(p[:0], blob[4:28], blob[28:], blob[:4]); err != nil {
		return c, newError(KindTicket, "ticket authentication", nil)
	}
	defer clear(p[:])
	if p[0] != ticketVersion || !Suite(p[1]).valid() {
		return c, newError(KindTicket, "ticket version", nil)
	}
	c.suite = Suite(p[1])
	c.issued = int64(binary.LittleEndian.Uint64(p[2:]))
	c.lifetime = binary.LittleEndian.Uint32(p[10:])
	copy(c.id[:], p[14:30])
	copy(c.initiator[:], p[30:62])
	copy(c.secret[:], p[62:94])
	expires := time.Unix(c.issued, 0).Add(time.Duration(c.lifetime) * time.Second)
	if !now.Before(expires) || now.Before(time.Unix(c.issued, 0).Add(-time.Minute)) {
		return c, newError(KindTicket, "ticket expired", nil)
	}
	return c, nil
}

func (c *ticketContents) expires() time.Time {
	return time.Unix(c.issued, 0).Add(time.Duration(c.lifetime) * time.Second)
}

// StrikeRegister makes tickets single-use for 0-RTT: it remembers the ID of
// every ticket whose 0-RTT data was accepted until that ticket expires. It is
// bounded: when full of unexpired entries it refuses, and the responder
// then rejects the 0-RTT data (the handshake still completes). It is safe
// for concurrent use. It must live as long as the TicketKeys it guards:
// a responder that loses its register must also drop its ticket keys.
//
// IDs are kept in sets by expiry, one per strikeBucket: a ticket always
// lands in the set of its own expiry, and a set is dropped whole once its
// last ticket expired, so no call scans the entries (a full register costs
// each resumption a look at one set, not at every entry).
type StrikeRegister struct {
	mu      sync.Mutex
	max     int
	n       int
	buckets map[int64]map[[16]byte]struct{} // by the end of the bucket holding the expiry (unix s)
	oldest  int64                           // the earliest bucket end, 0 when none
}

// strikeBucket is the expiry span of one set of a StrikeRegister: an entry
// is kept at most this much past its ticket's expiry.
const strikeBucket = 60 // seconds

// NewStrikeRegister makes a register holding at most max entries (default
// 65536 when max <= 0).
func NewStrikeRegister(max int) *StrikeRegister {
	if max <= 0 {
		max = 1 << 16
	}
	return &StrikeRegister{max: max, buckets: map[int64]map[[16]byte]struct{}{}}
}

// Use records id as used until expires. It returns true on first use and
// false if id was already used, or if the register is full.
func (r *StrikeRegister) Use(id [16]byte, expires, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropExpired(now.Unix())
	end := (expires.Unix()/strikeBucket + 1) * strikeBucket
	set := r.buckets[end]
	if _, used := set[id]; used {
		return false
	}
	if r.n >= r.max {
		return false
	}
	if set == nil {
		set = map[[16]byte]struct{}{}
		r.buckets[end] = set
		if r.oldest == 0 || end < r.oldest {
			r.oldest = end
		}
	}
	set[id] = struct{}{}
	r.n++
	return true
}

// dropExpired forgets the sets whose tickets have all expired by now.
func (r *StrikeRegister) dropExpired(now int64) {
	if r.oldest == 0 || now < r.oldest {
		return
	}
	r.oldest = 0
	for end, set := range r.buckets {
		if end <= now {
			r.n -= len(set)
			delete(r.buckets, end)
		} else if r.oldest == 0 || end < r.oldest {
			r.oldest = end
		}
	}
}

// Len returns the number of remembered tickets.
func (r *StrikeRegister) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}
