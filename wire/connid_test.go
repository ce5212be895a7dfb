package wire

import (
	"encoding/binary"
	"testing"

	"pgregory.net/rapid"
)

func TestConnIDShard(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 256).Draw(t, "shards")
		shard := rapid.IntRange(0, n-1).Draw(t, "shard")
		cid := MakeConnID(shard, rapid.Uint64().Draw(t, "random"))
		if got := ConnIDShard(cid, n); got != shard {
			t.Fatalf("ConnIDShard(%#x, %d) = %d, want %d", cid, n, got, shard)
		}
		// The steering programs read one byte of the UDP payload instead.
		var hdr [8]byte
		binary.LittleEndian.PutUint64(hdr[:], cid)
		if int(hdr[ConnIDShardOffset])%n != shard {
			t.Fatalf("byte %d of the header does not name the shard", ConnIDShardOffset)
		}
	})
}
