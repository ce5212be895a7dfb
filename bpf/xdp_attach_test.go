package bpf

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/mxp-dataplane/mxp/testnet"
)

// attachHost builds a two-host topology and returns host b with the index
// of its veth end.
func attachHost(t *testing.T, prefix string) (*testnet.Host, int) {
	t.Helper()
	testnet.Require(t)
	if err := CheckXDP(); err != nil {
		t.Skipf("skipping: XDP unavailable: %v", err)
	}
	topo, err := testnet.New(testnet.Config{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("topology close: %v", err)
		}
	})
	b := topo.Hosts[1]
	hd, err := b.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()
	l, err := hd.LinkByName(b.Link)
	if err != nil {
		t.Fatal(err)
	}
	return b, l.Attrs().Index
}

// xdpOn returns the ID of the XDP program on the host's link (0: none) and
// how many programs the kernel reports there (native, generic).
func xdpOn(t *testing.T, h *testnet.Host) (id ebpf.ProgramID, mode uint32) {
	t.Helper()
	hd, err := h.Netlink()
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()
	l, err := hd.LinkByName(h.Link)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		return ebpf.ProgramID(x.ProgId), x.AttachMode
	}
	return 0, 0
}

func progID(t *testing.T, x *XDP) ebpf.ProgramID {
	t.Helper()
	info, err := x.Program().Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Skip("skipping: kernel reports no program IDs")
	}
	return id
}

// progGone waits for the kernel to free program id.
func progGone(id ebpf.ProgramID) bool {
	for range 100 {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			return true
		}
		p.Close()
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// A program attached through netlink and left behind (its loader gone
// without detaching, as a crash leaves it) is replaced by the next Attach:
// one program on the interface afterwards, the new one, and the old one
// freed.
func TestXDPAttachReplacesStale(t *testing.T) {
	b, ifindex := attachHost(t, "mxpxstale")
	var oldID ebpf.ProgramID
	err := b.Do(func() error {
		x1, err := LoadXDP(XDPOptions{Ports: []uint16{4433}, Shards: 1})
		if err != nil {
			return err
		}
		oldID = progID(t, x1)
		if _, err := x1.AttachLegacy(ifindex, XDPModeNative); err != nil {
			return err
		}
		return x1.Close() // "crash": the program stays attached
	})
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := xdpOn(t, b); id != oldID {
		t.Fatalf("after the simulated crash the link has program %d, want the stale %d", id, oldID)
	}
	var x2 *XDP
	var a2 *XDPAttachment
	err = b.Do(func() (err error) {
		if x2, err = LoadXDP(XDPOptions{Ports: []uint16{4433}, Shards: 1}); err != nil {
			return err
		}
		a2, err = x2.Attach(ifindex, XDPModeAuto)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer x2.Close()
	if a2.Replaced() != oldID {
		t.Errorf("Replaced() = %d, want %d", a2.Replaced(), oldID)
	}
	if a2.Mode() != XDPModeNative || a2.Legacy() {
		t.Errorf("attached in %v mode (legacy %v), want native through a link", a2.Mode(), a2.Legacy())
	}
	newID := progID(t, x2)
	if id, mode := xdpOn(t, b); id != newID || mode != 1 {
		t.Errorf("link has program %d in mode %d, want %d native (one program)", id, mode, newID)
	}
	if !progGone(oldID) {
		t.Errorf("stale program %d still exists", oldID)
	}
	if err := a2.Detach(); err != nil {
		t.Fatal(err)
	}
	if id, _ := xdpOn(t, b); id != 0 {
		t.Errorf("program %d still attached after Detach", id)
	}
}

// Someone else's program, or MXP's held by a live link, is not replaced.
func TestXDPAttachBusy(t *testing.T) {
	b, ifindex := attachHost(t, "mxpxbusy")
	other, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "other_xdp", Type: ebpf.XDP, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	err = b.Do(func() error {
		l, err := netlink.LinkByIndex(ifindex)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetXdpFdWithFlags(l, other.FD(), 4 /* XDP_FLAGS_DRV_MODE */); err != nil {
			return err
		}
		x, err := LoadXDP(XDPOptions{Ports: []uint16{4433}, Shards: 1})
		if err != nil {
			return err
		}
		defer x.Close()
		if _, err := x.Attach(ifindex, XDPModeAuto); !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "other_xdp") {
			return fmt.Errorf("Attach over someone else's program: %v, want ErrBusy naming it", err)
		}
		if err := netlink.LinkSetXdpFdWithFlags(l, -1, 4); err != nil {
			return err
		}
		a, err := x.Attach(ifindex, XDPModeAuto)
		if err != nil {
			return err
		}
		defer a.Detach()
		x2, err := LoadXDP(XDPOptions{Ports: []uint16{4433}, Shards: 1})
		if err != nil {
			return err
		}
		defer x2.Close()
		if _, err := x2.Attach(ifindex, XDPModeAuto); !errors.Is(err, ErrBusy) {
			return fmt.Errorf("Attach over a live MXP link: %v, want ErrBusy", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestXDPAttachGeneric(t *testing.T) {
	b, ifindex := attachHost(t, "mxpxgen")
	err := b.Do(func() error {
		x, err := LoadXDP(XDPOptions{Ports: []uint16{4433}, Shards: 1})
		if err != nil {
			return err
		}
		defer x.Close()
		a, err := x.Attach(ifindex, XDPModeGeneric)
		if err != nil {
			return err
		}
		if a.Mode() != XDPModeGeneric {
			return fmt.Errorf("mode %v", a.Mode())
		}
		if _, mode := xdpOn(t, b); mode != 2 {
			return fmt.Errorf("kernel reports attach mode %d, want 2 (generic)", mode)
		}
		return a.Detach()
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A real crash: a child process attaches and is killed with SIGKILL. Its
// BPF link dies with it, leaving nothing; a legacy attachment stays, and
// the next Attach replaces it.
func TestXDPAttachAfterKill(t *testing.T) {
	b, ifindex := attachHost(t, "mxpxkill")
	nsPath := filepath.Join(testnet.NetnsDir, b.Name)
	for _, legacy := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestXDPCrashHelper$", "-test.v")
		cmd.Env = append(os.Environ(), fmt.Sprintf("MXP_XDP_HELPER=%s,%d,%v", nsPath, ifindex, legacy))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var childID ebpf.ProgramID
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "attached "); ok {
				n, _ := strconv.Atoi(v)
				childID = ebpf.ProgramID(n)
				break
			}
		}
		if childID == 0 {
			cmd.Process.Kill()
			cmd.Wait()
			cancel()
			t.Fatalf("legacy=%v: the helper did not attach", legacy)
		}
		if id, _ := xdpOn(t, b); id != childID {
			t.Errorf("legacy=%v: link has program %d, the child attached %d", legacy, id, childID)
		}
		cmd.Process.Kill() // SIGKILL: no cleanup in the child
		cmd.Wait()
		cancel()
		if !legacy {
			if !progGone(childID) {
				t.Errorf("the killed child's linked program %d still exists", childID)
			}
			if id, _ := xdpOn(t, b); id != 0 {
				t.Errorf("program %d left on the link after the child was killed", id)
			}
			continue
		}
		if id, _ := xdpOn(t, b); id != childID {
			t.Fatalf("legacy attachment did not survive the kill (link has %d)", id)
		}
		err = b.Do(func() error {
			x, err := LoadXDP(XDPOptions{Ports: []uint16{4433}, Shards: 1})
			if err != nil {
				return err
			}
			defer x.Close()
			a, err := x.Attach(ifindex, XDPModeAuto)
			if err != nil {
				return err
			}
			defer a.Detach()
			if a.Replaced() != childID {
				return fmt.Errorf("Replaced() = %d, want the killed child's %d", a.Replaced(), childID)
			}
			if id, _ := xdpOn(t, b); id != progID(t, x) {
				return fmt.Errorf("link has program %d, want ours %d", id, progID(t, x))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !progGone(childID) {
			t.Errorf("replaced program %d still exists", childID)
		}
	}
}

// TestXDPCrashHelper is the child of TestXDPAttachAfterKill: it attaches
// in the namespace it is told, says so, and waits to be killed.
func TestXDPCrashHelper(t *testing.T) {
	arg := os.Getenv("MXP_XDP_HELPER")
	if arg == "" {
		t.Skip("helper process of TestXDPAttachAfterKill")
	}
	parts := strings.Split(arg, ",")
	ifindex, _ := strconv.Atoi(parts[1])
	runtime.LockOSThread()
	ns, err := netns.GetFromPath(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	x, err := LoadXDP(XDPOptions{Ports: []uint16{4433}, Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	if parts[2] == "true" {
		_, err = x.AttachLegacy(ifindex, XDPModeNative)
	} else {
		_, err = x.Attach(ifindex, XDPModeNative)
	}
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("attached %d\n", progID(t, x))
	time.Sleep(20 * time.Second) // bounded: the parent kills us long before
}
