package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"changecast/internal/loadgen"
)

// TestBenchCurve: `bench -mode curve` runs a fan-out at each rate given,
// delivering every event once at each, prints the steps as JSON, and
// writes an SVG with a line per quantile, beside a curve from -compare.
func TestBenchCurve(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	dir := t.TempDir()
	svg := filepath.Join(dir, "curve.svg")
	run := func(args ...string) loadgen.Curve {
		t.Helper()
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		args = append([]string{"bench", "-mode", "curve", "-url", s.URL, "-json", "-pid", strconv.Itoa(s.proc.Pid),
			"-conns", "20", "-rooms", "2", "-rates", "20,40", "-duration", "1s", "-warmup", "300ms"}, args...)
		if err := runBinary(ctx, args, nil, &out, &errOut); err != nil {
			t.Fatalf("bench %q: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errOut.String())
		}
		var c loadgen.Curve
		if err := json.Unmarshal(out.Bytes(), &c); err != nil {
			t.Fatalf("bench -mode curve -json printed %q: %v", out.String(), err)
		}
		return c
	}
	first := run("-name", "first")
	if first.Mode != "curve" || len(first.Steps) == 0 || first.Steps[0].RateAsked != 20 {
		t.Fatalf("curve %+v; want steps from 20 writes/s", first)
	}
	for _, st := range first.Steps {
		benchCheckClean(t, st)
		if st.P50ms <= 0 || st.P999ms < st.P99ms || st.P99ms < st.P50ms {
			t.Errorf("step at %.0f/s: p50 %.2f, p99 %.2f, p99.9 %.2f ms; want 0 < p50 <= p99 <= p99.9", st.RateAsked, st.P50ms, st.P99ms, st.P999ms)
		}
	}
	prev := filepath.Join(dir, "first.json")
	b, _ := json.Marshal(first)
	if err := os.WriteFile(prev, b, 0o600); err != nil {
		t.Fatal(err)
	}
	run("-name", "second", "-svg", svg, "-compare", prev)
	plot, err := os.ReadFile(svg)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(plot), "<polyline "); n != 6 || !strings.Contains(string(plot), `data-curve="first"`) {
		t.Errorf("the SVG has %d polylines (want 6: two curves x three quantiles) or lacks the -compare curve:\n%s", n, plot)
	}
}
