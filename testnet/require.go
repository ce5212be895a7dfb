//go:build linux

package testnet

import (
	"errors"
	"fmt"
	"github.com/mxp-dataplane/mxp/internal/caps"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// UnavailableError says what this machine lacks for building topologies.
type UnavailableError struct {
	// Missing names the missing thing, e.g. "root or CAP_NET_ADMIN".
	Missing string
	// Err is the underlying error, if any.
	Err error
}

func (e *UnavailableError) Error() string {
	if e.Err == nil {
		return "testnet: unavailable: needs " + e.Missing
	}
	return "testnet: unavailable: needs " + e.Missing + ": " + e.Err.Error()
}

func (e *UnavailableError) Unwrap() error { return e.Err }

var (
	probeOnce sync.Once
	probeErr  error
)

// Probe tells whether topologies can be built here: nil, or an
// *UnavailableError naming what is missing. It checks the capabilities,
// then really creates a named namespace with a veth pair in it and deletes
// them. The result is computed once per process.
func Probe() error {
	probeOnce.Do(func() { probeErr = probe() })
	return probeErr
}

func probe() error {
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return &UnavailableError{Missing: "network namespace support in the kernel (CONFIG_NET_NS)", Err: err}
	}
	eff, err := caps.Effective()
	if err != nil {
		return &UnavailableError{Missing: "a readable capability set (capget)", Err: err}
	}
	if eff&(1<<caps.NetAdmin) == 0 {
		return &UnavailableError{Missing: fmt.Sprintf("CAP_NET_ADMIN: run as root (uid %d has not got it)", os.Geteuid())}
	}
	if eff&(1<<caps.SysAdmin) == 0 {
		return &UnavailableError{Missing: fmt.Sprintf("CAP_SYS_ADMIN, to create and enter namespaces: run as root (uid %d has not got it)", os.Geteuid())}
	}
	name := fmt.Sprintf("testnetprobe-%d-%d", os.Getpid(), topoSeq.Add(1))
	ns, err := createNamedNetns(name)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return &UnavailableError{Missing: "network namespace support in the kernel (CONFIG_NET_NS)", Err: err}
		}
		return &UnavailableError{Missing: "permission to create and bind-mount network namespaces under " + NetnsDir, Err: err}
	}
	defer func() {
		ns.Close()
		deleteNamedNetns(name)
	}()
	hd, err := netlink.NewHandleAt(ns)
	if err != nil {
		return &UnavailableError{Missing: "netlink inside a network namespace", Err: err}
	}
	defer hd.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "probe0"}, PeerName: "probe1"}
	if err := hd.LinkAdd(veth); err != nil {
		return &UnavailableError{Missing: "the veth driver (CONFIG_VETH, module veth)", Err: err}
	}
	if err := hd.LinkDel(veth); err != nil {
		return &UnavailableError{Missing: "permission to delete links", Err: err}
	}
	return nil
}

// Require skips the test, saying what is missing, unless Probe succeeds.
func Require(t testing.TB) {
	t.Helper()
	if err := Probe(); err != nil {
		t.Skipf("skipping: network-namespace topology unavailable: %v", err)
	}
}

// RequireExec is Require plus iproute2's ip command, which Host.Command and
// Host.Exec use.
func RequireExec(t testing.TB) {
	t.Helper()
	Require(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skipf("skipping: needs iproute2's ip command for Host.Exec (apt-get install iproute2; scripts/deps.sh does it as root): %v", err)
	}
}

// NewT builds a topology for a test: it skips the test (Require) where
// topologies cannot be built, fails it if building fails, and closes the
// topology when the test ends.
func NewT(t testing.TB, cfg Config) *Topology {
	t.Helper()
	Require(t)
	topo, err := New(cfg)
	if err != nil {
		t.Fatalf("testnet.New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("topology close: %v", err)
		}
	})
	return topo
}
