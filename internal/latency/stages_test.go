package latency

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// timing switches stage timing on for one test and starts the
// histograms over; the test must not run in parallel with another.
func timing(t *testing.T) {
	t.Helper()
	Enable()
	Summaries(true)
	mu.Lock()
	clear(pending)
	mu.Unlock()
	t.Cleanup(func() {
		on.Store(false)
		Summaries(true)
	})
}

const ms = int64(time.Millisecond)

// TestStages follows changes through the hooks in the order the store,
// the feed and the streams call them, and reads each stage's time back.
func TestStages(t *testing.T) {
	timing(t)
	// Two changes of one group, committed at 2 ms.
	Committed("p1", 0, 2*ms)
	Committed("p2", 1*ms, 2*ms)
	if st := Take("unknown", 3*ms); st != nil {
		t.Fatalf("Take of a position never committed = %+v, want nil", st)
	}
	st1, st2 := Take("p1", 3*ms), Take("p2", 3*ms)
	if st1 == nil || st2 == nil || Take("p1", 3*ms) != nil {
		t.Fatalf("Take = %v, %v, then %v again; want the stamps once", st1, st2, Take("p1", 3*ms))
	}
	st1.FanOut, st2.FanOut = 4*ms, 5*ms
	st1.FannedOut, st2.FannedOut = 5*ms, 6*ms
	FannedOut(st1)
	FannedOut(st2)
	// Three streams: one step takes both changes, two take one each.
	Delivered([]*Stamps{st1, st2}, 7*ms, 8*ms)
	Delivered([]*Stamps{st1}, 10*ms, 14*ms)
	Delivered([]*Stamps{st2}, 6*ms, 6*ms)

	want := map[string]struct {
		n        uint64
		p50, max float64
	}{
		"commit": {2, 1, 2},  // 2 and 1 ms
		"feed":   {2, 1, 1},  // 3-2 each
		"fanout": {2, 2, 3},  // 5-3, 6-3
		"pool":   {4, 2, 6},  // 7-4, 7-5, 10-4, 6-5
		"write":  {4, 1, 4},  // 1, 1, 4, 0
		"server": {4, 7, 14}, // 8-0, 8-1, 14-0, 6-1
	}
	got := Summaries(false)
	if len(got) != len(want) {
		t.Fatalf("got %d stages, want %d", len(got), len(want))
	}
	order := []string{"commit", "feed", "fanout", "pool", "write", "server"}
	for i, s := range got {
		w := want[s.Stage]
		// (A quantile is its bucket's top: up to 3.2% above.)
		if s.Stage != order[i] || s.Count != w.n || s.P50 < w.p50 || s.P50 > w.p50*1.032 || s.Max != w.max {
			t.Errorf("stage %d: %s: %d values, p50 %v ms, max %v ms; want %s: %d, %v, %v", i, s.Stage, s.Count, s.P50, s.Max, order[i], w.n, w.p50, w.max)
		}
	}
	if got := Summaries(true); got[0].Count != 2 {
		t.Errorf("reset read %d commits, want the 2 before the reset", got[0].Count)
	}
	if got := Summaries(false); got[0].Count != 0 || got[5].Count != 0 {
		t.Errorf("after a reset: %d commits, %d deliveries; want none", got[0].Count, got[5].Count)
	}
}

// TestStagesOff: with timing off the store's hook keeps nothing.
func TestStagesOff(t *testing.T) {
	timing(t)
	on.Store(false)
	Committed("p1", 0, ms)
	if st := Take("p1", 2*ms); st != nil {
		t.Errorf("Take after Committed with timing off = %+v, want nil", st)
	}
}

// TestStagesPendingBounded: stamps nobody takes (no feed reads the
// store) do not pile up.
func TestStagesPendingBounded(t *testing.T) {
	timing(t)
	for i := range maxPending + 10 {
		Committed(string(rune(i)), 0, ms)
	}
	mu.Lock()
	n := len(pending)
	mu.Unlock()
	if n > maxPending {
		t.Errorf("%d stamps pending, want at most %d", n, maxPending)
	}
}

// TestFlightRecorder: a delivery slower than the threshold, and than any
// before it, leaves the trace of the moments around it, which Handler
// serves; Reset forgets it.
func TestFlightRecorder(t *testing.T) {
	timing(t)
	fr, err := StartFlightRecorder(5 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer fr.Stop()
	srv := httptest.NewServer(Handler("/debug/stages", fr))
	defer srv.Close()
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.Bytes()
	}
	if code, _ := get("/debug/stages/trace"); code != http.StatusNotFound {
		t.Fatalf("trace before any slow delivery: %d, want 404", code)
	}

	st := &Stamps{Submitted: 0, Committed: ms, Applied: ms, FanOut: ms}
	Delivered([]*Stamps{st}, 2*ms, 3*ms) // under the threshold
	Delivered([]*Stamps{st}, 2*ms, 9*ms) // over it
	var b []byte
	var d time.Duration
	for range 500 {
		if b, d = fr.Slowest(); b != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if d != 9*time.Millisecond || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Fatalf("kept a trace of %d bytes (%.20q) for a delivery of %v; want one for the 9ms delivery", len(b), b, d)
	}
	code, body := get("/debug/stages")
	var rep Report
	if err := json.Unmarshal(body, &rep); code != http.StatusOK || err != nil || rep.SlowestMs != 9 || len(rep.Stages) != int(numStages) || rep.Stages[StageServer].Count != 2 {
		t.Errorf("GET /debug/stages: %d %s (%v); want the stages, 2 deliveries, the 9 ms one traced", code, body, err)
	}
	if code, tr := get("/debug/stages/trace"); code != http.StatusOK || !bytes.Equal(tr, b) {
		t.Errorf("GET /debug/stages/trace: %d, %d bytes; want the %d bytes kept", code, len(tr), len(b))
	}

	// A slow delivery no slower than the one kept is not traced again.
	Delivered([]*Stamps{st}, 2*ms, 8*ms)
	if _, d := fr.Slowest(); d != 9*time.Millisecond {
		t.Errorf("after a faster slow delivery the trace kept is of %v, want still 9ms", d)
	}
	get("/debug/stages?reset=1")
	if b, d := fr.Slowest(); b != nil || d != 0 {
		t.Errorf("after a reset the trace of %v is kept, want none", d)
	}
	if got := Summaries(false); got[StageServer].Count != 0 {
		t.Errorf("after a reset %d deliveries are counted, want none", got[StageServer].Count)
	}
}
