//go:build ignore

/* SK_REUSEPORT program: steers each UDP datagram to the socket of the
 * dataplane shard named by its connection ID.
 *
 * The connection ID is the first 8 bytes of the UDP payload, little-endian;
 * its top byte (payload byte 7, wire.ConnIDShardOffset) names the shard. The
 * program picks shard = byte % nshards from the REUSEPORT_SOCKARRAY
 * shard_socks, where user space put shard i's socket at index i.
 *
 * Offsets: for UDP, sk_reuseport_md->data, ->len and bpf_skb_load_bytes()
 * are relative to the UDP header (the IP header has already been pulled when
 * the socket lookup runs), so payload byte 7 is at offset 8 + 7 = 15.
 *
 * Datagrams too short to carry a connection ID (payload < 8 bytes), and
 * datagrams whose shard has no socket in the map, are left to the kernel's
 * default selection (a hash of the 4-tuple): the program returns SK_PASS
 * without selecting. Nothing is ever dropped. */

#include "bpf_defs.h"

#define UDP_HDR_LEN 8
#define CONN_ID_LEN 8
#define CONN_ID_SHARD_OFF 7 /* wire.ConnIDShardOffset */
#define MAX_SHARDS 256      /* the shard byte has 256 values */

enum counter {
	COUNTER_STEERED = 0,        /* selected the shard's socket */
	COUNTER_FALLBACK_SHORT = 1, /* no connection ID: default selection */
	COUNTER_SELECT_FAILED = 2,  /* shard's slot empty or unusable: default selection */
	COUNTER_MAX = 3,
};

/* Number of shards, set by the loader before the program is loaded. */
volatile const __u32 nshards = 1;

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, MAX_SHARDS); /* the loader sets it to nshards */
	__type(key, __u32);
	__type(value, __u64);
} shard_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

SEC("sk_reuseport")
int select_shard(struct sk_reuseport_md *md)
{
	__u32 n = nshards;
	__u32 shard;
	__u8 b;

	if (md->ip_protocol != IPPROTO_UDP || md->len < UDP_HDR_LEN + CONN_ID_LEN) {
		count(COUNTER_FALLBACK_SHORT);
		return SK_PASS;
	}
	/* Works whether or not the byte is in the linear part of the skb. */
	if (bpf_skb_load_bytes(md, UDP_HDR_LEN + CONN_ID_SHARD_OFF, &b, 1) < 0) {
		count(COUNTER_FALLBACK_SHORT);
		return SK_PASS;
	}
	if (n == 0 || n > MAX_SHARDS)
		n = 1;
	shard = (__u32)b % n;
	if (bpf_sk_select_reuseport(md, &shard_socks, &shard, 0) < 0) {
		count(COUNTER_SELECT_FAILED);
		return SK_PASS;
	}
	count(COUNTER_STEERED);
	return SK_PASS;
}

char _license[] SEC("license") = "Dual MIT/GPL";
