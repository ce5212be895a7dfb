//go:build linux

package crypto

import "time"

const rusageThread = 1 // RUSAGE_THREAD

// threadCPU returns the CPU time of the calling OS thread (callers lock
// the goroutine to its thread).
func threadCPU() time.Duration { return rusage(rusageThread) }
