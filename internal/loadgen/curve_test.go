package loadgen

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseRates(t *testing.T) {
	if got, err := parseRates(defaultRates); err != nil || len(got) != 11 || got[0] != 50 {
		t.Fatalf("default rates: %v, %v", got, err)
	}
	if got, err := parseRates(" 10, 20.5 ,30"); err != nil || !slices.Equal(got, []float64{10, 20.5, 30}) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "10,,20", "20,10", "10,10", "0,5", "-1", "x", "1e7"} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q): no error", bad)
		}
	}
}

// The sweep stops after the first step that does not keep up with its
// rate or whose p99 passes a second, and keeps that step.
func TestSweepStopsPastTheKnee(t *testing.T) {
	for _, tc := range []struct {
		name  string
		knee  float64 // the rate from which steps are saturated
		slow  bool    // saturated by latency, not by rate
		steps int
	}{
		{"rate not kept up", 300, false, 4},
		{"p99 past a second", 200, true, 3},
		{"never saturated", 1e9, false, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked []float64
			got, err := sweep(context.Background(), []float64{50, 100, 200, 300, 500}, func(_ context.Context, r float64) (Result, error) {
				asked = append(asked, r)
				res := Result{RateAsked: r, WritesPerS: r, P99ms: 5}
				if r >= tc.knee {
					if tc.slow {
						res.P99ms = 1500
					} else {
						res.WritesPerS = 0.7 * r
					}
				}
				return res, nil
			})
			if err != nil || len(got) != tc.steps || len(asked) != tc.steps {
				t.Fatalf("%d steps (%v), %v; want %d", len(got), asked, err, tc.steps)
			}
		})
	}
	boom := errors.New("boom")
	got, err := sweep(context.Background(), []float64{50, 100}, func(_ context.Context, r float64) (Result, error) {
		if r == 100 {
			return Result{}, boom
		}
		return Result{RateAsked: r, WritesPerS: r}, nil
	})
	if !errors.Is(err, boom) || len(got) != 1 {
		t.Fatalf("a failing step: %d steps, %v; want 1 and its error", len(got), err)
	}
}

// The SVG is well-formed XML with one polyline per curve and quantile, x
// rising with the rate, and a larger latency drawn higher (log scale).
func TestCurveSVG(t *testing.T) {
	mk := func(name string, base float64) Curve {
		c := Curve{Mode: "curve", Name: name}
		for i, r := range []float64{100, 300, 500, 1000} {
			f := base * float64(i+1)
			c.Steps = append(c.Steps, Result{RateAsked: r, WritesPerS: r * 0.99, P50ms: f, P99ms: 10 * f, P999ms: 30 * f})
		}
		return c
	}
	var b strings.Builder
	if err := writeCurveSVG(&b, "a <title> & more", []Curve{mk("changecast", 1), mk("floor", 0.5)}); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Polylines []struct {
			Curve    string `xml:"data-curve,attr"`
			Quantile string `xml:"data-quantile,attr"`
			Points   string `xml:"points,attr"`
		} `xml:"polyline"`
	}
	if err := xml.Unmarshal([]byte(b.String()), &doc); err != nil {
		t.Fatalf("not XML: %v\n%s", err, b.String())
	}
	if len(doc.Polylines) != 6 {
		t.Fatalf("%d polylines, want 6 (2 curves x 3 quantiles)", len(doc.Polylines))
	}
	ys := map[string][]float64{}
	for _, p := range doc.Polylines {
		var lastX float64
		for i, pt := range strings.Fields(p.Points) {
			xs, ys2, _ := strings.Cut(pt, ",")
			x, _ := strconv.ParseFloat(xs, 64)
			y, _ := strconv.ParseFloat(ys2, 64)
			if i > 0 && x <= lastX {
				t.Fatalf("%s %s: x does not rise: %s", p.Curve, p.Quantile, p.Points)
			}
			lastX = x
			ys[p.Curve+" "+p.Quantile] = append(ys[p.Curve+" "+p.Quantile], y)
		}
	}
	// p99 is above p50 at every step (a smaller y), and a later step of
	// a rising curve is above an earlier one.
	for i := range 4 {
		if !(ys["changecast p99"][i] < ys["changecast p50"][i]) {
			t.Fatalf("p99 drawn below p50 at step %d: %v %v", i, ys["changecast p99"], ys["changecast p50"])
		}
	}
	if !(ys["changecast p50"][3] < ys["changecast p50"][0]) {
		t.Fatalf("a rising latency is drawn falling: %v", ys["changecast p50"])
	}
	if !strings.Contains(b.String(), "a &lt;title&gt; &amp; more") {
		t.Error("the title is not escaped")
	}
	if err := writeCurveSVG(&b, "x", nil); err == nil {
		t.Error("an empty plot: no error")
	}
}

func TestReadCurve(t *testing.T) {
	dir := t.TempDir()
	good, _ := json.Marshal(Curve{Mode: "curve", Name: "floor", Steps: []Result{{RateAsked: 1, WritesPerS: 1, P50ms: 1}}})
	os.WriteFile(filepath.Join(dir, "good.json"), good, 0o600)
	os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"mode":"fanout"}`), 0o600)
	if c, err := readCurve(filepath.Join(dir, "good.json")); err != nil || c.Name != "floor" {
		t.Fatalf("good: %+v, %v", c, err)
	}
	for _, f := range []string{"bad.json", "missing.json"} {
		if _, err := readCurve(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s: no error", f)
		}
	}
}
