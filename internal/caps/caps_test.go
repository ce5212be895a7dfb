package caps

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Effective agrees with the kernel's own report in /proc/self/status.
func TestEffectiveMatchesProc(t *testing.T) {
	got, err := Effective()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status to compare with: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			want, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("Effective() = %#x, /proc says %#x", got, want)
			}
			if Has(NetAdmin) != (want&(1<<NetAdmin) != 0) {
				t.Fatal("Has(NetAdmin) disagrees")
			}
			return
		}
	}
	t.Fatal("no CapEff line in /proc/self/status")
}
