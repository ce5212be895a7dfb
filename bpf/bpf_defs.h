//go:build ignore

/* Minimal, self-contained definitions for the programs in this directory,
 * so that generating them needs clang only (no kernel or libbpf headers).
 * Every value here is Linux UAPI (include/uapi/linux/bpf.h) and stable. */
#ifndef MXP_BPF_DEFS_H
#define MXP_BPF_DEFS_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

/* enum bpf_map_type */
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_REUSEPORT_SOCKARRAY 20

/* enum sk_action */
#define SK_DROP 0
#define SK_PASS 1

#define IPPROTO_UDP 17

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))

#define __bpf_md_ptr(type, name) \
	union {                      \
		type name;               \
		__u64 : 64;              \
	} __attribute__((aligned(8)))

struct bpf_sock;

/* The context of BPF_PROG_TYPE_SK_REUSEPORT programs (UAPI layout). data,
 * len and the offsets taken by bpf_skb_load_bytes() all start at the
 * transport (here UDP) header, not at the UDP payload. */
struct sk_reuseport_md {
	__bpf_md_ptr(void *, data);
	__bpf_md_ptr(void *, data_end);
	__u32 len;
	__u32 eth_protocol;
	__u32 ip_protocol;
	__u32 bind_inany;
	__u32 hash;
	__bpf_md_ptr(struct bpf_sock *, sk);
	__bpf_md_ptr(struct bpf_sock *, migrating_sk);
};

/* Helpers, by their UAPI numbers (enum bpf_func_id). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_skb_load_bytes)(const void *ctx, __u32 offset, void *to, __u32 len) = (void *)26;
static long (*bpf_sk_select_reuseport)(struct sk_reuseport_md *reuse, void *map, void *key, __u64 flags) = (void *)82;

#endif
