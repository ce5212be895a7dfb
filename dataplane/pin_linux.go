package dataplane

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// pinThread binds the calling (locked) OS thread to one CPU: the shard-th,
// modulo their count, of the CPUs this process may run on.
func pinThread(shard int) error {
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return fmt.Errorf("read CPU affinity: %w", err)
	}
	n := allowed.Count()
	if n == 0 {
		return fmt.Errorf("no CPU in this process's affinity mask")
	}
	k := shard % n
	for cpu := 0; cpu < len(allowed)*64; cpu++ {
		if !allowed.IsSet(cpu) {
			continue
		}
		if k == 0 {
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				return fmt.Errorf("pin shard %d to CPU %d: %w", shard, cpu, err)
			}
			return nil
		}
		k--
	}
	return nil
}
