//go:build ignore

/* XDP program: steers MXP datagrams into the AF_XDP socket of the dataplane
 * shard their connection ID names, and passes everything else to the kernel.
 *
 * Parsing: Ethernet, up to two VLAN tags (802.1Q or 802.1ad, in any order),
 * then IPv4 (header length from IHL, so options are skipped; fragments are
 * passed: only the first carries the UDP header, and the kernel reassembles)
 * or IPv6 (fixed header only: a next header other than UDP, extension
 * headers included, is passed), then UDP. A datagram is ours when its
 * destination port is in the ports map.
 *
 * Steering: the connection ID is the first 8 bytes of the UDP payload; its
 * top byte (payload byte 7, wire.ConnIDShardOffset) names the shard:
 * shard = byte % nshards. Handshake packets (MXP packet header flags, payload
 * byte 16, with the HANDSHAKE bit 0x01, which header protection never masks)
 * carry an initiator's random connection ID instead: they go to the shard of
 * the queue they arrived on (the NIC's RSS hash of the flow), which then
 * issues connection IDs naming itself, so that the flow's later packets,
 * arriving on the same queue, name the same shard. Shard i's AF_XDP socket is bound to RX queue i of
 * the interface and sits at index i of the XSKMAP xsks. An AF_XDP socket can
 * only take frames from the queue it is bound to, so a datagram whose shard
 * is not the queue it arrived on is passed to the kernel, whose UDP socket
 * group (steered by the SK_REUSEPORT program) delivers it to the right
 * shard. The redirect uses XDP_PASS as the fallback action, so an empty slot
 * also passes.
 *
 * Never drop what is not ours: every other verdict is XDP_PASS, including
 * malformed or truncated packets, datagrams too short to carry a connection
 * ID and frames too large for an AF_XDP frame (as UDP GSO super-packets are
 * in generic mode: the kernel segments them on the way to the socket).
 *
 * Counters (per-CPU): every packet counts once in either redirected or
 * passed; matched counts the datagrams to our ports; malformed and the
 * pass_* counters say why a packet was passed. */

#include "xdp_defs.h"

#define UDP_HDR_LEN 8
#define CONN_ID_LEN 8
#define CONN_ID_SHARD_OFF 7 /* wire.ConnIDShardOffset */
#define PKT_FLAGS_OFF 16    /* wire.PacketOffsetFlags */
#define PKT_FLAG_HANDSHAKE 0x01
#define MAX_SHARDS 256      /* the shard byte has 256 values */
#define MAX_PORTS 64

enum counter {
	COUNTER_MATCHED = 0,     /* UDP to one of our ports */
	COUNTER_REDIRECTED = 1,  /* redirected to a shard's AF_XDP socket */
	COUNTER_PASSED = 2,      /* every XDP_PASS verdict */
	COUNTER_MALFORMED = 3,   /* truncated or invalid headers (passed) */
	COUNTER_PASS_QUEUE = 4,  /* ours, but arrived on another shard's queue */
	COUNTER_PASS_NOSOCK = 5, /* ours, but the shard's slot is empty */
	COUNTER_PASS_SHORT = 6,  /* ours, but no connection ID (payload < 8) */
	COUNTER_PASS_BIG = 7,    /* ours, but larger than an AF_XDP frame */
	COUNTER_HANDSHAKE = 8,   /* handshake packets redirected by their queue */
	COUNTER_MAX = 9,
};

/* Set by the loader before loading, so the verifier sees constants. */
volatile const __u32 nshards = 1;
/* Largest frame (Ethernet header included) an AF_XDP frame takes. */
volatile const __u32 max_frame = 3840;

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_SHARDS); /* the loader sets it to nshards */
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* MXP UDP ports, host byte order; the value is unused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} xdp_counters SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&xdp_counters, &which);

	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

static __always_inline int pass(__u32 why)
{
	if (why != COUNTER_PASSED)
		count(why);
	count(COUNTER_PASSED);
	return XDP_PASS;
}

SEC("xdp")
int mxp_xdp_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct udphdr *udp;
	__u16 proto, ulen;
	__u32 off = ETH_HLEN, n, shard;
	__u8 *payload;
	long ret;
	int i, handshake = 0;

	if ((void *)(eth + 1) > end)
		return pass(COUNTER_MALFORMED);
	proto = bpf_ntohs(eth->h_proto);

#pragma unroll
	for (i = 0; i < 2; i++) {
		struct vlan_hdr *vh;

		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		vh = data + off;
		if ((void *)(vh + 1) > end)
			return pass(COUNTER_MALFORMED);
		proto = bpf_ntohs(vh->encap_proto);
		off += VLAN_HLEN;
	}

	if (proto == ETH_P_IP) {
		struct iphdr *ip = data + off;
		__u32 ihl;

		if ((void *)(ip + 1) > end)
			return pass(COUNTER_MALFORMED);
		ihl = (ip->ver_ihl & 0x0F) * 4;
		if ((ip->ver_ihl >> 4) != 4 || ihl < sizeof(*ip))
			return pass(COUNTER_MALFORMED);
		if (ip->protocol != IPPROTO_UDP)
			return pass(COUNTER_PASSED);
		if (bpf_ntohs(ip->frag_off) & (IP_MF | IP_OFFSET))
			return pass(COUNTER_PASSED); /* a fragment: the kernel reassembles */
		if (bpf_ntohs(ip->tot_len) < ihl + UDP_HDR_LEN)
			return pass(COUNTER_MALFORMED);
		off += ihl; /* at most 14 + 8 + 60 */
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > end)
			return pass(COUNTER_MALFORMED);
		if ((((__u8 *)ip6)[0] >> 4) != 6)
			return pass(COUNTER_MALFORMED);
		/* Extension headers are not walked: they are not ours. */
		if (ip6->nexthdr != IPPROTO_UDP)
			return pass(COUNTER_PASSED);
		if (bpf_ntohs(ip6->payload_len) < UDP_HDR_LEN)
			return pass(COUNTER_MALFORMED);
		off += IPV6_HLEN;
	} else {
		return pass(COUNTER_PASSED);
	}

	/* Keep the variable offset visibly bounded for the verifier. */
	if (off > ETH_HLEN + 2 * VLAN_HLEN + 60)
		return pass(COUNTER_MALFORMED);
	udp = data + off;
	if ((void *)(udp + 1) > end)
		return pass(COUNTER_MALFORMED);
	{
		__u16 dport = bpf_ntohs(udp->dest);

		if (!bpf_map_lookup_elem(&ports, &dport))
			return pass(COUNTER_PASSED);
	}
	count(COUNTER_MATCHED);

	ulen = bpf_ntohs(udp->len);
	if (ulen < UDP_HDR_LEN)
		return pass(COUNTER_MALFORMED);
	if (ulen < UDP_HDR_LEN + CONN_ID_LEN)
		return pass(COUNTER_PASS_SHORT);
	payload = (__u8 *)(udp + 1);
	if ((void *)(payload + CONN_ID_LEN) > end)
		return pass(COUNTER_MALFORMED); /* truncated: shorter than its UDP length */
	if ((void *)payload + (ulen - UDP_HDR_LEN) > end)
		return pass(COUNTER_MALFORMED);
	if (end - data > max_frame)
		return pass(COUNTER_PASS_BIG);

	n = nshards;
	if (n == 0 || n > MAX_SHARDS)
		n = 1;
	if (ulen >= UDP_HDR_LEN + PKT_FLAGS_OFF + 1 && (void *)(payload + PKT_FLAGS_OFF + 1) <= end &&
	    (payload[PKT_FLAGS_OFF] & PKT_FLAG_HANDSHAKE)) {
		shard = ctx->rx_queue_index; /* handshake: the queue's shard */
		handshake = 1;
		if (shard >= n)
			return pass(COUNTER_PASS_QUEUE);
	} else {
		shard = (__u32)payload[CONN_ID_SHARD_OFF] % n;
		if (shard != ctx->rx_queue_index)
			return pass(COUNTER_PASS_QUEUE);
	}

	ret = bpf_redirect_map(&xsks, shard, XDP_PASS);
	if (ret != XDP_REDIRECT)
		return pass(COUNTER_PASS_NOSOCK);
	if (handshake)
		count(COUNTER_HANDSHAKE);
	count(COUNTER_REDIRECTED);
	return XDP_REDIRECT;
}

char _license[] SEC("license") = "Dual MIT/GPL";
