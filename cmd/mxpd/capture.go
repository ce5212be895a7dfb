package main

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"time"

	"github.com/mxp-dataplane/mxp/mesh"
)

// capturedJSON is one line of the control socket's capture stream.
type capturedJSON struct {
	TimeNs int64  `json:"ts"`
	From   string `json:"from"`
	To     string `json:"to"`
	Msg    string `json:"msg"` // hex of the encoded MXP message
}

// serveCapture streams what the node receives to the control client for d.
func serveCapture(c net.Conn, node *mesh.Node, d time.Duration) {
	lines := make(chan capturedJSON, 4096)
	var dropped atomic.Uint64
	node.SetCapture(func(m mesh.Captured) {
		select {
		case lines <- capturedJSON{m.Time.UnixNano(), m.From.String(), m.To.String(), hex.EncodeToString(m.Message)}:
		default:
			dropped.Add(1) // never block a shard: a slow reader loses messages
		}
	})
	defer node.SetCapture(nil)
	c.SetDeadline(time.Now().Add(d + 5*time.Second))
	enc := json.NewEncoder(c)
	end := time.After(d)
	for {
		select {
		case l := <-lines:
			if enc.Encode(l) != nil {
				return
			}
		case <-end:
			return
		}
	}
}

// debugCapture writes the node's decrypted traffic to a pcap file: each MXP
// message in a synthetic IP/UDP packet between the agent and the node
// (LINKTYPE_RAW), so Wireshark and tcpdump read it.
func debugCapture(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("debug capture", flag.ContinueOnError)
	fs.SetOutput(stderr)
	control := fs.String("control", defaultControlPath(), "the node's control socket")
	output := fs.String("output", "mxp.pcap", "pcap file to write")
	d := fs.Duration("duration", 10*time.Second, "how long to capture")
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	c, err := net.DialTimeout("unix", *control, 2*time.Second)
	if err != nil {
		fmt.Fprintf(stderr, "mxpd debug capture: no node on %s: %v\n", *control, err)
		return 1
	}
	defer c.Close()
	if err := json.NewEncoder(c).Encode(controlRequest{Cmd: "capture", Seconds: d.Seconds()}); err != nil {
		fmt.Fprintf(stderr, "mxpd debug capture: %v\n", err)
		return 1
	}
	f, err := os.Create(*output)
	if err != nil {
		fmt.Fprintf(stderr, "mxpd debug capture: %v\n", err)
		return 1
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	defer w.Flush()
	writePcapHeader(w)
	sc := bufio.NewScanner(c)
	sc.Buffer(nil, 40<<20)
	n := 0
	for sc.Scan() {
		var l capturedJSON
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		msg, err1 := hex.DecodeString(l.Msg)
		from, err2 := netip.ParseAddrPort(l.From)
		to, err3 := netip.ParseAddrPort(l.To)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		writePcapRecord(w, time.Unix(0, l.TimeNs), from, to, msg)
		n++
	}
	fmt.Fprintf(stdout, "captured %d messages into %s\n", n, *output)
	return 0
}

func writePcapHeader(w io.Writer) {
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], 0x40000) // snap length
	binary.LittleEndian.PutUint32(h[20:], 101)     // LINKTYPE_RAW: IPv4 or IPv6
	w.Write(h[:])
}

// writePcapRecord writes one message as an IP/UDP packet from -> to.
func writePcapRecord(w io.Writer, t time.Time, from, to netip.AddrPort, payload []byte) {
	var pkt []byte
	udpLen := 8 + len(payload)
	if from.Addr().Is4() && to.Addr().Is4() {
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, 17
		total := min(20+udpLen, 0xffff)
		binary.BigEndian.PutUint16(ip[2:], uint16(total))
		f4, t4 := from.Addr().As4(), to.Addr().As4()
		copy(ip[12:], f4[:])
		copy(ip[16:], t4[:])
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		pkt = ip
	} else {
		ip := make([]byte, 40)
		ip[0], ip[6], ip[7] = 0x60, 17, 64
		binary.BigEndian.PutUint16(ip[4:], uint16(min(udpLen, 0xffff)))
		f16, t16 := from.Addr().As16(), to.Addr().As16()
		copy(ip[8:], f16[:])
		copy(ip[24:], t16[:])
		pkt = ip
	}
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:], from.Port())
	binary.BigEndian.PutUint16(udp[2:], to.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(min(udpLen, 0xffff)))
	pkt = append(append(pkt, udp...), payload...)
	var rec [16]byte
	binary.LittleEndian.PutUint32(rec[0:], uint32(t.Unix()))
	binary.LittleEndian.PutUint32(rec[4:], uint32(t.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(rec[8:], uint32(len(pkt)))
	binary.LittleEndian.PutUint32(rec[12:], uint32(len(pkt)))
	w.Write(rec[:])
	w.Write(pkt)
}
