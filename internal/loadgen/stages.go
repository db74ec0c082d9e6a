package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"changecast/internal/latency"
)

// The server's stage timing (package latency), read from its debug
// listener (-stages, the server's PPROF_ADDR): reset as the measured
// window begins, read once its deliveries are in, and the trace kept
// around the slowest delivery saved to -trace.

// stagesTimeout bounds one request to the debug listener.
const stagesTimeout = 10 * time.Second

// stages asks the server's debug listener for its stage histograms,
// starting them over if reset.
func (b *bencher) stages(ctx context.Context, reset bool) (latency.Report, error) {
	var rep latency.Report
	q := ""
	if reset {
		q = "?reset=1"
	}
	body, err := b.debugGet(ctx, "/debug/stages"+q)
	if err != nil {
		return rep, err
	}
	defer body.Close()
	if err := json.NewDecoder(body).Decode(&rep); err != nil {
		return rep, fmt.Errorf("-stages: %w", err)
	}
	return rep, nil
}

// readStages adds the server's stage histograms to res and saves the
// trace of its slowest delivery (-trace); it says on the log what it
// could not read.
func (b *bencher) readStages(ctx context.Context, res *Result) {
	rep, err := b.stages(ctx, false)
	if err != nil {
		fmt.Fprintf(b.log, "bench: no stage timing: %v\n", err)
		return
	}
	res.Stages, res.SlowestTracedMs = rep.Stages, rep.SlowestMs
	if b.cfg.Trace == "" {
		return
	}
	if rep.SlowestMs == 0 {
		fmt.Fprintln(b.log, "bench: no trace: no delivery was slower than the server's TRACE_SLOW")
		return
	}
	if err := b.saveTrace(ctx, b.cfg.Trace); err != nil {
		fmt.Fprintf(b.log, "bench: no trace: %v\n", err)
		return
	}
	fmt.Fprintf(b.log, "bench: trace around the slowest delivery (%.2f ms) in %s\n", rep.SlowestMs, b.cfg.Trace)
}

// saveTrace writes the trace the server kept around its slowest
// delivery to file.
func (b *bencher) saveTrace(ctx context.Context, file string) error {
	body, err := b.debugGet(ctx, "/debug/stages/trace")
	if err != nil {
		return err
	}
	defer body.Close()
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("-trace: %w", err)
	}
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return fmt.Errorf("-trace: %w", err)
	}
	return f.Close()
}

func (b *bencher) debugGet(ctx context.Context, path string) (io.ReadCloser, error) {
	ctx, cancel := context.WithTimeout(ctx, stagesTimeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.cfg.Stages+path, nil)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("-stages: %w", err)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("-stages: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("-stages: GET %s: %s", path, resp.Status)
	}
	return cancelOnClose{resp.Body, cancel}, nil
}

// cancelOnClose is a body that ends its request's context when closed.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// printStages prints the server's stage histograms.
func printStages(p func(string, ...any), r Result) {
	if len(r.Stages) == 0 {
		return
	}
	p("server stages       (ms)     count      p50      p90      p99    p99.9      max")
	for _, s := range r.Stages {
		p("  %-16s %14d %8.2f %8.2f %8.2f %8.2f %8.2f", s.Stage, s.Count, s.P50, s.P90, s.P99, s.P999, s.Max)
	}
	if r.SlowestTracedMs > 0 {
		p("  trace kept around the slowest delivery, %.2f ms", r.SlowestTracedMs)
	}
}
