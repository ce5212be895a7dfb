//go:build !linux

package dataplane

import "errors"

// pinThread fails: pinning a shard to a CPU needs Linux's sched_setaffinity.
func pinThread(int) error { return errors.New("dataplane: pinning shards to CPUs needs Linux") }
