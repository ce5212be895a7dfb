package bpf

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// TestSKReuseportOffsets establishes, on the running kernel, what the
// sk_reuseport context's offsets are relative to for UDP, which reuseport.c
// relies on: a probe program (built here with the asm package, no clang
// needed) records, for one datagram, the first 16 bytes from
// bpf_skb_load_bytes(md, 0, ...), md->len, and the first 8 bytes at
// md->data. For UDP all three start at the UDP header: source port,
// destination port, length (8 + payload), checksum, then the payload. So
// payload byte 7, the shard byte, is at offset 15.
func TestSKReuseportOffsets(t *testing.T) {
	load(t, 1) // skips with the reason when BPF is unavailable

	// value: [0:16] load_bytes(0,16), [16:24] len, [24:32] *(u64 *)data
	// (zero when fewer than 8 bytes are linear).
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 32, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const val = -32 // value on the stack: fp-32 .. fp-1
	const key = -36
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R5, 0),
		asm.StoreMem(asm.RFP, val+24, asm.R5, asm.DWord),
		// bpf_skb_load_bytes(md, 0, fp+val, 16)
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, 0),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, val),
		asm.Mov.Imm(asm.R4, 16),
		asm.FnSkbLoadBytes.Call(),
		// md->len (offset 16 in struct sk_reuseport_md)
		asm.LoadMem(asm.R1, asm.R6, 16, asm.Word),
		asm.StoreMem(asm.RFP, val+16, asm.R1, asm.DWord),
		// md->data (0), md->data_end (8): copy 8 bytes if linear
		asm.LoadMem(asm.R2, asm.R6, 0, asm.DWord),
		asm.LoadMem(asm.R3, asm.R6, 8, asm.DWord),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, 8),
		asm.JGT.Reg(asm.R4, asm.R3, "update"),
		asm.LoadMem(asm.R5, asm.R2, 0, asm.DWord),
		asm.StoreMem(asm.RFP, val+24, asm.R5, asm.DWord),
		// map[0] = value
		asm.Mov.Imm(asm.R5, 0).WithSymbol("update"),
		asm.StoreMem(asm.RFP, key, asm.R5, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, key),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, val),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 1), // SK_PASS, no selection
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SkReuseport, Instructions: insns, License: "Dual MIT/GPL"})
	if err != nil {
		t.Fatalf("load probe program: %v", err)
	}
	defer prog.Close()

	for _, ip := range []string{"127.0.0.1", "::1"} {
		t.Run(ip, func(t *testing.T) {
			conns, dst := group(t, ip, 2)
			attach := func(fd int) error {
				return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_EBPF, prog.FD())
			}
			if err := withFD(conns[0], "attach probe", attach); err != nil {
				t.Fatal(err)
			}
			tx, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(dst))
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Close()
			payload := []byte("0123456789abcdefghij")
			if _, err := tx.Write(payload); err != nil {
				t.Fatal(err)
			}
			if got := collect(t, conns, 1, 20*time.Millisecond); len(got[0])+len(got[1]) != 1 {
				t.Fatalf("datagram not received once: %v", got)
			}
			v := make([]byte, 32)
			if err := m.Lookup(uint32(0), &v); err != nil {
				t.Fatal(err)
			}
			src := tx.LocalAddr().(*net.UDPAddr).Port
			t.Logf("load_bytes(0,16)=% x len=%d data[0:8]=% x (src port %d, dst port %d)", v[:16], binary.LittleEndian.Uint64(v[16:]), v[24:32], src, dst.Port())
			hdr := v[:8]
			if p := binary.BigEndian.Uint16(hdr[0:]); int(p) != src {
				t.Errorf("load_bytes offset 0: source port %d, want %d (bytes %x)", p, src, v[:16])
			}
			if p := binary.BigEndian.Uint16(hdr[2:]); p != dst.Port() {
				t.Errorf("load_bytes offset 2: destination port %d, want %d (bytes %x)", p, dst.Port(), v[:16])
			}
			if l := binary.BigEndian.Uint16(hdr[4:]); int(l) != 8+len(payload) {
				t.Errorf("load_bytes offset 4: UDP length %d, want %d", l, 8+len(payload))
			}
			if !bytes.Equal(v[8:16], payload[:8]) {
				t.Errorf("load_bytes offsets 8..15 = %q, want the payload's first 8 bytes %q", v[8:16], payload[:8])
			}
			if l := binary.LittleEndian.Uint64(v[16:]); int(l) != 8+len(payload) {
				t.Errorf("md->len = %d, want UDP header + payload = %d", l, 8+len(payload))
			}
			if !bytes.Equal(v[24:32], hdr) {
				t.Errorf("first 8 bytes at md->data = %x, want the UDP header %x", v[24:32], hdr)
			}
		})
	}
}
