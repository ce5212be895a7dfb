// Package uring is the io_uring dataplane backend: one ring and one
// SO_REUSEPORT UDP socket per shard. Receiving is one multishot
// IORING_OP_RECVMSG per socket that draws buffers from a provided-buffer
// ring, so one submission yields datagram after datagram (GRO-coalesced ones
// split into views, with their source addresses), handed to the Handler
// without a copy and given back to the ring on Release. Sending is batched
// IORING_OP_SENDMSG with UDP_SEGMENT (GSO) from a per-shard slab of send
// buffers that stay in flight until their completions. By default a shard
// is not tied to a thread: it parks in Go's network poller on its socket,
// and each receive drains the socket without waiting (MSG_DONTWAIT), so no
// request is left for a thread the goroutine has left. With ThreadPerShard
// (or Pin, or SQPoll) the receive stays armed and Wait is one io_uring_enter
// with a timeout, woken by an eventfd read on the same ring. The ring driver
// is the subpackage ring; see docs/uring.md. The package never logs.
package uring
