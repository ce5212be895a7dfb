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
	state  atomic.Int32 // ocWaiting, ocBlocked, ocDone: see finish
	led    atomic.Bool  // its caller runs the shard's turns (await): deliver readies no goroutine
	early  bool         // route sent it as 0-RTT data in a handshake (shard goroutine only)
	doneFn func() bool  // done, made once
	m      wire.Message
	via    wire.UUID       // for route: the agent to send to directly; zero: the node
	conn   *transport.Conn // what it went out on (shard goroutine only)
	buf    []byte          // m.Payload's storage
	runFn  func(time.Time)
	// reply and failed are what ended the request (finish), the caller's
	// to read once state is ocDone.
	reply  wire.Message
	failed bool          // the request failed before a reply
	ch     chan struct{} // finish's signal to a caller blocked on it (ocBlocked)
}

// An outCall's state: whether its caller will look for the end of the
// request itself or block until told.
const (
	ocWaiting int32 = iota // the caller polls done (in await) or has not looked yet
	ocBlocked              // the caller blocks on ch: finish signals it
	ocDone                 // finished: reply and failed are set
)

var outCallPool = sync.Pool{New: func() any {
	oc := &outCall{ch: make(chan struct{}, 1)}
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

// fail ends oc: the request failed before a reply.
func (oc *outCall) fail() { oc.finish(wire.Message{}, true) }

// finish ends oc with its reply or failure, once (by whoever took it out of
// the pending table). A caller that polls (await) sees it in done; one
// blocked on ch gets a signal. A caller running the shard's turns itself
// is so handed its reply without a channel's lock and copy. After the
// state changes from ocWaiting, oc may be back in the pool: finish does not
// touch it again.
func (oc *outCall) finish(reply wire.Message, failed bool) {
	oc.reply, oc.failed = reply, failed
	if oc.state.Swap(ocDone) == ocBlocked {
		oc.ch <- struct{}{}
	}
}

// block waits until oc finishes or stop closes, and reports whether it
// finished. A caller that gets false has oc still pending: if it takes it
// out of the pending table itself, nothing will finish it; otherwise
// finish is running and its signal is on the way (take it with <-oc.ch).
func (oc *outCall) block(stop <-chan struct{}) bool {
	if !oc.state.CompareAndSwap(ocWaiting, ocBlocked) {
		return true // finished already
	}
	select {
	case <-oc.ch:
		return true
	case <-stop:
		return false
	}
}

// done reports whether oc's reply came or it failed (await's condition).
func (oc *outCall) done() bool { return oc.state.Load() == ocDone }

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
	*oc = outCall{ch: oc.ch, buf: buf, runFn: oc.runFn, doneFn: oc.doneFn} // state ocWaiting
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
// now is the caller's latest clock reading, if it has one (zero: none).
func (cl *caller) wait(ctx context.Context, oc *outCall, now time.Time) (wire.Message, error) {
	if cl.closed.Load() {
		return wire.Message{}, ErrClosed
	}
	cl.pmu.Lock()
	cl.addPending(oc)
	alone := len(cl.pending) == 1
	cl.pmu.Unlock()
	cl.sh.do(oc.runFn)
	if alone && cl.sh.await(ctx, oc.doneFn, &oc.led, now) || oc.block(ctx.Done()) {
		return cl.reply(oc)
	}
	cl.pmu.Lock()
	mine := cl.pending[oc.m.MessageID] == oc
	if mine {
		cl.dropPending(oc.m.MessageID)
	}
	cl.pmu.Unlock()
	if mine {
		return wire.Message{}, ctx.Err() // oc may still be queued: not reused
	}
	<-oc.ch // its reply or failure came as ctx ended: finish is signalling
	return cl.reply(oc)
}

// reply returns how oc ended: its reply (oc goes back to the pool), or
// the request's failure (oc is dropped).
func (cl *caller) reply(oc *outCall) (wire.Message, error) {
	r := oc.reply
	if oc.failed {
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
	return cl.wait(ctx, oc, time.Time{})
}

// call calls method on agent target (directly when via names it) and
// returns the response data. The context's deadline travels in the call
// (whole seconds, rounded up); its trace ID (or a new one) in every message
// of the call.
func (cl *caller) call(ctx context.Context, target wire.UUID, method string, body []byte, via wire.UUID) ([]byte, error) {
	if len(method) > math.MaxUint16 {
		return nil, fmt.Errorf("mesh: method name of %d bytes", len(method))
	}
	timeout, now := uint32(0), time.Time{}
	if dl, ok := ctx.Deadline(); ok {
		now = time.Now() // read once: wait's await uses it too
		timeout = uint32(min(math.Ceil(dl.Sub(now).Seconds()), math.MaxUint32))
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
	r, err := cl.wait(ctx, oc, now)
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
	oc.finish(cp, false)
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
