package loadgen

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// writeCurveSVG plots each curve's p50, p99 and p99.9 latency (log scale)
// against the write rate it reached (writes/s), one colour per curve and
// one dash per quantile, so the knee of each shows at a glance.
func writeCurveSVG(w io.Writer, title string, curves []Curve) error {
	const (
		width, height         = 900, 560
		left, right, top, bot = 80, 200, 50, 60
		plotW, plotH          = width - left - right, height - top - bot
	)
	colours := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}
	quantiles := []struct {
		name string
		dash string
		get  func(Result) float64
	}{
		{"p50", "2,3", func(r Result) float64 { return r.P50ms }},
		{"p99", "", func(r Result) float64 { return r.P99ms }},
		{"p99.9", "8,4", func(r Result) float64 { return r.P999ms }},
	}
	// Axes: x from 0 to the largest rate reached, y from the decade under
	// the smallest latency to the decade over the largest.
	maxX, minY, maxY := 0.0, math.Inf(1), 0.0
	for _, c := range curves {
		for _, s := range c.Steps {
			maxX = max(maxX, s.WritesPerS, s.RateAsked)
			for _, q := range quantiles {
				if v := q.get(s); v > 0 {
					minY, maxY = min(minY, v), max(maxY, v)
				}
			}
		}
	}
	if maxX == 0 || maxY == 0 {
		return fmt.Errorf("no step to plot")
	}
	loY, hiY := math.Floor(math.Log10(minY)), math.Ceil(math.Log10(maxY))
	if hiY == loY {
		hiY++
	}
	x := func(v float64) float64 { return left + v/maxX*plotW }
	y := func(ms float64) float64 { return top + (hiY-math.Log10(ms))/(hiY-loY)*plotH }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, height)
	fmt.Fprintf(&b, `<text x="%d" y="25" font-size="15">%s</text>`+"\n", left, html.EscapeString(title))
	// Grid and y ticks: each decade, and 2 and 5 within it.
	for d := loY; d <= hiY; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > hiY {
				break
			}
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
				fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s ms</text>`+"\n", left-6, y(v)+4, fmtMs(v))
			}
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="%s"/>`+"\n", left, left+plotW, y(v), y(v), stroke)
		}
	}
	// x ticks: five steps.
	for i := 0; i <= 5; i++ {
		v := maxX * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#eee"/>`+"\n", x(v), x(v), top, top+plotH)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.0f</text>`+"\n", x(v), top+plotH+18, v)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">writes per second reached</text>`+"\n", left+plotW/2, height-15)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>`+"\n", left, top, plotW, plotH)
	// The curves, and the legend.
	ly := top
	for i, c := range curves {
		colour := colours[i%len(colours)]
		for _, q := range quantiles {
			var pts []string
			for _, s := range c.Steps {
				if v := q.get(s); v > 0 {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.WritesPerS), y(v)))
				}
			}
			dash := ""
			if q.dash != "" {
				dash = fmt.Sprintf(` stroke-dasharray="%s"`, q.dash)
			}
			fmt.Fprintf(&b, `<polyline data-curve="%s" data-quantile="%s" fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n",
				html.EscapeString(c.Name), q.name, colour, dash, strings.Join(pts, " "))
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`, left+plotW+15, left+plotW+45, ly, ly, colour, dash)
			fmt.Fprintf(&b, `<text x="%d" y="%d">%s %s</text>`+"\n", left+plotW+50, ly+4, html.EscapeString(c.Name), q.name)
			ly += 18
		}
		ly += 8
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// fmtMs writes a tick's value without trailing zeros.
func fmtMs(v float64) string {
	if v >= 1 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.3f", v), "0"), ".")
}
