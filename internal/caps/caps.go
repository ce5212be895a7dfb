// Package caps reads the calling thread's effective Linux capabilities, so
// that privileged features can say precisely what is missing.
package caps

import "golang.org/x/sys/unix"

// Capabilities this project checks for (linux/capability.h).
const (
	NetAdmin = 12 // CAP_NET_ADMIN
	SysAdmin = 21 // CAP_SYS_ADMIN
	BPF      = 39 // CAP_BPF (Linux 5.8+)
)

// Effective returns the effective capability set as a bit mask (bit n is
// capability n).
func Effective() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, err
	}
	return uint64(data[0].Effective) | uint64(data[1].Effective)<<32, nil
}

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
