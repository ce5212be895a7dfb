//go:build ignore

/* XDP definitions for xdp_steer.c, on top of bpf_defs.h: UAPI values and
 * the wire layouts of the headers the program parses. Self-contained so that
 * generating needs clang only. */
#ifndef MXP_XDP_DEFS_H
#define MXP_XDP_DEFS_H

#include "bpf_defs.h"

/* enum bpf_map_type */
#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_XSKMAP 17

/* enum xdp_action */
#define XDP_ABORTED 0
#define XDP_DROP 1
#define XDP_PASS 2
#define XDP_TX 3
#define XDP_REDIRECT 4

/* EtherTypes (host order; compared after bpf_ntohs). */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define ETH_HLEN 14
#define VLAN_HLEN 4
#define IPV6_HLEN 40

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define bpf_ntohs(x) __builtin_bswap16(x)
#else
#define bpf_ntohs(x) (x)
#endif

/* The context of XDP programs (UAPI struct xdp_md). */
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

struct ethhdr {
	__u8 h_dest[6];
	__u8 h_source[6];
	__u16 h_proto;
} __attribute__((packed));

struct vlan_hdr {
	__u16 tci;
	__u16 encap_proto;
};

struct iphdr {
	__u8 ver_ihl; /* version (high nibble), header length in words (low) */
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off; /* flags (3 bits) and fragment offset (13 bits) */
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct ipv6hdr {
	__u32 ver_tc_flow;
	__u16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct udphdr {
	__u16 source;
	__u16 dest;
	__u16 len;
	__u16 check;
};

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;

#endif
