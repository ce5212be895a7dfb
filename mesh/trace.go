package mesh

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
)

// Trace IDs: every root call gets a fresh random 64-bit trace ID; a handler's
// context carries the trace of the call it serves, so calls, events and
// streams it makes downstream carry the same trace, as do responses and
// errors. MXP's header has 64 bits for the trace and 64 for the message:
// they map to OpenTelemetry as
//
//	trace-id (16 bytes) = 8 zero bytes | MXP trace ID, big-endian
//	span-id  (8 bytes)  = MXP message ID, big-endian
//
// (OpenTelemetryIDs), so a W3C traceparent can be derived from any message.

type traceKey struct{}

// WithTrace returns ctx carrying trace ID id.
func WithTrace(ctx context.Context, id uint64) context.Context {
	return context.WithValue(ctx, traceKey{}, id)
}

// TraceID returns the trace ID ctx carries, and whether it carries one.
func TraceID(ctx context.Context) (uint64, bool) {
	id, ok := ctx.Value(traceKey{}).(uint64)
	return id, ok
}

// traceFor returns ctx's trace ID, or a new random one for a root call.
func traceFor(ctx context.Context) uint64 {
	if id, ok := TraceID(ctx); ok {
		return id
	}
	// Trace IDs need to be unique, not secret: the runtime's per-thread
	// ChaCha8 generator is as good as crypto/rand here and cheaper.
	id := rand.Uint64()
	if id == 0 {
		id = 1
	}
	return id
}

// OpenTelemetryIDs maps an MXP trace ID and message ID to OpenTelemetry's
// trace and span IDs.
func OpenTelemetryIDs(traceID, messageID uint64) (trace [16]byte, span [8]byte) {
	binary.BigEndian.PutUint64(trace[8:], traceID)
	binary.BigEndian.PutUint64(span[:], messageID)
	return trace, span
}
