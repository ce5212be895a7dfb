package mesh

import (
	"net/netip"
	"sync"
	"time"

	"github.com/mxp-dataplane/mxp/crypto"
	"github.com/mxp-dataplane/mxp/transport"
	"github.com/mxp-dataplane/mxp/wire"
)

// Session resumption with 0-RTT data (docs/runtime.md, "Resumption").
//
// Every host issues a session ticket to each peer that completes a
// handshake with it, and accepts 0-RTT data from a peer that resumes with
// one: the host's shards share one ticket key ring and one strike
// register, both in memory, so a ticket's 0-RTT data is taken at most once
// for the life of the process (a restart loses the keys with the register,
// and old tickets then fail: the data is sent again after the handshake).
// The host that dials keeps the tickets it was given (ticketStore); a
// Client dialled WithZeroRTT sends its first request inside the handshake's
// first packet, and the peer answers it right behind its handshake reply.

// Bounds of a host's ticket store.
const (
	ticketsPerPeer = 4
	maxTicketPeers = 1024
)

// ticketStore holds the session tickets a host's connections were given,
// by peer (key and address). Safe for concurrent use.
type ticketStore struct {
	mu sync.Mutex
	m  map[ticketPeer][]*crypto.Ticket
}

type ticketPeer struct {
	key  crypto.PublicKey
	addr netip.AddrPort
}

// put keeps t, a ticket from the peer at addr, dropping the oldest beyond
// ticketsPerPeer (and some other peer's beyond maxTicketPeers).
func (s *ticketStore) put(addr netip.AddrPort, t *crypto.Ticket) {
	p := ticketPeer{t.Peer, addr}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[ticketPeer][]*crypto.Ticket{}
	}
	if _, ok := s.m[p]; !ok && len(s.m) >= maxTicketPeers {
		for other := range s.m {
			delete(s.m, other)
			break
		}
	}
	ts := append(s.m[p], t)
	if len(ts) > ticketsPerPeer {
		ts = append(ts[:0], ts[len(ts)-ticketsPerPeer:]...)
	}
	s.m[p] = ts
}

// take removes and returns the newest ticket for the peer that is still
// valid at now, or nil. A ticket is used once.
func (s *ticketStore) take(key crypto.PublicKey, addr netip.AddrPort, now time.Time) *crypto.Ticket {
	p := ticketPeer{key, addr}
	s.mu.Lock()
	defer s.mu.Unlock()
	ts := s.m[p]
	for len(ts) > 0 {
		t := ts[len(ts)-1]
		ts[len(ts)-1] = nil
		ts = ts[:len(ts)-1]
		if now.Before(t.Expires) {
			s.m[p] = ts
			return t
		}
	}
	delete(s.m, p)
	return nil
}

// has reports whether the store holds a ticket for the peer (perhaps
// expired: take says).
func (s *ticketStore) has(key crypto.PublicKey, addr netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m[ticketPeer{key, addr}]) > 0
}

// earlyMessage encodes m as 0-RTT data, or reports that it does not fit.
func earlyMessage(m *wire.Message) ([]byte, bool) {
	if wire.EncodedLen(len(m.Payload)) > crypto.DefaultMaxEarlyData {
		return nil, false
	}
	b, err := wire.AppendMessage(nil, m)
	return b, err == nil
}

// deliverEarly hands the messages of a resuming peer's 0-RTT data to the
// owner as if they had arrived on c (their answers leave at 0.5-RTT). The
// data was authenticated under the ticket and is taken once (the strike
// register); what does not decode as whole messages is dropped.
func (sh *shard) deliverEarly(c *transport.Conn, data []byte) {
	for len(data) > 0 {
		m, n, err := wire.DecodeMessage(data)
		if err != nil {
			sh.h.earlyDropped.Add(1)
			return
		}
		sh.h.earlyTaken.Add(1)
		sh.onMessage(c, &m)
		data = data[n:]
	}
}
