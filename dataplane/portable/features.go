package portable

// Features reports what the kernel offered a socket of this backend.
type Features struct {
	GSO, GRO bool
	// RecvBuffer and SendBuffer are the socket buffer sizes the kernel set.
	RecvBuffer, SendBuffer int
	// SteeredByBPF is true when the shards' sockets are steered by the
	// SK_REUSEPORT program rather than the kernel's hash.
	SteeredByBPF bool
}
