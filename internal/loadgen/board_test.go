package loadgen

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"changecast/internal/latency"
)

// orderEvent is the data of an `order` event on the list topic orders,
// shaped as docs/api.md describes it.
func orderEvent(run string, n, version int64) []byte {
	return fmt.Appendf(nil, `{"topic":"orders/65f1c0d2a4b5c6d7e8f90123","op":"update","order":{"id":"65f1c0d2a4b5c6d7e8f90123","customer":"bench","items":[{"sku":"bench r%s %d","qty":1}],"status":"preparing","version":%d,"history":[{"status":"placed","at":"2026-01-02T15:04:05Z"},{"status":"preparing","at":"2026-01-02T15:06:41Z"}],"createdAt":"2026-01-02T15:04:05Z","updatedAt":"2026-01-02T15:06:41Z"}}`, run, n, version)
}

func TestParseOrderEvent(t *testing.T) {
	data := orderEvent("a1b2c3d4", 1234, 3)
	n, v, ok := parseOrderEvent(data, "a1b2c3d4")
	if !ok || n != 1234 || v != 3 {
		t.Errorf("parseOrderEvent: got %d, %d, %v; want 1234, 3, true", n, v, ok)
	}
	for _, bad := range []string{
		string(orderEvent("ffffffff", 1234, 3)),                              // another run's
		strings.Replace(string(data), `1234"`, `1234x"`, 1),                  // not our sku
		strings.Replace(string(data), `"sku":"bench r`, `"sku":"pizza r`, 1), // not a bench order
		strings.Replace(string(data), `"version":3`, `"versions":3`, 1),      // no version
		strings.Replace(string(data), `"version":3`, `"version":"3"`, 1),     // not a number
		`{"topic":"orders","orders":[]}`,                                     // a snapshot
		strings.Replace(string(data), `ra1b2c3d4 1234`, `ra1b2c3d4-1234`, 1), // malformed
	} {
		if _, _, ok := parseOrderEvent([]byte(bad), "a1b2c3d4"); ok {
			t.Errorf("parseOrderEvent(%s) accepted", bad)
		}
	}
	if got := testing.AllocsPerRun(100, func() { parseOrderEvent(data, "a1b2c3d4") }); got != 0 {
		t.Errorf("parseOrderEvent allocates %v times, want 0", got)
	}
}

// TestBoardEvent checks the board handler counts each (order, version)
// once, flags doubles, versions of an order out of order and strangers,
// ignores other runs, and times only the changes sent in the measured
// window.
func TestBoardEvent(t *testing.T) {
	r := &boardRun{run: "00ff00ff", sent: make([]atomic.Int64, 3*boardVersions)}
	now := time.Now().UnixNano()
	r.measureStart = now
	for n := range int64(3) {
		for v := int64(1); v <= boardVersions; v++ {
			r.sent[n*boardVersions+v-1].Store(now + 1)
		}
	}
	r.sent[0].Store(now - int64(time.Second)) // order 0's create: in the warm-up
	s := &stream{hist: new(latency.Hist)}
	ev := func(run string, n, v int64) *event {
		return &event{name: []byte("order"), data: orderEvent(run, n, v)}
	}
	for _, e := range []*event{
		ev(r.run, 0, 1), ev(r.run, 0, 2), ev(r.run, 0, 2), // a double
		ev(r.run, 1, 3), ev(r.run, 1, 2), // 2 after 3
		ev(r.run, 2, 1), ev(r.run, 2, 4),
		ev(r.run, 0, 5), ev(r.run, 0, 0), ev(r.run, 3, 1), // no such change
		ev("12345678", 0, 3), // another run's
		{name: []byte("snapshot"), data: []byte(`{"topic":"orders","orders":[]}`)},
		{name: []byte("snapshot"), data: []byte(`{"topic":"orders","orders":[]}`)},
	} {
		if !r.onEvent(s, e) {
			t.Fatal("onEvent stopped the stream")
		}
	}
	if got := s.unique.Load(); got != 6 || s.dups != 1 || s.versionDisorder != 1 || s.unexpected != 3 || s.resets != 1 || s.measured != 5 || s.hist.Count() != 5 {
		t.Errorf("got %d unique, %d dups, %d out of order, %d unexpected, %d resets, %d timed (%d in hist); want 6, 1, 1, 3, 1, 5 (5)",
			got, s.dups, s.versionDisorder, s.unexpected, s.resets, s.measured, s.hist.Count())
	}
	var res Result
	res.addStreams([]*stream{s})
	if res.OutOfOrder != 1 || res.Duplicates != 1 {
		t.Errorf("addStreams: %d out of order, %d duplicates; want 1, 1", res.OutOfOrder, res.Duplicates)
	}
}

func TestBoardRequest(t *testing.T) {
	b := &bencher{cfg: config{Token: "tok"}, host: "127.0.0.1:8080", basePath: "/base"}
	s := &stream{room: "orders", path: boardPath, lastID: []byte("42")}
	req := string(b.streamRequest(s))
	for _, want := range []string{"GET /base/api/events?topic=orders HTTP/1.1\r\n", "Authorization: Bearer tok\r\n", "Last-Event-ID: 42\r\n"} {
		if !strings.Contains(req, want) {
			t.Errorf("board request %q lacks %q", req, want)
		}
	}
	if req := string(b.streamRequest(&stream{room: "bench-3"})); !strings.HasPrefix(req, "GET /base/api/rooms/bench-3/events HTTP/1.1\r\n") {
		t.Errorf("room request %q", req)
	}
}

// TestBoardChanges drives the generator against a server that plays the
// order routes of docs/api.md, one change at a time: each order is
// created, then moved placed → preparing → out_for_delivery → delivered,
// each move naming the version it follows in If-Match, and its send time
// is kept under its number and version.
func TestBoardChanges(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, fmt.Sprintf("%s %s %s %s", r.Method, r.URL.Path, r.Header.Get("If-Match"), body))
		w.Header().Set("Content-Type", "application/json")
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"id":"%024x","version":1}`, len(got))
			return
		}
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	b := &bencher{cfg: config{URL: srv.URL, Rate: 2, Duration: time.Second, Conns: 3}, log: io.Discard, client: srv.Client()}
	r := newBoardRun(b) // room for 3 orders: one per change of a second at 2/s, and one
	var w writeStats
	h := new(latency.Hist)
	for range 14 {
		r.change(t.Context(), &w, h)
	}
	var want []string
	for n := range 3 {
		id := fmt.Sprintf("/api/orders/%024x", 1+4*n)
		want = append(want,
			fmt.Sprintf(`POST /api/orders  {"customer":"bench","items":[{"sku":"bench r%s %d","qty":1}]}`, r.run, n),
			fmt.Sprintf(`PATCH %s 1 {"status":"preparing"}`, id),
			fmt.Sprintf(`PATCH %s 2 {"status":"out_for_delivery"}`, id),
			fmt.Sprintf(`PATCH %s 3 {"status":"delivered"}`, id))
	}
	if g, _ := json.MarshalIndent(got, "", " "); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("requests:\n%s\nwant:\n%s", g, strings.Join(want, "\n"))
	}
	if w.ok.Load() != 12 || w.skipped.Load() != 2 || w.errs.Load() != 0 || w.expected.Load() != 12*3 {
		t.Errorf("%d ok, %d skipped, %d failed, %d expected; want 12, 2, 0, 36", w.ok.Load(), w.skipped.Load(), w.errs.Load(), w.expected.Load())
	}
	for i := range r.sent {
		if r.sent[i].Load() == 0 {
			t.Errorf("no send time kept for order %d version %d", int64(i)/boardVersions, int64(i)%boardVersions+1)
		}
	}
}
