// Package caps reads the calling thread's effective Linux capabilities, so
// that privileged features can say precisely what is missing.
package caps

// Capabilities this project checks for (linux/capability.h).
const (
	NetAdmin = 12 // CAP_NET_ADMIN
	NetRaw   = 13 // CAP_NET_RAW
	SysAdmin = 21 // CAP_SYS_ADMIN
	BPF      = 39 // CAP_BPF (Linux 5.8+)
)

// Has reports whether every capability in cs is effective; false when the
// set cannot be read.
func Has(cs ...uint) bool {
	eff, err := Effective()
	if err != nil {
		return false
	}
	for _, c := range cs {
		if eff&(1<<c) == 0 {
			return false
		}
	}
	return true
}
