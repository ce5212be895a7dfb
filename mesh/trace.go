package mesh

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"time"
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

// handlerCtx is the context a handler serves a call in: it carries the
// call's trace ID and deadline and ends when the handler returns. It makes
// its Done channel, and the timer behind a deadline, only when asked for
// Done: most handlers never are, and context.WithValue + WithTimeout cost
// several allocations and a runtime timer per call.
type handlerCtx struct {
	trace    uint64
	deadline time.Time // zero: none

	mu    sync.Mutex
	done  chan struct{}
	timer *time.Timer
	err   error
}

func newHandlerCtx(trace uint64, deadline time.Time) *handlerCtx {
	return &handlerCtx{trace: trace, deadline: deadline}
}

func (c *handlerCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }

func (c *handlerCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		c.expireLocked()
		if c.err != nil {
			close(c.done)
		} else if !c.deadline.IsZero() {
			c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.end(context.DeadlineExceeded) })
		}
	}
	return c.done
}

func (c *handlerCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil && c.expireLocked() && c.done != nil {
		close(c.done)
		c.timer.Stop()
	}
	return c.err
}

func (c *handlerCtx) Value(key any) any {
	if key == (traceKey{}) {
		return c.trace
	}
	return nil
}

// expireLocked sets the deadline's error once it passed, and reports
// whether it did so now.
func (c *handlerCtx) expireLocked() bool {
	if c.err == nil && !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
		c.err = context.DeadlineExceeded
		return true
	}
	return false
}

// end ends the context with err (context.Canceled when the handler returned).
func (c *handlerCtx) end(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
}
