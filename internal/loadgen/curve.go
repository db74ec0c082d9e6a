package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// The curve mode: fan-out runs at rising write rates, up to and just past
// saturation, so the knee of the latency curve shows. Each step is a whole
// fan-out run (its streams connected afresh, its own warm-up); the sweep
// stops after the first step that did not keep up (writes per second
// under 90% of the rate asked) or whose p99 passed curveMaxP99ms.

// defaultRates is the sweep when -rates is not given.
const defaultRates = "50,100,200,300,500,750,1000,1500,2000,3000,5000"

// curveMaxP99ms ends a sweep: past a second of p99 the server is
// saturated whatever the write rate says.
const curveMaxP99ms = 1000

// Curve is the curve mode's result: one fan-out Result per step.
type Curve struct {
	Mode  string   `json:"mode"`
	Name  string   `json:"name"`
	Conns int      `json:"conns"`
	Rooms int      `json:"rooms"`
	Steps []Result `json:"steps"`
}

// parseRates reads -rates: write rates per second, rising.
func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(r > 0) || r > 1e6 || (len(out) > 0 && r <= out[len(out)-1]) {
			return nil, fmt.Errorf("bench: -rates %q: want rising write rates above 0, such as %s", s, defaultRates)
		}
		out = append(out, r)
	}
	return out, nil
}

// saturated reports whether a step shows the server past its knee.
func saturated(r Result) bool {
	return r.WritesPerS < 0.9*r.RateAsked || r.P99ms > curveMaxP99ms
}

// sweep runs step at each rate until one is saturated (included) or
// step fails, and returns the steps run.
func sweep(ctx context.Context, rates []float64, step func(context.Context, float64) (Result, error)) ([]Result, error) {
	var out []Result
	for _, r := range rates {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		res, err := step(ctx, r)
		if err != nil {
			return out, fmt.Errorf("bench: curve at %.0f writes/s: %w", r, err)
		}
		out = append(out, res)
		if saturated(res) {
			break
		}
	}
	return out, nil
}

// curve runs the sweep c asks for, each step a fan-out run with c's other
// flags, and writes the SVG plot when -svg is given.
func curve(ctx context.Context, c config, stderr io.Writer) (Curve, error) {
	rates, err := parseRates(c.Rates)
	if err != nil {
		return Curve{}, err
	}
	steps, err := sweep(ctx, rates, func(ctx context.Context, rate float64) (Result, error) {
		sc := c
		sc.Mode, sc.Rate = "fanout", rate
		fmt.Fprintf(stderr, "bench: curve: %.0f writes/s\n", rate)
		return measure(ctx, sc, stderr)
	})
	out := Curve{Mode: "curve", Name: c.Name, Conns: c.Conns, Rooms: c.Rooms, Steps: steps}
	if err != nil {
		return out, err
	}
	if c.SVG != "" {
		series := []Curve{out}
		for _, f := range strings.FieldsFunc(c.Compare, func(r rune) bool { return r == ',' }) {
			other, err := readCurve(f)
			if err != nil {
				return out, err
			}
			series = append(series, other)
		}
		f, err := os.Create(c.SVG)
		if err != nil {
			return out, fmt.Errorf("bench: %w", err)
		}
		err = writeCurveSVG(f, fmt.Sprintf("write-to-delivery latency against load: %d streams over %d rooms", c.Conns, c.Rooms), series)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return out, fmt.Errorf("bench: -svg: %w", err)
		}
	}
	return out, nil
}

// readCurve reads a curve written by -mode curve -json (another server's,
// or an earlier run), for -compare.
func readCurve(path string) (Curve, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Curve{}, fmt.Errorf("bench: -compare: %w", err)
	}
	var c Curve
	if err := json.Unmarshal(b, &c); err != nil || c.Mode != "curve" || len(c.Steps) == 0 {
		return Curve{}, fmt.Errorf("bench: -compare %s: not the JSON of a -mode curve run", path)
	}
	if c.Name == "" {
		c.Name = path
	}
	return c, nil
}

// printCurve prints a curve's steps as a table.
func printCurve(w io.Writer, c Curve) {
	fmt.Fprintf(w, "curve %s: %d streams over %d rooms\n", c.Name, c.Conns, c.Rooms)
	fmt.Fprintf(w, "%10s %10s %9s %9s %9s %12s\n", "asked/s", "writes/s", "p50 ms", "p99 ms", "p99.9 ms", "deliveries/s")
	for _, r := range c.Steps {
		mark := ""
		if saturated(r) {
			mark = "  (saturated)"
		}
		fmt.Fprintf(w, "%10.0f %10.0f %9.2f %9.2f %9.2f %12.0f%s\n", r.RateAsked, r.WritesPerS, r.P50ms, r.P99ms, r.P999ms, r.DeliveriesPerS, mark)
	}
}
