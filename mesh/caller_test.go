package mesh

import (
	"testing"
	"time"

	"github.com/mxp-dataplane/mxp/wire"
)

// The hand-over of a reply to its caller: seen by polling (done) when it
// comes first, signalled to a caller blocked on it, and, when the caller
// gives up as it comes, still signalled once, so that a pooled outCall
// carries no stale signal into its next request.
func TestOutCallHandOver(t *testing.T) {
	reply := wire.Message{Type: wire.TypeResponse, MessageID: 7, Payload: []byte("x")}
	fresh := func() *outCall {
		oc := outCallPool.Get().(*outCall)
		if oc.state.Load() != ocWaiting || len(oc.ch) != 0 {
			t.Fatalf("pooled outCall in state %d with %d signals", oc.state.Load(), len(oc.ch))
		}
		return oc
	}
	check := func(oc *outCall) {
		t.Helper()
		if !oc.done() || oc.failed || oc.reply.MessageID != 7 || string(oc.reply.Payload) != "x" {
			t.Fatalf("done %v failed %v reply %+v", oc.done(), oc.failed, oc.reply)
		}
	}

	// Finished before the caller looks: done polls it, block returns at once.
	oc := fresh()
	if oc.done() {
		t.Fatal("done before finish")
	}
	oc.finish(reply, false)
	if !oc.block(nil) {
		t.Fatal("block after finish: not finished")
	}
	check(oc)
	if len(oc.ch) != 0 {
		t.Fatal("finish signalled a caller that was not blocked")
	}
	oc.release()

	// Finished while the caller blocks.
	oc = fresh()
	go func() { time.Sleep(10 * time.Millisecond); oc.finish(reply, false) }()
	if !oc.block(nil) {
		t.Fatal("block: not finished")
	}
	check(oc)
	oc.release()

	// The caller gives up (stop), then the reply comes: its signal arrives
	// and is taken, as caller.wait does when the request was no longer its
	// own to drop.
	oc = fresh()
	stop := make(chan struct{})
	close(stop)
	if oc.block(stop) {
		t.Fatal("block with stop closed and no reply: finished")
	}
	go oc.finish(reply, false)
	select {
	case <-oc.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no signal for a caller that had blocked")
	}
	check(oc)
	oc.release()

	// A failure ends it the same way.
	oc = fresh()
	oc.fail()
	if !oc.block(nil) || !oc.failed {
		t.Fatal("a failed request did not end as failed")
	}
}
