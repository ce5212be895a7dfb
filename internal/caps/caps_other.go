//go:build !linux

package caps

import "errors"

// Effective fails: capabilities are Linux's.
func Effective() (uint64, error) { return 0, errors.New("caps: Linux capabilities only") }
