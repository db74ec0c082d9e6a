package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"changecast/internal/loadgen"
)

// benchRunJSON runs `changecast bench -json` against s and returns its
// result; -pid is the server's process.
func benchRunJSON(tb testing.TB, s *e2eServer, args ...string) loadgen.Result {
	tb.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"-url", s.URL, "-json", "-pid", strconv.Itoa(s.proc.Pid)}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := runBinary(ctx, append([]string{"bench"}, args...), nil, &out, &errOut); err != nil {
		tb.Fatalf("bench %q: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errOut.String())
	}
	var r loadgen.Result
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		tb.Fatalf("bench -json printed %q: %v", out.String(), err)
	}
	if !strings.Contains(errOut.String(), "bench: ") {
		tb.Errorf("no progress on stderr: %q", errOut.String())
	}
	return r
}

// benchCheckClean fails the test unless r reports every expected event
// delivered once, in order, without resets.
func benchCheckClean(tb testing.TB, r loadgen.Result) {
	tb.Helper()
	if r.Expected == 0 || r.Delivered != r.Expected || r.Lost != 0 || r.Duplicates != 0 || r.OutOfOrder != 0 || r.Unexpected != 0 || r.Resets != 0 {
		tb.Errorf("got %d of %d deliveries, lost %d, dup %d, out of order %d, unexpected %d, resets %d; want all, once, in order",
			r.Delivered, r.Expected, r.Lost, r.Duplicates, r.OutOfOrder, r.Unexpected, r.Resets)
	}
}

func TestBenchFanout(t *testing.T) {
	t.Parallel()
	for _, reader := range []string{"epoll", "goroutine"} {
		t.Run(reader, func(t *testing.T) { benchTestFanout(t, reader) })
	}
}

func benchTestFanout(t *testing.T, reader string) {
	s := newE2EServer(t, nil)
	r := benchRunJSON(t, s, "-reader", reader, "-conns", "20", "-rooms", "2", "-rate", "50", "-duration", "2s", "-warmup", "500ms")
	benchCheckClean(t, r)
	if r.Mode != "fanout" || r.Conns != 20 || r.Streams != 20 {
		t.Errorf("mode %q, conns %d, open at the end %d; want fanout, 20, 20", r.Mode, r.Conns, r.Streams)
	}
	// Exactly once, counted: every write reaches the 10 streams of its
	// room (benchCheckClean: each delivered once, in order). How many
	// writes a busy machine manages is not asserted; the pacer must only
	// never exceed its rate (2.5 s at 50/s, plus the first tick).
	if r.Writes < 1 || r.Writes > 126 || r.WriteErrors != 0 || r.Expected != r.Writes*10 {
		t.Errorf("got %d writes (%d failed), %d expected deliveries; want 1 to 126 writes, none failed, each to the 10 streams of its room", r.Writes, r.WriteErrors, r.Expected)
	}
	if r.MeasuredWrites < 1 || r.MeasuredWrites > r.Writes || r.MeasuredDelivers != r.MeasuredWrites*10 {
		t.Errorf("got %d measured writes of %d, %d measured deliveries; want some, each delivered 10 times", r.MeasuredWrites, r.Writes, r.MeasuredDelivers)
	}
	if !(0 < r.P50ms && r.P50ms <= r.P90ms && r.P90ms <= r.P99ms && r.P99ms <= r.MaxMs) {
		t.Errorf("got p50 %v, p90 %v, p99 %v, max %v ms; want 0 < p50 <= p90 <= p99 <= max", r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
	}
	if !(0 < r.WriteP50ms && r.WriteP50ms <= r.WriteP99ms) || r.DeliveriesPerS <= 0 || r.WritesPerS <= 0 {
		t.Errorf("got POST p50 %v p99 %v ms, %v writes/s, %v deliveries/s; want positive and ordered", r.WriteP50ms, r.WriteP99ms, r.WritesPerS, r.DeliveriesPerS)
	}
	if r.RSSAfterKiB <= 0 || r.ServerCPUSecs <= 0 || r.CPUPerDelivery <= 0 || r.HeapAfterKiB <= 0 || r.ServerStreams < 20 {
		t.Errorf("server stats from %q: RSS %d KiB, CPU %v s (%v µs/delivery), heap %d KiB, streams %d; want all read",
			r.ServerSource, r.RSSAfterKiB, r.ServerCPUSecs, r.CPUPerDelivery, r.HeapAfterKiB, r.ServerStreams)
	}
	if !(0 < r.SysPerDelivery && r.SysPerDelivery <= r.CPUPerDelivery) {
		t.Errorf("kernel CPU %v µs of %v µs per delivery; want read from /proc, and part of the whole", r.SysPerDelivery, r.CPUPerDelivery)
	}
}

func TestBenchStorm(t *testing.T) {
	t.Parallel()
	for _, reader := range []string{"epoll", "goroutine"} {
		t.Run(reader, func(t *testing.T) { benchTestStorm(t, reader) })
	}
}

func benchTestStorm(t *testing.T, reader string) {
	s := newE2EServer(t, nil)
	r := benchRunJSON(t, s, "-reader", reader, "-mode", "storm", "-conns", "10", "-rooms", "2", "-behind", "50", "-size", "100")
	benchCheckClean(t, r)
	if r.Writes != 100 || r.WriteErrors != 0 || r.Expected != 10*50 {
		t.Errorf("got %d writes (%d failed), %d expected; want 100 writes, 500 expected", r.Writes, r.WriteErrors, r.Expected)
	}
	if r.CaughtUp != 10 || r.CaughtUpSeconds <= 0 || !(0 < r.P50ms && r.P50ms <= r.P99ms && r.P99ms <= r.MaxMs) {
		t.Errorf("got %d of 10 clients caught up in %v s (p50 %v, p99 %v, max %v ms)", r.CaughtUp, r.CaughtUpSeconds, r.P50ms, r.P99ms, r.MaxMs)
	}
}

func TestBenchIdle(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	r := benchRunJSON(t, s, "-mode", "idle", "-conns", "30", "-rooms", "3", "-duration", "300ms", "-sources", "3")
	if r.Mode != "idle" || r.Streams != 30 || r.Errors != 0 || r.Reconnects != 0 || r.Resets != 0 {
		t.Errorf("got mode %q, %d streams open, %d errors, %d reconnects, %d resets; want idle, 30, 0, 0, 0", r.Mode, r.Streams, r.Errors, r.Reconnects, r.Resets)
	}
	if r.ServerStreams < 30 || r.RSSAfterKiB <= 0 || r.HeapAfterKiB <= 0 {
		t.Errorf("got server streams %d, RSS %d KiB, heap %d KiB; want 30 and memory read", r.ServerStreams, r.RSSAfterKiB, r.HeapAfterKiB)
	}
}

// TestBenchBoard runs the board mode against a -dev server: staff
// streams on the list topic orders (docs/api.md) get every change of
// every order the generator creates and moves along, once and in order.
func TestBenchBoard(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	r := benchRunJSON(t, s, "-mode", "board", "-conns", "10", "-rate", "40", "-duration", "1500ms", "-warmup", "300ms")
	benchCheckClean(t, r)
	if r.Mode != "board" || r.Streams != 10 || r.Errors != 0 || r.Reconnects != 0 {
		t.Errorf("mode %q, %d open at the end, %d errors, %d reconnects; want board, 10, 0, 0", r.Mode, r.Streams, r.Errors, r.Reconnects)
	}
	// Each change (a create or a move) reaches all 10 streams; the pacer
	// never exceeds its rate (1.8 s at 40/s, plus the first tick).
	if r.Writes < 1 || r.Writes > 73 || r.WriteErrors != 0 || r.Expected != r.Writes*10 {
		t.Errorf("got %d changes (%d failed), %d expected deliveries; want 1 to 73, none failed, each to all 10 streams", r.Writes, r.WriteErrors, r.Expected)
	}
	if r.MeasuredWrites < 1 || r.MeasuredDelivers != r.MeasuredWrites*10 {
		t.Errorf("got %d measured changes, %d measured deliveries; want some, each delivered 10 times", r.MeasuredWrites, r.MeasuredDelivers)
	}
	if !(0 < r.P50ms && r.P50ms <= r.P99ms && r.P99ms <= r.MaxMs) || r.CPUPerDelivery <= 0 {
		t.Errorf("got p50 %v, p99 %v, max %v ms, %v µs of server CPU per delivery; want ordered and read", r.P50ms, r.P99ms, r.MaxMs, r.CPUPerDelivery)
	}
}

// TestBenchStages runs a fan-out against a server with its debug
// listener (PPROF_ADDR) and TRACE_SLOW: bench -stages reads how long
// each stage of a change took on the server, and -trace saves the
// runtime trace kept around the slowest delivery.
func TestBenchStages(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, map[string]string{"PPROF_ADDR": "127.0.0.1:0", "TRACE_SLOW": "1us"})
	m := regexp.MustCompile(`pprof on (http://127\.0\.0\.1:\d+)/`).FindStringSubmatch(s.logs.String())
	if m == nil {
		t.Fatalf("no debug listener in the log:\n%s", s.logs)
	}
	trace := filepath.Join(t.TempDir(), "slow.trace")
	r := benchRunJSON(t, s, "-conns", "20", "-rooms", "2", "-rate", "50", "-duration", "1500ms", "-warmup", "300ms", "-stages", m[1], "-trace", trace)
	benchCheckClean(t, r)
	names := []string{"commit", "feed", "fanout", "pool", "write", "server"}
	if len(r.Stages) != len(names) {
		t.Fatalf("got stages %+v; want %q", r.Stages, names)
	}
	for i, st := range r.Stages {
		if st.Stage != names[i] || st.Count == 0 || !(st.P50 <= st.P99 && st.P99 <= st.Max) {
			t.Errorf("stage %d: %+v; want %s, timed, p50 <= p99 <= max", i, st, names[i])
		}
	}
	// Each change is committed, fed and fanned out once, and written to
	// each of the 10 streams of its room.
	commit, deliveries := r.Stages[0].Count, r.Stages[5].Count
	if r.Stages[1].Count != commit || r.Stages[2].Count != commit || r.Stages[3].Count != deliveries || r.Stages[4].Count != deliveries {
		t.Errorf("stage counts %+v; want one per change for the first three, one per delivery for the rest", r.Stages)
	}
	if d := float64(deliveries) / float64(commit); d < 9 || d > 11 {
		t.Errorf("%d deliveries timed for %d changes; want about 10 each", deliveries, commit)
	}
	b, err := os.ReadFile(trace)
	if r.SlowestTracedMs <= 0 || err != nil || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Errorf("slowest traced %v ms, trace file %d bytes (%v); want a runtime trace", r.SlowestTracedMs, len(b), err)
	}
}
