// Package testnet builds throw-away network topologies out of Linux network
// namespaces and veth pairs, for tests and benchmarks that need real kernel
// networking between "hosts" on one machine.
//
// # Topology
//
// With two hosts, the hosts are joined by one veth pair (a line):
//
//	host a: veth0 198.18.0.1/24  <-- veth -->  host b: veth0 198.18.0.2/24
//
// With three or more hosts, each host's veth0 is paired with a port of a
// Linux bridge "br0" that lives in an extra "hub" namespace:
//
//	host a: veth0 198.18.0.1 <--> hub: pa ┐
//	host b: veth0 198.18.0.2 <--> hub: pb ├ br0
//	host c: veth0 198.18.0.3 <--> hub: pc ┘
//
// Host i (0-based) gets 198.18.0.(i+1)/24, taken from the benchmarking range
// 198.18.0.0/15 (RFC 2544) and, when Config.IPv6 is set, 2001:db8::(i+1)/64
// from the documentation range (added with IFA_F_NODAD, so usable at once).
// Every namespace has its loopback up. MTU and the number of RX/TX queues
// apply to every veth end (and to the bridge).
//
// Nothing is created in the caller's namespace: the veth pairs are created
// directly inside the host namespaces. Namespaces are named
// "<prefix>-<pid>-<n>-<role>" (n counts the topologies of the process,
// role is "a", "b", ... or "hub") and bind-mounted
// under /run/netns, so `ip netns exec` sees them and parallel runs, which
// have different pids, never collide. Close deletes everything by name, and
// CleanupStale removes what killed runs left behind.
//
// # Running code inside a host
//
// (*Host).Do runs a function on a fresh goroutine locked to its own OS
// thread that has been switched into the host's namespace. The thread is
// never handed back to the Go scheduler (it exits with the goroutine), so a
// thread in a foreign namespace can never leak into the rest of the program.
// Sockets created inside Do stay in the host's namespace for their whole
// life and may be used from any goroutine afterwards. Goroutines started
// inside Do do NOT inherit the namespace: they run on other threads, in the
// namespace of the process. (*Host).Command and (*Host).Exec run a program
// inside the host through `ip netns exec` (iproute2).
//
// Require skips a test, with a message naming what is missing, when this
// machine cannot build topologies (not root / no CAP_NET_ADMIN or
// CAP_SYS_ADMIN, no network namespaces, no veth driver).
package testnet
