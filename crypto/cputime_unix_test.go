//go:build unix

package crypto

import (
	"syscall"
	"time"
)

// processCPU returns the user+system CPU time consumed by the process, so
// benchmarks can report CPU cost that does not depend on machine load.
func processCPU() time.Duration { return rusage(syscall.RUSAGE_SELF) }

func rusage(who int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
