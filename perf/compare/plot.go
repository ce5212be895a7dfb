//go:build linux

package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Plots are SVG written directly: a latency CDF per payload and a
// throughput bar chart per payload.

var palette = []string{
	"#000000", "#d62728", "#ff7f0e", "#bcbd22", "#1f77b4", "#17becf",
	"#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#393b79",
	"#637939", "#b5cf6b", "#e7ba52", "#843c39",
}

func colorOf(i int) string { return palette[i%len(palette)] }

// usLabel formats a microsecond axis value: 20 µs, 1 ms, 500 ms, 2 s.
func usLabel(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%g s", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%g ms", v/1e3)
	}
	return fmt.Sprintf("%g µs", v)
}

func svgEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

type svg struct{ strings.Builder }

func newSVG(w, h int) *svg {
	s := &svg{}
	fmt.Fprintf(s, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(s, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	return s
}

func (s *svg) text(x, y float64, anchor, str string, extra ...string) {
	fmt.Fprintf(s, `<text x="%.1f" y="%.1f" text-anchor="%s" %s>%s</text>`+"\n", x, y, anchor, strings.Join(extra, " "), svgEscape(str))
}

func (s *svg) line(x1, y1, x2, y2 float64, stroke string, width float64) {
	fmt.Fprintf(s, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f"/>`+"\n", x1, y1, x2, y2, stroke, width)
}

func (s *svg) done() string { return s.String() + "</svg>\n" }

// cdfSVG plots the latency CDF of each system at one payload, x on a log
// scale up to the largest p99.9.
func cdfSVG(title string, systems []string, samples map[string][]float64) string {
	const W, H = 960, 520
	const left, right, top, bottom = 70.0, 250.0, 40.0, 60.0
	pw, ph := W-left-right, H-top-bottom
	lo, hi := math.Inf(1), 0.0
	for _, s := range systems {
		v := samples[s]
		if len(v) == 0 {
			continue
		}
		lo = min(lo, v[0])
		hi = max(hi, quantile(v, 0.999))
	}
	g := newSVG(W, H)
	g.text(W/2, 22, "middle", title, `font-size="15"`)
	if hi == 0 {
		g.text(W/2, H/2, "middle", "no samples")
		return g.done()
	}
	l0, l1 := math.Floor(math.Log10(max(lo, 0.1))), math.Ceil(math.Log10(hi))
	if l1 <= l0 {
		l1 = l0 + 1
	}
	xOf := func(v float64) float64 {
		return left + (math.Log10(max(v, 0.1))-l0)/(l1-l0)*pw
	}
	yOf := func(q float64) float64 { return top + (1-q)*ph }
	// Grid and axes.
	for e := l0; e <= l1; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if math.Log10(v) > l1+1e-9 {
				break
			}
			x := xOf(v)
			g.line(x, top, x, top+ph, "#e0e0e0", 1)
			// Label 2 and 5 only when there is room (few decades).
			if m == 1 || l1-l0 <= 3 {
				g.text(x, top+ph+18, "middle", usLabel(v))
			}
		}
	}
	for _, q := range []float64{0, 0.25, 0.5, 0.75, 0.9, 1} {
		y := yOf(q)
		g.line(left, y, left+pw, y, "#e0e0e0", 1)
		g.text(left-8, y+4, "end", fmt.Sprintf("%g", q))
	}
	g.line(left, top+ph, left+pw, top+ph, "black", 1)
	g.line(left, top, left, top+ph, "black", 1)
	g.text(left+pw/2, H-18, "middle", "latency (log scale)")
	g.text(18, top+ph/2, "middle", "fraction of calls ≤ x", fmt.Sprintf(`transform="rotate(-90 18 %.1f)"`, top+ph/2))
	ly := top + 10
	for i, s := range systems {
		v := samples[s]
		if len(v) == 0 {
			continue
		}
		var pts []string
		const steps = 400
		for k := 0; k <= steps; k++ {
			q := 0.999 * float64(k) / steps
			x := min(xOf(quantile(v, q)), left+pw)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, yOf(q)))
		}
		fmt.Fprintf(g, `<polyline fill="none" stroke="%s" stroke-width="1.8" points="%s"/>`+"\n", colorOf(i), strings.Join(pts, " "))
		g.line(left+pw+15, ly, left+pw+40, ly, colorOf(i), 3)
		g.text(left+pw+46, ly+4, "start", fmt.Sprintf("%s (p50 %s µs)", s, num(f64(quantile(v, 0.5)))))
		ly += 20
	}
	return g.done()
}

// barsSVG plots req/s per system, one bar per connection count.
func barsSVG(title string, systems []string, conns []int, value func(system string, conns int) *float64) string {
	const W, H = 900, 480
	const left, right, top, bottom = 80.0, 20.0, 50.0, 110.0
	pw, ph := W-left-right, H-top-bottom
	hi := 0.0
	for _, s := range systems {
		for _, c := range conns {
			if v := value(s, c); v != nil {
				hi = max(hi, *v)
			}
		}
	}
	g := newSVG(W, H)
	g.text(W/2, 22, "middle", title, `font-size="15"`)
	if hi == 0 || len(systems) == 0 {
		g.text(W/2, H/2, "middle", "no data")
		return g.done()
	}
	step := math.Pow(10, math.Floor(math.Log10(hi)))
	for hi/step < 4 {
		step /= 2
	}
	top1 := math.Ceil(hi/step) * step
	yOf := func(v float64) float64 { return top + (1-v/top1)*ph }
	for v := 0.0; v <= top1+step/2; v += step {
		y := yOf(v)
		g.line(left, y, left+pw, y, "#e0e0e0", 1)
		g.text(left-8, y+4, "end", num(f64(v)))
	}
	g.line(left, top+ph, left+pw, top+ph, "black", 1)
	g.text(20, top+ph/2, "middle", "requests/s", fmt.Sprintf(`transform="rotate(-90 20 %.1f)"`, top+ph/2))
	group := pw / float64(len(systems))
	bw := group * 0.8 / float64(len(conns))
	for i, s := range systems {
		x0 := left + float64(i)*group + group*0.1
		for j, c := range conns {
			v := value(s, c)
			if v == nil {
				continue
			}
			y := yOf(*v)
			fmt.Fprintf(g, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %d conn: %.0f req/s</title></rect>`+"\n",
				x0+float64(j)*bw, y, bw-1, top+ph-y, colorOf(j+4), svgEscape(s), c, *v)
		}
		cx := left + float64(i)*group + group/2
		g.text(cx, top+ph+14, "end", s, fmt.Sprintf(`transform="rotate(-40 %.1f %.1f)"`, cx, top+ph+14))
	}
	for j, c := range conns {
		x := left + 10 + float64(j)*150
		fmt.Fprintf(g, `<rect x="%.1f" y="32" width="12" height="12" fill="%s"/>`+"\n", x, colorOf(j+4))
		g.text(x+16, 43, "start", fmt.Sprintf("%d connection(s)", c))
	}
	return g.done()
}

// writePlots writes the SVGs and returns their file names.
func writePlots(dir string, res *Results, cfg Config) ([]string, error) {
	systems := systemsIn(res.Rows)
	ix := index(res.Rows)
	var files []string
	for _, pl := range cfg.LatencyPayloads {
		samples := map[string][]float64{}
		var with []string
		for _, s := range systems {
			if v := res.Latency[s][pl]; len(v) > 0 {
				samples[s] = v
				with = append(with, s)
			}
		}
		name := fmt.Sprintf("latency_cdf_%d.svg", pl)
		title := fmt.Sprintf("Sequential call latency, %d B payload, one connection", pl)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(cdfSVG(title, with, samples)), 0o644); err != nil {
			return files, err
		}
		files = append(files, name)
	}
	for _, pl := range cfg.TputPayloads {
		var with []string
		for _, s := range systems {
			for _, c := range cfg.Conns {
				if r, ok := ix[rowKey{s, WConc(c), pl}]; ok && r.ReqPerS != nil {
					with = append(with, s)
					break
				}
			}
		}
		name := fmt.Sprintf("throughput_%d.svg", pl)
		title := fmt.Sprintf("%d concurrent callers, %d B payload", cfg.Callers, pl)
		svg := barsSVG(title, with, cfg.Conns, func(s string, c int) *float64 {
			return ix[rowKey{s, WConc(c), pl}].ReqPerS
		})
		if err := os.WriteFile(filepath.Join(dir, name), []byte(svg), 0o644); err != nil {
			return files, err
		}
		files = append(files, name)
	}
	return files, nil
}
