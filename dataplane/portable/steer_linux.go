package portable

import "github.com/mxp-dataplane/mxp/bpf"

// steerByBPF loads the SK_REUSEPORT program, puts every shard's socket in
// its slot and attaches it to the group. Shard 0 keeps the program's handle
// (for its counters) and releases it on Close; the sockets keep the program
// itself attached for as long as they live.
func steerByBPF(shards []*shardConn) error {
	r, err := bpf.LoadReuseport(len(shards))
	if err != nil {
		return err
	}
	for i, c := range shards {
		if err := r.SetShard(i, c.fd); err != nil {
			r.Close()
			return err
		}
	}
	if err := r.AttachTo(shards[0].fd); err != nil {
		r.Close()
		return err
	}
	shards[0].steering = r
	for _, c := range shards {
		c.features.SteeredByBPF = true
	}
	return nil
}
