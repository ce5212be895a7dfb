package wire

// StreamID is a transport stream identifier: index<<2 | role<<1 | kind.
// Bit 0 is the stream kind (0 bidirectional, 1 unidirectional), bit 1 the
// role of the endpoint that opened it (0 client/initiator, 1 server/responder),
// the remaining 62 bits the per-(role, kind) index.
type StreamID uint64

// StreamIDRole is the role of the endpoint that opened a stream.
type StreamIDRole uint8

// StreamIDKind says whether a stream carries data in one or both directions.
type StreamIDKind uint8

const (
	StreamIDClient StreamIDRole = 0
	StreamIDServer StreamIDRole = 1

	StreamIDBidirectional  StreamIDKind = 0
	StreamIDUnidirectional StreamIDKind = 1
)

// StreamIDMaxIndex is the largest index a StreamID can hold (2^62 - 1).
const StreamIDMaxIndex = 1<<62 - 1

// MakeStreamID builds a StreamID. ok is false when index > StreamIDMaxIndex
// or role/kind are not 0 or 1.
func MakeStreamID(index uint64, role StreamIDRole, kind StreamIDKind) (id StreamID, ok bool) {
	if index > StreamIDMaxIndex || role > 1 || kind > 1 {
		return 0, false
	}
	return StreamID(index<<2 | uint64(role)<<1 | uint64(kind)), true
}

// Index returns the per-(role, kind) stream index.
func (id StreamID) Index() uint64 { return uint64(id) >> 2 }

// Role returns the role of the endpoint that opened the stream.
func (id StreamID) Role() StreamIDRole { return StreamIDRole(id>>1) & 1 }

// Kind returns whether the stream is bidirectional or unidirectional.
func (id StreamID) Kind() StreamIDKind { return StreamIDKind(id) & 1 }

func (r StreamIDRole) String() string {
	if r == StreamIDClient {
		return "Client"
	}
	return "Server"
}

func (k StreamIDKind) String() string {
	if k == StreamIDBidirectional {
		return "Bidirectional"
	}
	return "Unidirectional"
}
