//go:build !linux

package crypto

import "time"

func threadCPU() time.Duration { return processCPU() }
