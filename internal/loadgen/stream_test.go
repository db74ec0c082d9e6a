package loadgen

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSSEReader runs both stream readers against a canned event
// stream: field parsing, CRLF, comments, long lines, ids that go
// backwards, a refusal, and reconnects that send Last-Event-ID.
func TestSSEReader(t *testing.T) {
	for _, reader := range []string{"goroutine", "epoll"} {
		t.Run(reader, func(t *testing.T) { testReader(t, reader) })
	}
}

func testReader(t *testing.T, reader string) {
	long := strings.Repeat("y", 3*readBuf)
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

	b, err := newBencher(config{URL: srv.URL + "/base/", Rooms: 1, Rate: 1, Conns: 1, Sources: 2}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if reader == "epoll" {
		if b.poll, err = newPollSet(b); err != nil {
			t.Fatal(err)
		}
		defer b.poll.close()
	}
	s := b.newStreams(0)[0]
	type got struct{ id, name, data string }
	var evs []got
	var wg sync.WaitGroup
	b.start(t.Context(), &wg, s, func(s *stream, ev *event) bool {
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
