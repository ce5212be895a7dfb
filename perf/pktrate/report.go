//go:build linux

package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Row is one line of netns-bench.json: a backend's receive rate at one
// payload size, measured with the sender paced at a rate the receiver kept
// up with (see docs/performance.md).
type Row struct {
	Backend        string  `json:"backend"`
	Payload        int     `json:"payload"`
	PPS            float64 `json:"pps"`
	Gbps           float64 `json:"gbps"`
	CPUNsPerPkt    float64 `json:"cpu_ns_per_pkt"`
	Lost           int64   `json:"lost"`
	SendCPUNsPerPk float64 `json:"send_cpu_ns_per_pkt"`
	Shards         int     `json:"shards"`
	Offloads       string  `json:"offloads,omitempty"`
	MaxPPS         float64 `json:"max_pps"` // the unpaced probe's receive rate
	MaxLost        int64   `json:"max_lost"`
}

// series names the row in the plot: the backend, with its shard count if > 1.
func (r Row) series() string {
	if r.Shards > 1 {
		return fmt.Sprintf("%s ×%d shards", r.Backend, r.Shards)
	}
	return r.Backend
}

func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	out := fs.String("out", ".", "directory for netns-bench.json, netns-bench.md and netns-bench.svg")
	if err := fs.Parse(args); err != nil {
		return err
	}
	type pair struct{ send, recv *Result }
	runs := map[string]*pair{}
	var order []string
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var r Result
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				f.Close()
				return fmt.Errorf("%s: %w", path, err)
			}
			p := runs[r.Label]
			if p == nil {
				p = &pair{}
				runs[r.Label] = p
				order = append(order, r.Label)
			}
			if r.Role == "send" {
				p.send = &r
			} else {
				p.recv = &r
			}
		}
		f.Close()
	}
	// Labels are backend:payload:shards:phase; phase is "max" (unpaced) or
	// "paced" (at a rate the max run showed the receiver sustains); a later
	// paced run replaces an earlier one (the script retries slower on loss).
	type runs2 struct{ max, paced *pair }
	byKey := map[string]*runs2{}
	var keys []string
	for _, label := range order {
		p := runs[label]
		parts := strings.Split(label, ":")
		if p.send == nil || p.recv == nil || len(parts) != 4 {
			continue
		}
		key := strings.Join(parts[:3], ":")
		if byKey[key] == nil {
			byKey[key] = &runs2{}
			keys = append(keys, key)
		}
		if parts[3] == "max" {
			byKey[key].max = p
		} else {
			byKey[key].paced = p
		}
	}
	list := make([]Row, 0, len(keys))
	for _, k := range keys {
		rs := byKey[k]
		best := rs.paced
		if best == nil {
			best = rs.max
		}
		if best == nil {
			continue
		}
		name := strings.Split(k, ":")[0]
		if best.recv.Backend != "" {
			name = best.recv.Backend // the receiver's, with its variant (xdp-copy)
		}
		row := Row{Backend: name, Payload: best.send.Payload, Shards: best.recv.Shards, Offloads: best.recv.Offloads,
			PPS: best.recv.PPS, Gbps: best.recv.Gbps, CPUNsPerPkt: best.recv.CPUNsPerPkt, SendCPUNsPerPk: best.send.CPUNsPerPkt,
			Lost: int64(best.send.Packets) - int64(best.recv.Packets)}
		if rs.max != nil {
			row.MaxPPS, row.MaxLost = rs.max.recv.PPS, int64(rs.max.send.Packets)-int64(rs.max.recv.Packets)
		}
		list = append(list, row)
	}
	slices.SortStableFunc(list, func(a, b Row) int { return a.Payload - b.Payload })
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	j, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "netns-bench.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "netns-bench.md"), []byte(markdown(list)), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "netns-bench.svg"), []byte(barChart(list)), 0o644); err != nil {
		return err
	}
	fmt.Print(markdown(list))
	return nil
}

func markdown(rows []Row) string {
	var b strings.Builder
	b.WriteString("| backend | payload B | pkt/s | Gbit/s | recv CPU ns/pkt | send CPU ns/pkt | lost | × naive | unpaced pkt/s (lost) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	naive := map[int]float64{}
	for _, r := range rows {
		if r.Backend == "naive" && r.Shards <= 1 {
			naive[r.Payload] = r.PPS
		}
	}
	for _, r := range rows {
		ratio := "–"
		if n := naive[r.Payload]; n > 0 && r.Backend != "naive" {
			ratio = fmt.Sprintf("%.1f×", r.PPS/n)
		}
		name := r.Backend
		if r.Offloads != "" {
			name += " (" + r.Offloads + ")"
		}
		if r.Shards > 1 {
			name += fmt.Sprintf(", %d shards", r.Shards)
		}
		fmt.Fprintf(&b, "| %s | %d | %.0f | %.2f | %.0f | %.0f | %d | %s | %.0f (%d) |\n",
			name, r.Payload, r.PPS, r.Gbps, r.CPUNsPerPkt, r.SendCPUNsPerPk, r.Lost, ratio, r.MaxPPS, r.MaxLost)
	}
	return b.String()
}

// barChart draws received packets/s per backend, grouped by payload size.
func barChart(rows []Row) string {
	const w, h, left, bottom, top = 720, 360, 80, 50, 30
	var payloads []int
	var backends []string
	maxPPS := 1.0
	for _, r := range rows {
		if !slices.Contains(payloads, r.Payload) {
			payloads = append(payloads, r.Payload)
		}
		if !slices.Contains(backends, r.series()) {
			backends = append(backends, r.series())
		}
		maxPPS = math.Max(maxPPS, r.PPS)
	}
	colors := []string{"#999999", "#1f77b4", "#2ca02c", "#d62728", "#9467bd"}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="18" font-size="14">received packets/s by backend and payload (paced, no loss target)</text>`+"\n", left)
	plotH := float64(h - bottom - top)
	for i := 0; i <= 4; i++ {
		y := float64(h-bottom) - plotH*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.0f" y2="%.0f" stroke="#ddd"/><text x="%d" y="%.0f" text-anchor="end">%.2gM</text>`+"\n",
			left, w-10, y, y, left-6, y+4, maxPPS*float64(i)/4/1e6)
	}
	groupW := float64(w-left-20) / float64(max(1, len(payloads)))
	barW := groupW * 0.8 / float64(max(1, len(backends)))
	for gi, p := range payloads {
		gx := float64(left) + groupW*float64(gi) + groupW*0.1
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%d B</text>`+"\n", gx+groupW*0.4, h-bottom+18, p)
		for bi, name := range backends {
			for _, r := range rows {
				if r.Payload != p || r.series() != name {
					continue
				}
				bh := plotH * r.PPS / maxPPS
				x := gx + barW*float64(bi)
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %d B: %.0f pkt/s</title></rect>`+"\n",
					x, float64(h-bottom)-bh, barW-2, bh, colors[bi%len(colors)], html.EscapeString(name), p, r.PPS)
			}
		}
	}
	for bi, name := range backends {
		x := left + bi*130
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>`+"\n",
			x, h-18, colors[bi%len(colors)], x+16, h-8, html.EscapeString(name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}
