package mesh

import (
	"context"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mxp-dataplane/mxp/transport"
	"github.com/mxp-dataplane/mxp/wire"
)

// caller is the requesting side an Agent and a Client share: requests sent
// through one shard, waiting for the replies with their message IDs. A
// request's state is pooled, with its payload buffer and its shard command
// made once, so a call allocates only the reply its caller keeps.
type caller struct {
	sh     *shard
	closed atomic.Bool
	nextID atomic.Uint64
	// route picks, on the shard, the connection a request goes out on; nil
	// fails it with ErrNotConnected (or ErrClosed once closed).
	route func(oc *outCall, now time.Time) *transport.Conn

	pmu     sync.Mutex
	pending map[uint64]*outCall // by message ID
}

// outCall is one request waiting for its reply.
type outCall struct {
	cl     *caller
	failed atomic.Bool // the request failed before a reply (ch is closed)
	led    atomic.Bool // its caller runs the shard's turns (await): deliver readies no goroutine
	early  bool        // route sent it as 0-RTT data in a handshake (shard goroutine only)
	doneFn func() bool // done, made once
	m      wire.Message
	via    wire.UUID       // for route: the agent to send to directly; zero: the node
	conn   *transport.Conn // what it went out on (shard goroutine only)
	ch     chan wire.Message
	buf    []byte // m.Payload's storage
	runFn  func(time.Time)
}

var outCallPool = sync.Pool{New: func() any {
	oc := &outCall{ch: make(chan wire.Message, 1)}
	oc.runFn, oc.doneFn = oc.run, oc.done
	return oc
}}

// run sends the request, on the shard.
func (oc *outCall) run(now time.Time) {
	cl := oc.cl
	if c := cl.route(oc, now); c != nil {
		oc.conn = c
		if !oc.early {
			cl.sh.send(c, &oc.m)
		}
		return
	}
	cl.pmu.Lock()
	if cl.pending[oc.m.MessageID] == oc {
		cl.dropPending(oc.m.MessageID)
		oc.fail()
	}
	cl.pmu.Unlock()
}

// fail closes oc's channel: the request failed before a reply.
func (oc *outCall) fail() {
	oc.failed.Store(true)
	close(oc.ch)
}

// done reports whether oc's reply came or it failed (await's condition).
// The reply's send is not marked otherwise: an atomic store there, on a
// line the caller's CPU owns, costs every call a cache-line transfer.
func (oc *outCall) done() bool { return len(oc.ch) > 0 || oc.failed.Load() }

// addPending and dropPending keep the pending table (pmu held), and count
// the caller on its shard (shard.waiting) while it has any: once per
// caller, not per request, so that many goroutines calling at once do not
// all update one counter.
func (cl *caller) addPending(oc *outCall) {
	cl.pending[oc.m.MessageID] = oc
	if len(cl.pending) == 1 {
		cl.sh.waiting.Add(1)
	}
}

func (cl *caller) dropPending(id uint64) *outCall {
	oc := cl.pending[id]
	if oc != nil {
		delete(cl.pending, id)
		if len(cl.pending) == 0 {
			cl.sh.waiting.Add(-1)
		}
	}
	return oc
}

func (oc *outCall) release() {
	buf := oc.buf[:0]
	if cap(buf) > 64<<10 {
		buf = nil
	}
	*oc = outCall{ch: oc.ch, buf: buf, runFn: oc.runFn, doneFn: oc.doneFn}
	outCallPool.Put(oc)
}

// newRequest takes a request from the pool with a fresh message ID; the
// caller fills oc.m's type, trace and payload (in oc.buf) and calls wait.
func (cl *caller) newRequest() *outCall {
	oc := outCallPool.Get().(*outCall)
	oc.cl = cl
	oc.m = wire.Message{MessageID: cl.nextID.Add(1)}
	return oc
}

// wait sends oc and waits for the reply with its message ID. oc goes back
// to the pool when the reply came: nothing else refers to it then.
func (cl *caller) wait(ctx context.Context, oc *outCall) (wire.Message, error) {
	if cl.closed.Load() {
		return wire.Message{}, ErrClosed
	}
	cl.pmu.Lock()
	cl.addPending(oc)
	alone := len(cl.pending) == 1
	cl.pmu.Unlock()
	cl.sh.do(oc.runFn)
	if alone && cl.sh.await(ctx, oc.doneFn, &oc.led) {
		r, ok := <-oc.ch
		return cl.reply(oc, r, ok)
	}
	select {
	case r, ok := <-oc.ch:
		return cl.reply(oc, r, ok)
	case <-ctx.Done():
		cl.pmu.Lock()
		if cl.pending[oc.m.MessageID] == oc {
			cl.dropPending(oc.m.MessageID)
		}
		cl.pmu.Unlock()
		return wire.Message{}, ctx.Err() // oc may still be queued: not reused
	}
}

// reply returns what oc's channel gave: the reply (oc goes back to the
// pool), or, closed, the request's failure.
func (cl *caller) reply(oc *outCall, r wire.Message, ok bool) (wire.Message, error) {
	if !ok { // failed before a reply: the channel is closed, drop oc
		if cl.closed.Load() {
			return r, ErrClosed
		}
		return r, ErrNotConnected
	}
	oc.release()
	if r.Type == wire.TypeError {
		var e wire.ErrorPayload
		if err := e.DecodePayload(r.Payload); err != nil {
			return r, err
		}
		return r, &Error{Code: e.Code, Message: e.Message}
	}
	return r, nil
}

// request sends p (its message gets a fresh ID) and waits for the reply.
func (cl *caller) request(ctx context.Context, p wire.Payload) (wire.Message, error) {
	oc := cl.newRequest()
	oc.m.Type, oc.m.TraceID = p.MessageType(), traceFor(ctx)
	var err error
	if oc.buf, err = p.AppendPayload(oc.buf); err != nil {
		return wire.Message{}, err
	}
	oc.m.Payload = oc.buf
	return cl.wait(ctx, oc)
}

// call calls method on agent target (directly when via names it) and
// returns the response data. The context's deadline travels in the call
// (whole seconds, rounded up); its trace ID (or a new one) in every message
// of the call.
func (cl *caller) call(ctx context.Context, target wire.UUID, method string, body []byte, via wire.UUID) ([]byte, error) {
	if len(method) > math.MaxUint16 {
		return nil, fmt.Errorf("mesh: method name of %d bytes", len(method))
	}
	timeout := uint32(0)
	if dl, ok := ctx.Deadline(); ok {
		timeout = uint32(min(math.Ceil(time.Until(dl).Seconds()), math.MaxUint32))
		timeout = max(timeout, 1)
	}
	oc := cl.newRequest()
	oc.m.Type, oc.m.TraceID, oc.via = wire.TypeCall, traceFor(ctx), via
	// The call's data (u16 method length | method | body) is the payload's
	// tail: encode the head with no data, then append the data in place.
	buf, err := (&wire.Call{Target: target, TimeoutSeconds: timeout}).AppendPayload(oc.buf)
	if err != nil {
		return nil, err
	}
	buf = appendMethod(buf, method, body)
	oc.buf, oc.m.Payload = buf, buf
	r, err := cl.wait(ctx, oc)
	if err != nil {
		return nil, err
	}
	var resp wire.Response
	if err := resp.DecodePayload(r.Payload); err != nil {
		return nil, err
	}
	return resp.Data, nil
}

// deliver hands m, the reply to request id, to its waiting caller (with a
// copy of the payload, the caller's to keep); on the shard. It reports
// whether a request was waiting.
func (cl *caller) deliver(id uint64, m *wire.Message) bool {
	cl.pmu.Lock()
	oc := cl.dropPending(id)
	cl.pmu.Unlock()
	if oc == nil {
		return false
	}
	cp := *m
	cp.Payload = append([]byte(nil), m.Payload...)
	if oc.led.Load() {
		cl.sh.kept++
	}
	oc.ch <- cp
	return true
}

// failRequestsOn fails the waiting requests that went out on c (closed);
// on the shard.
func (cl *caller) failRequestsOn(c *transport.Conn) {
	cl.pmu.Lock()
	defer cl.pmu.Unlock()
	for id, oc := range cl.pending {
		if oc.conn == c {
			cl.dropPending(id)
			oc.fail()
		}
	}
}

// failRequests fails every waiting request (ErrNotConnected, or ErrClosed
// once closed).
func (cl *caller) failRequests() {
	cl.pmu.Lock()
	defer cl.pmu.Unlock()
	for id, oc := range cl.pending {
		cl.dropPending(id)
		oc.fail()
	}
	cl.sh.wake() // a goroutine in Engine.Await sees it after the turn
}
