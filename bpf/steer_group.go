//go:build linux

package bpf

// SteerGroup loads the shard-steering program for len(fds) shards, puts
// socket fds[i] in shard i's slot and attaches the program to their
// SO_REUSEPORT group (through fds[0]). The caller keeps the returned
// Reuseport for its counters and closes it when done; the sockets keep the
// program attached for as long as they live.
func SteerGroup(fds []int) (*Reuseport, error) {
	r, err := LoadReuseport(len(fds))
	if err != nil {
		return nil, err
	}
	for i, fd := range fds {
		if err := r.SetShard(i, fd); err != nil {
			r.Close()
			return nil, err
		}
	}
	if err := r.AttachTo(fds[0]); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}
