package mesh

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestHandlerCtx(t *testing.T) {
	// A deadline closes Done and sets DeadlineExceeded, with or without a
	// Done channel asked for first.
	c := newHandlerCtx(7, time.Now().Add(20*time.Millisecond))
	if id, ok := TraceID(c); !ok || id != 7 {
		t.Fatalf("trace %d %v", id, ok)
	}
	if dl, ok := c.Deadline(); !ok || dl.IsZero() {
		t.Fatal("no deadline")
	}
	if c.Err() != nil {
		t.Fatal("ended early")
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed at the deadline")
	}
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("err %v", c.Err())
	}
	c.end(context.Canceled) // too late: the deadline's error stays
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("err after end %v", c.Err())
	}

	c = newHandlerCtx(1, time.Now().Add(5*time.Millisecond))
	time.Sleep(10 * time.Millisecond)
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err without Done after the deadline: %v", c.Err())
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("Done asked for after the deadline is not closed")
	}

	// Without a deadline, the context ends (Canceled) when the handler returns;
	// derived contexts follow.
	c = newHandlerCtx(2, time.Time{})
	if _, ok := c.Deadline(); ok {
		t.Fatal("deadline without one")
	}
	child, stop := context.WithCancel(c)
	defer stop()
	if id, _ := TraceID(child); id != 2 {
		t.Fatalf("child trace %d", id)
	}
	c.end(context.Canceled)
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("child not canceled")
	}
	if !errors.Is(c.Err(), context.Canceled) || c.Value("x") != nil {
		t.Fatalf("err %v", c.Err())
	}
	// A deadline's timer stops when the handler returns first.
	c = newHandlerCtx(3, time.Now().Add(time.Hour))
	<-time.After(0)
	_ = c.Done()
	c.end(context.Canceled)
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("err %v", c.Err())
	}
	if c.timer == nil || c.timer.Stop() {
		t.Fatal("the deadline's timer was still armed after the handler returned")
	}
}
