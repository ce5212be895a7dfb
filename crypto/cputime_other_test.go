//go:build !unix

package crypto

import "time"

var cpuStart = time.Now()

// processCPU falls back to wall time where getrusage is unavailable.
func processCPU() time.Duration { return time.Since(cpuStart) }
