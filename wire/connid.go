package wire

// Connection IDs are chosen by the receiver of the packets that carry them. The
// top byte of the 64-bit ID names the dataplane shard that owns the connection,
// so every backend (the SK_REUSEPORT and XDP programs included) steers a packet
// to its shard from the ID alone, with no lookup:
//
//	bits 63..56  shard index (taken modulo the shard count)
//	bits 55..0   random, unique per connection within the shard
//
// On the wire the ID is the first 8 bytes of the packet header, little-endian,
// so the shard index is byte 7 of the UDP payload. An initiator's first packets
// carry an ID it drew at random, so handshakes spread over the shards by that
// random top byte (a hash), and the responder then issues an ID naming the
// shard that took the handshake.

// ConnIDShardOffset is the offset, in the UDP payload, of the byte that names
// the shard.
const ConnIDShardOffset = 7

// ConnIDShard returns the shard, among n (1 ≤ n ≤ 256), that owns cid.
func ConnIDShard(cid uint64, n int) int {
	return int(cid>>56) % n
}

// MakeConnID returns a connection ID owned by shard (0 ≤ shard < 256), whose
// other 56 bits are taken from random.
func MakeConnID(shard int, random uint64) uint64 {
	return uint64(shard)<<56 | random&(1<<56-1)
}
