package crypto

import "strconv"

// ErrorKind classifies an *Error.
type ErrorKind uint8

const (
	// KindMalformed: input bytes do not parse (length, type, version, field).
	KindMalformed ErrorKind = iota + 1
	// KindAuthFailed: AEAD open, MAC or handshake decryption failed.
	KindAuthFailed
	// KindReplay: the packet number was already accepted.
	KindReplay
	// KindTooOld: the packet number is below the anti-replay window.
	KindTooOld
	// KindKeyPhase: the packet uses keys that were discarded or not available.
	KindKeyPhase
	// KindPeerRefused: the allow-list hook refused the initiator.
	KindPeerRefused
	// KindHandshake: handshake failure not covered by another kind (state, wrong peer...).
	KindHandshake
	// KindNoCommonSuite: cipher suite negotiation failed.
	KindNoCommonSuite
	// KindAmplification: sending would exceed 3x the bytes received from an
	// unvalidated address.
	KindAmplification
	// KindBufferTooSmall: the caller's buffer cannot hold the output.
	KindBufferTooSmall
	// KindExhausted: packet numbers or the per-key packet limit ran out.
	KindExhausted
	// KindTicket: a session ticket is malformed, expired or unusable.
	KindTicket
	// KindKeyFile: a key file is unreadable, malformed or too permissive.
	KindKeyFile
	// KindIntegrityLimit: too many forged packets; the session must close.
	KindIntegrityLimit
	// KindState: the call is not valid in the object's current state.
	KindState
	// KindInvalidArgument: a parameter is out of range.
	KindInvalidArgument
)

var kindNames = [...]string{
	KindMalformed:       "Malformed",
	KindAuthFailed:      "AuthFailed",
	KindReplay:          "Replay",
	KindTooOld:          "TooOld",
	KindKeyPhase:        "KeyPhase",
	KindPeerRefused:     "PeerRefused",
	KindHandshake:       "Handshake",
	KindNoCommonSuite:   "NoCommonSuite",
	KindAmplification:   "Amplification",
	KindBufferTooSmall:  "BufferTooSmall",
	KindExhausted:       "Exhausted",
	KindTicket:          "Ticket",
	KindKeyFile:         "KeyFile",
	KindIntegrityLimit:  "IntegrityLimit",
	KindState:           "State",
	KindInvalidArgument: "InvalidArgument",
}

func (k ErrorKind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "ErrorKind(" + strconv.Itoa(int(k)) + ")"
}

// Error is the typed error returned by this package. Hot paths return the
// preallocated sentinels below, so a failed Open does not allocate.
// errors.Is(err, ErrReplay) matches on Kind.
type Error struct {
	Kind   ErrorKind
	Detail string // optional human-readable detail
	Err    error  // optional cause
}

func (e *Error) Error() string {
	s := "mxp/crypto: " + e.Kind.String()
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the cause, if any.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an *Error of the same Kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind
}

func newError(k ErrorKind, detail string, cause error) error {
	return &Error{Kind: k, Detail: detail, Err: cause}
}

// Sentinels, one per kind; compare with errors.Is.
var (
	ErrMalformed       = &Error{Kind: KindMalformed}
	ErrAuthFailed      = &Error{Kind: KindAuthFailed}
	ErrReplay          = &Error{Kind: KindReplay}
	ErrTooOld          = &Error{Kind: KindTooOld}
	ErrKeyPhase        = &Error{Kind: KindKeyPhase}
	ErrPeerRefused     = &Error{Kind: KindPeerRefused}
	ErrHandshake       = &Error{Kind: KindHandshake}
	ErrNoCommonSuite   = &Error{Kind: KindNoCommonSuite}
	ErrAmplification   = &Error{Kind: KindAmplification}
	ErrBufferTooSmall  = &Error{Kind: KindBufferTooSmall}
	ErrExhausted       = &Error{Kind: KindExhausted}
	ErrTicket          = &Error{Kind: KindTicket}
	ErrKeyFile         = &Error{Kind: KindKeyFile}
	ErrIntegrityLimit  = &Error{Kind: KindIntegrityLimit}
	ErrState           = &Error{Kind: KindState}
	ErrInvalidArgument = &Error{Kind: KindInvalidArgument}
)
