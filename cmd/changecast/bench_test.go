package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// benchRunJSON runs `changecast bench -json` against url and returns its
// result.
func benchRunJSON(tb testing.TB, url string, args ...string) benchResult {
	tb.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"-url", url, "-json", "-pid", strconv.Itoa(os.Getpid())}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := runBench(ctx, args, func(string) string { return "" }, &out, &errOut); err != nil {
		tb.Fatalf("bench %q: %v\nstdout:\n%s\nstderr:\n%s", args, err, out.String(), errOut.String())
	}
	var r benchResult
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
func benchCheckClean(tb testing.TB, r benchResult) {
	tb.Helper()
	if r.Expected == 0 || r.Delivered != r.Expected || r.Lost != 0 || r.Duplicates != 0 || r.OutOfOrder != 0 || r.Unexpected != 0 || r.Resets != 0 {
		tb.Errorf("got %d of %d deliveries, lost %d, dup %d, out of order %d, unexpected %d, resets %d; want all, once, in order",
			r.Delivered, r.Expected, r.Lost, r.Duplicates, r.OutOfOrder, r.Unexpected, r.Resets)
	}
}

func TestBenchFanout(t *testing.T) {
	for _, reader := range []string{"epoll", "goroutine"} {
		t.Run(reader, func(t *testing.T) { benchTestFanout(t, reader) })
	}
}

func benchTestFanout(t *testing.T, reader string) {
	s := newE2EServer(t, nil)
	r := benchRunJSON(t, s.URL, "-reader", reader, "-conns", "20", "-rooms", "2", "-rate", "50", "-duration", "2s", "-warmup", "500ms")
	benchCheckClean(t, r)
	if r.Mode != "fanout" || r.Conns != 20 || r.Streams != 20 {
		t.Errorf("mode %q, conns %d, open at the end %d; want fanout, 20, 20", r.Mode, r.Conns, r.Streams)
	}
	// 2.5 s at 50/s; the pacer may lose a tick or two to a busy machine.
	if r.Writes < 100 || r.Writes > 126 || r.Expected != r.Writes*10 {
		t.Errorf("got %d writes, %d expected deliveries; want about 125 writes, each to the 10 streams of its room", r.Writes, r.Expected)
	}
	if r.MeasuredWrites < 80 || r.MeasuredWrites > r.Writes || r.MeasuredDelivers != r.MeasuredWrites*10 {
		t.Errorf("got %d measured writes of %d, %d measured deliveries; want about 100, each delivered 10 times", r.MeasuredWrites, r.Writes, r.MeasuredDelivers)
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
	for _, reader := range []string{"epoll", "goroutine"} {
		t.Run(reader, func(t *testing.T) { benchTestStorm(t, reader) })
	}
}

func benchTestStorm(t *testing.T, reader string) {
	s := newE2EServer(t, nil)
	r := benchRunJSON(t, s.URL, "-reader", reader, "-mode", "storm", "-conns", "10", "-rooms", "2", "-behind", "50", "-size", "100")
	benchCheckClean(t, r)
	if r.Writes != 100 || r.WriteErrors != 0 || r.Expected != 10*50 {
		t.Errorf("got %d writes (%d failed), %d expected; want 100 writes, 500 expected", r.Writes, r.WriteErrors, r.Expected)
	}
	if r.CaughtUp != 10 || r.CaughtUpSeconds <= 0 || !(0 < r.P50ms && r.P50ms <= r.P99ms && r.P99ms <= r.MaxMs) {
		t.Errorf("got %d of 10 clients caught up in %v s (p50 %v, p99 %v, max %v ms)", r.CaughtUp, r.CaughtUpSeconds, r.P50ms, r.P99ms, r.MaxMs)
	}
}

func TestBenchIdle(t *testing.T) {
	s := newE2EServer(t, nil)
	r := benchRunJSON(t, s.URL, "-mode", "idle", "-conns", "30", "-rooms", "3", "-duration", "300ms", "-sources", "3")
	if r.Mode != "idle" || r.Streams != 30 || r.Errors != 0 || r.Reconnects != 0 || r.Resets != 0 {
		t.Errorf("got mode %q, %d streams open, %d errors, %d reconnects, %d resets; want idle, 30, 0, 0, 0", r.Mode, r.Streams, r.Errors, r.Reconnects, r.Resets)
	}
	if r.ServerStreams < 30 || r.RSSAfterKiB <= 0 || r.HeapAfterKiB <= 0 {
		t.Errorf("got server streams %d, RSS %d KiB, heap %d KiB; want 30 and memory read", r.ServerStreams, r.RSSAfterKiB, r.HeapAfterKiB)
	}
}

func TestBenchRefusesOtherHosts(t *testing.T) {
	for _, u := range []string{"http://10.0.0.1:8080", "http://192.168.1.1", "http://[2001:db8::1]:80", "http://0.0.0.0:8080", "https://127.0.0.1", "ftp://127.0.0.1", "127.0.0.1:8080"} {
		var out bytes.Buffer
		err := runBench(t.Context(), []string{"-url", u, "-duration", "1s"}, func(string) string { return "" }, &out, &out)
		if err == nil || !(strings.Contains(err.Error(), "loopback") || strings.Contains(err.Error(), "not an http")) {
			t.Errorf("bench -url %s: got %v; want a refusal", u, err)
		}
	}
	for _, u := range []string{"http://127.0.0.1:1", "http://127.9.8.7", "http://[::1]:8080", "http://localhost:8080/base"} {
		if _, err := benchLoopbackOnly(u); err != nil {
			t.Errorf("benchLoopbackOnly(%s): %v; want it accepted", u, err)
		}
	}
}

func TestBenchHistogram(t *testing.T) {
	var h benchHist
	if h.quantile(.5) != 0 || h.max() != 0 {
		t.Fatalf("empty histogram: got p50 %v, max %v; want 0", h.quantile(.5), h.max())
	}
	// 1 ms .. 10 s in 1 ms steps, in two halves merged.
	var a, b benchHist
	for v := int64(1); v <= 10000; v++ {
		if v%2 == 0 {
			a.add(v * 1e6)
		} else {
			b.add(v * 1e6)
		}
	}
	h.merge(&a)
	h.merge(&b)
	if h.count() != 10000 || h.max() != 10000 {
		t.Fatalf("got %d values, max %v ms; want 10000, 10000", h.count(), h.max())
	}
	for _, tc := range []struct{ q, want float64 }{{.5, 5000}, {.9, 9000}, {.99, 9900}, {.999, 9990}, {1, 10000}} {
		if got := h.quantile(tc.q); got < tc.want || got > tc.want*1.032 {
			t.Errorf("quantile(%v) = %v ms, want %v to 3.2%% above", tc.q, got, tc.want)
		}
	}
	// Small values are exact.
	var small benchHist
	for _, us := range []int64{3, 3, 3, 7, 50} {
		small.add(us * 1000)
	}
	for _, tc := range []struct{ q, want float64 }{{.2, .003}, {.6, .003}, {.8, .007}, {.99, .05}} {
		if got := small.quantile(tc.q); got != tc.want {
			t.Errorf("small quantile(%v) = %v ms, want %v", tc.q, got, tc.want)
		}
	}
	// A quantile never exceeds the maximum, nor falls below the minimum.
	var one benchHist
	one.add(1234567 * 1000)
	if got := one.quantile(.5); got != 1234.567 {
		t.Errorf("one value: quantile(.5) = %v, want 1234.567", got)
	}
	// Every value lies in its bucket, and buckets are at most 1/32 wide.
	for us := int64(0); us < 1<<36; us = us*17/16 + 1 {
		i := benchBucket(us)
		lo, hi := benchBucketLow(i), benchBucketHigh(i)
		if lo > us || us > hi || float64(hi-lo) > float64(lo)/32 {
			t.Fatalf("value %d µs in bucket %d [%d, %d]", us, i, lo, hi)
		}
		if i > 0 && benchBucketHigh(i-1)+1 != lo {
			t.Fatalf("bucket %d starts at %d, previous ends at %d", i, lo, benchBucketHigh(i-1))
		}
	}
	if got := benchBucket(1 << 50); got != benchHistBuckets-1 {
		t.Errorf("huge value in bucket %d, want the last, %d", got, benchHistBuckets-1)
	}
}

func TestBenchText(t *testing.T) {
	text := benchAppendText(nil, 1732520000123456789, 42, "a1b2c3d4", 10)
	data := []byte(`{"topic":"rooms/bench-0","op":"insert","message":{"id":"6543aa","room":"bench-0","author":"bench","text":"` + string(text) + `","createdAt":"x"}}`)
	sent, seq, ok := benchParseText(data, "a1b2c3d4")
	if !ok || sent != 1732520000123456789 || seq != 42 {
		t.Errorf("benchParseText: got %d, %d, %v; want 1732520000123456789, 42, true", sent, seq, ok)
	}
	for _, bad := range []string{
		strings.Replace(string(data), "a1b2c3d4", "ffffffff", 1),
		strings.Replace(string(data), "bench 1732", "bench x1732", 1),
		`{"message":{"text":"hello"}}`,
	} {
		if _, _, ok := benchParseText([]byte(bad), "a1b2c3d4"); ok {
			t.Errorf("benchParseText(%s) accepted", bad)
		}
	}
	if got, _ := benchMessageID(data); string(got) != "6543aa" {
		t.Errorf("benchMessageID = %q, want 6543aa", got)
	}
	if got := testing.AllocsPerRun(100, func() { benchParseText(data, "a1b2c3d4") }); got != 0 {
		t.Errorf("benchParseText allocates %v times, want 0", got)
	}
}

// TestBenchStormCheck feeds one storm client duplicates, a gap, a
// reordering and a stranger, and checks each is counted.
func TestBenchStormCheck(t *testing.T) {
	l := newBenchRoomLog(5)
	for i := range 5 {
		l.add(fmt.Sprintf("id%d", i), "t"+strconv.Itoa(i))
	}
	for i := range 5 {
		if id, text := string(l.id(i)), string(l.text(i)); id != fmt.Sprintf("id%d", i) || text != fmt.Sprintf(`"text":"t%d"`, i) {
			t.Fatalf("message %d recorded as %q %q", i, id, text)
		}
	}
	ev := func(i int, text string) []byte {
		return []byte(fmt.Sprintf(`{"topic":"rooms/r","message":{"id":"id%d","text":"%s"}}`, i, text))
	}
	c := &benchStormClient{log: l, seen: make([]uint64, 1)}
	for _, d := range [][]byte{ev(0, "t0"), ev(0, "t0"), ev(2, "t2"), ev(1, "t1"), ev(3, "wrong"), ev(9, "t9"), ev(3, "t3")} {
		c.check(d)
	}
	if c.got != 4 || c.dups != 1 || c.disorder != 1 || c.unexpected != 2 {
		t.Errorf("got %d new, %d dups, %d out of order, %d unexpected; want 4, 1, 1, 2", c.got, c.dups, c.disorder, c.unexpected)
	}
}

// TestBenchFanoutEvent checks the fan-out handler counts each write once
// and flags doubles and strangers.
func TestBenchFanoutEvent(t *testing.T) {
	f := &benchFanout{run: "00ff00ff", perRoom: []int64{1, 1, 1}}
	s := &benchStream{roomIdx: 1, hist: new(benchHist)}
	msg := func(seq int64) *benchEvent {
		text := benchAppendText(nil, time.Now().UnixNano(), seq, f.run, 0)
		return &benchEvent{name: []byte("message"), data: []byte(`{"message":{"text":"` + string(text) + `"}}`)}
	}
	for _, seq := range []int64{1, 4, 4, 7, 2, 400, 1} {
		f.onEvent(s, msg(seq))
	}
	f.onEvent(s, &benchEvent{name: []byte("snapshot")})
	f.onEvent(s, &benchEvent{name: []byte("snapshot")})
	if got := s.unique.Load(); got != 4 || s.dups != 2 || s.unexpected != 1 || s.resets != 1 || s.hist.count() != 4 {
		t.Errorf("got %d unique, %d dups, %d unexpected, %d resets, %d timed; want 4, 2, 1, 1, 4", got, s.dups, s.unexpected, s.resets, s.hist.count())
	}
}

// TestBenchSSEReader runs both stream readers against a canned event
// stream: field parsing, CRLF, comments, long lines, ids that go
// backwards, a refusal, and reconnects that send Last-Event-ID.
func TestBenchSSEReader(t *testing.T) {
	for _, reader := range []string{"goroutine", "epoll"} {
		t.Run(reader, func(t *testing.T) { benchTestReader(t, reader) })
	}
}

func benchTestReader(t *testing.T, reader string) {
	long := strings.Repeat("y", 3*benchReadBuf)
	var (
		mu      sync.Mutex
		lastIDs []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		lastIDs = append(lastIDs, r.Header.Get("Last-Event-ID"))
		n := len(lastIDs)
		mu.Unlock()
		if r.URL.Path != "/base/api/rooms/bench-0/events" {
			http.Error(w, "wrong path "+r.URL.Path, http.StatusNotFound)
			return
		}
		if n == 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		if n == 1 {
			for _, chunk := range []string{
				"retry: 10\n\n: ping\n\n",
				"id: 0002\r\nevent: snapshot\r\ndata: {\"a\":1}\r\n\r\n",
				"id:0003\nevent: message\ndata: line1\ndata: line2\n\n",
				"id: 0004\n\n", // no data: not dispatched, but the id counts
				"event: message\ndata: " + long + "\n\n",
				"id: 0001\nevent: message\ndata:x\n\n", // backwards
				"id: 0005\nevent: mess",                // cut off mid-event
			} {
				w.Write([]byte(chunk))
				w.(http.Flusher).Flush()
				time.Sleep(time.Millisecond)
			}
			return
		}
		w.Write([]byte("id: 0006\nevent: message\ndata: last\n\n"))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()

	b, err := newBencher(benchConfig{URL: srv.URL + "/base/", Rooms: 1, Rate: 1, Conns: 1, Sources: 2}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if reader == "epoll" {
		if b.poll, err = newBenchPoll(b); err != nil {
			t.Fatal(err)
		}
		defer b.poll.close()
	}
	s := b.newStreams(0)[0]
	type got struct{ id, name, data string }
	var evs []got
	var wg sync.WaitGroup
	b.start(t.Context(), &wg, s, func(s *benchStream, ev *benchEvent) bool {
		evs = append(evs, got{string(ev.id), string(ev.name), string(ev.data)})
		return string(ev.data) != "last"
	})
	wg.Wait()
	want := []got{
		{"0002", "snapshot", `{"a":1}`},
		{"0003", "message", "line1\nline2"},
		{"", "message", long},
		{"0001", "message", "x"},
		{"0006", "message", "last"},
	}
	if len(evs) != len(want) {
		t.Fatalf("got %d events %.80q, want %d", len(evs), evs, len(want))
	}
	for i := range want {
		if evs[i] != want[i] {
			t.Errorf("event %d: got %.60q, want %.60q", i, evs[i], want[i])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(lastIDs, ",") != ",0001,0001" {
		t.Errorf("got Last-Event-IDs %q; want none, then 0001 twice", lastIDs)
	}
	if b.reconnects.Load() != 2 || b.errs.Load() != 1 || s.idDisorder != 1 || s.retry != 10*time.Millisecond || b.open.Load() != 0 {
		t.Errorf("got %d reconnects, %d errors, %d ids out of order, retry %v, %d open; want 2, 1, 1, 10ms, 0",
			b.reconnects.Load(), b.errs.Load(), s.idDisorder, s.retry, b.open.Load())
	}
}

// TestBenchDecoder feeds one chunked event stream to the decoder in
// pieces of every size and checks the events are the same each time.
func TestBenchDecoder(t *testing.T) {
	body := "retry: 5\r\n\r\nid: 1\nevent: snapshot\ndata: {}\n\n: ping\n\n" +
		"id: 2\r\nevent: message\r\ndata: a\r\ndata: b\r\n\r\n" + "data: " + strings.Repeat("z", 700) + "\n\n"
	var raw []byte
	for rest := body; len(rest) > 0; {
		n := min(len(rest), 37)
		raw = fmt.Appendf(raw, "%x;ext=1\r\n%s\r\n", n, rest[:n])
		rest = rest[n:]
	}
	raw = append(raw, "0\r\n\r\n"...)
	b := &bencher{}
	for size := 1; size <= len(raw); size += 1 + size/8 {
		s := &benchStream{}
		s.dec.reset(true)
		var got []string
		h := func(s *benchStream, ev *benchEvent) bool {
			got = append(got, fmt.Sprintf("%s|%s|%.10s|%d", ev.id, ev.name, ev.data, len(ev.data)))
			return true
		}
		var err error
		for rest := raw; len(rest) > 0 && err == nil; {
			n := min(size, len(rest))
			err = b.feed(s, h, rest[:n])
			rest = rest[n:]
		}
		want := "1|snapshot|{}|2,2|message|a\nb|3,||zzzzzzzzzz|700"
		if strings.Join(got, ",") != want || err != io.EOF || s.retry != 5*time.Millisecond || string(s.lastID) != "2" {
			t.Fatalf("pieces of %d: got %q, %v, retry %v, last id %q; want %q, EOF, 5ms, 2", size, got, err, s.retry, s.lastID, want)
		}
	}
	s := &benchStream{}
	s.dec.reset(true)
	if err := b.feed(s, nil, []byte("zz\r\n")); err == nil || err == io.EOF {
		t.Errorf("bad chunk size: got %v, want an error", err)
	}
}
