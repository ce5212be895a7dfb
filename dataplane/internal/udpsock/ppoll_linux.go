package udpsock

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Ppoll waits on a locked thread until one of fds is ready or the deadline
// passes (zero: none), for at most limit when limit > 0, retrying when a
// signal interrupts it. A deadline already past returns at once. The
// Revents of fds say what is ready.
func Ppoll(fds []unix.PollFd, deadline time.Time, limit time.Duration) error {
	var ts *unix.Timespec
	if !deadline.IsZero() || limit > 0 {
		d := limit
		if !deadline.IsZero() {
			until := time.Until(deadline)
			if until <= 0 {
				return nil
			}
			if d <= 0 || until < d {
				d = until
			}
		}
		t := unix.NsecToTimespec(d.Nanoseconds())
		ts = &t
	}
	for {
		_, err := unix.Ppoll(fds, ts, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("ppoll", err)
		}
		return nil
	}
}

// Signal makes an eventfd readable (a pending signal already does).
func Signal(eventfd int) {
	one := [8]byte{1}
	unix.Write(eventfd, one[:]) // EAGAIN: the counter is non-zero already
}

// Drain resets an eventfd that Signal made readable.
func Drain(eventfd int) {
	var b [8]byte
	unix.Read(eventfd, b[:])
}
