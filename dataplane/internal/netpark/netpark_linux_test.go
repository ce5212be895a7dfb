package netpark

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socket opens a non-blocking UDP socket on loopback and a Parker whose
// ready check reads one datagram.
func socket(t *testing.T, readErr error) (*Parker, *net.UDPAddr, *atomic.Int64) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*unix.SockaddrInet4).Port}
	f := os.NewFile(uintptr(fd), "test-udp")
	t.Cleanup(func() { f.Close() })
	var got atomic.Int64
	buf := make([]byte, 64)
	p, err := New(f, func() (bool, error) {
		if _, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT); err == nil {
			got.Add(1)
			return true, readErr
		}
		return false, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return p, addr, &got
}

func send(t *testing.T, to *net.UDPAddr) {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, to)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
}

func TestParkWakesOnDataWakeAndDeadline(t *testing.T) {
	p, addr, got := socket(t, nil)
	var parks atomic.Uint64

	// Data: Park returns after ready read it.
	go func() { time.Sleep(20 * time.Millisecond); send(t, addr) }()
	if err := p.Park(time.Now().Add(5*time.Second), time.Time{}, &parks); err != nil || got.Load() != 1 {
		t.Fatalf("park for data: %v, %d read", err, got.Load())
	}
	// Wake from another goroutine interrupts a parked Park.
	go func() { time.Sleep(20 * time.Millisecond); p.Wake() }()
	start := time.Now()
	if err := p.Park(time.Time{}, time.Time{}, &parks); err != nil || time.Since(start) > 3*time.Second {
		t.Fatalf("park for Wake: %v after %v", err, time.Since(start))
	}
	// A Wake before Park: it returns at once, without parking.
	before := parks.Load()
	p.Wake()
	if err := p.Park(time.Time{}, time.Time{}, &parks); err != nil || parks.Load() != before {
		t.Fatalf("Wake before Park: %v, parks %d -> %d", err, before, parks.Load())
	}
	// The deadline.
	start = time.Now()
	if err := p.Park(time.Now().Add(30*time.Millisecond), time.Time{}, &parks); err != nil || time.Since(start) < 25*time.Millisecond {
		t.Fatalf("park to the deadline: %v after %v", err, time.Since(start))
	}
}

func TestParkReturnsReadyError(t *testing.T) {
	boom := errors.New("boom")
	p, addr, _ := socket(t, boom)
	send(t, addr)
	var parks atomic.Uint64
	if err := p.Park(time.Now().Add(5*time.Second), time.Time{}, &parks); !errors.Is(err, boom) {
		t.Fatalf("Park returned %v, want ready's error", err)
	}
}

func TestSpin(t *testing.T) {
	p, addr, got := socket(t, nil)
	// Nothing comes: Spin gives up after its budget.
	if done, err := p.Spin(5*time.Millisecond, time.Time{}); done || err != nil {
		t.Fatalf("idle spin: %v %v", done, err)
	}
	// A Wake or a datagram ends it.
	p.Wake()
	if done, _ := p.Spin(time.Second, time.Time{}); !done || p.Woken() {
		t.Fatal("Spin missed a Wake, or left it set")
	}
	send(t, addr)
	if done, err := p.Spin(time.Second, time.Time{}); !done || err != nil || got.Load() != 1 {
		t.Fatalf("spin for data: %v %v, %d read", done, err, got.Load())
	}
}

// Park keeps the deadline it set while a later one is asked for (returning
// early, at the one set, is allowed) but never waits past its own: after
// a Park that set a far deadline and returned for data, a Park with a near
// one returns at that; after a Wake (which moves the deadline into the
// past), a Park waits again, to its own deadline.
func TestParkDeadlineKeptOnlyWhenEarlier(t *testing.T) {
	p, addr, got := socket(t, nil)
	var parks atomic.Uint64
	go func() { time.Sleep(10 * time.Millisecond); send(t, addr) }()
	if err := p.Park(time.Now().Add(time.Hour), time.Time{}, &parks); err != nil || got.Load() != 1 {
		t.Fatalf("park for data: %v, %d read", err, got.Load())
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- p.Park(start.Add(30*time.Millisecond), time.Time{}, &parks) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Second):
		p.Wake()
		<-done
		t.Fatal("a 30 ms Park after one to an hour was still waiting after 2 s")
	}
	if d := time.Since(start); d < 25*time.Millisecond {
		t.Fatalf("a 30 ms Park returned after %v", d)
	}
	// A later deadline than the one set (which has passed now): waits for it.
	start = time.Now()
	if err := p.Park(start.Add(40*time.Millisecond), time.Time{}, &parks); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 35*time.Millisecond {
		t.Fatalf("a 40 ms Park returned after %v", d)
	}
	// An earlier deadline still to come is kept: a Park to 80 ms returns
	// for data at once, and the next one, asked for 5 s, returns at the
	// 80 ms it left (early, which callers allow) without a new timer.
	start = time.Now()
	go func() { time.Sleep(5 * time.Millisecond); send(t, addr) }()
	if err := p.Park(start.Add(80*time.Millisecond), time.Time{}, &parks); err != nil || got.Load() != 2 {
		t.Fatalf("park for data: %v, %d read", err, got.Load())
	}
	if err := p.Park(time.Now().Add(5*time.Second), time.Time{}, &parks); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 70*time.Millisecond || d > 2*time.Second {
		t.Fatalf("a 5 s Park after one that left 80 ms armed returned %v after the first began", d)
	}
	// A Wake interrupts a Park with no deadline; the next Park waits to its own.
	go func() { time.Sleep(10 * time.Millisecond); p.Wake() }()
	if err := p.Park(time.Time{}, time.Time{}, &parks); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := p.Park(start.Add(30*time.Millisecond), time.Time{}, &parks); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 25*time.Millisecond {
		t.Fatalf("a 30 ms Park after a Wake returned after %v", d)
	}
}

// Park judges whether the deadline it set is still to come by the now it
// is given, not the clock: an hour's deadline, armed, is kept under a
// later one when now is before it, and replaced when now is past it.
func TestParkJudgesTheArmedDeadlineByNow(t *testing.T) {
	p, addr, got := socket(t, nil)
	var parks atomic.Uint64
	start := time.Now()
	hour := start.Add(time.Hour)
	park := func(deadline, now time.Time) {
		t.Helper()
		want := got.Load() + 1
		go func() { time.Sleep(5 * time.Millisecond); send(t, addr) }()
		if err := p.Park(deadline, now, &parks); err != nil || got.Load() != want {
			t.Fatalf("park for data: %v, %d read", err, got.Load())
		}
	}
	park(hour, time.Time{})
	if !p.armed.Equal(hour) {
		t.Fatalf("armed %v, want the hour's deadline", p.armed)
	}
	park(start.Add(2*time.Hour), start.Add(30*time.Minute))
	if !p.armed.Equal(hour) {
		t.Fatalf("armed %v after a later deadline with now before the armed one, want it kept", p.armed)
	}
	later := start.Add(3 * time.Hour)
	park(later, start.Add(90*time.Minute))
	if !p.armed.Equal(later) {
		t.Fatalf("armed %v after a later deadline with now past the armed one, want %v", p.armed, later)
	}
}
