package stream

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recorder is a ResponseWriter that can flush, safe to read while Serve
// writes.
type recorder struct {
	mu      sync.Mutex
	header  http.Header
	status  int
	body    bytes.Buffer
	flushes int
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int) {
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
}
func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status == 0 {
		r.status = 200
	}
	return r.body.Write(p)
}
func (r *recorder) Flush() {
	r.mu.Lock()
	r.flushes++
	r.mu.Unlock()
}
func (r *recorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.body.String()
}

// TestHeartbeatAndExpiry checks, on a fake clock, that a stream sends
// `retry:` and its snapshot at once, a `: ping` every heartbeat, its
// events as they come, and `expired` at the token's expiry, then ends.
func TestHeartbeatAndExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		m := New(src, Config{Heartbeat: 15 * time.Second, Retry: 2 * time.Second})
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		synctest.Wait()

		w := newRecorder()
		r := httptest.NewRequest("GET", "/", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Serve(w, r, StreamOptions{Topics: []string{"rooms/a"}, Expires: time.Now().Add(40 * time.Second)})
		}()
		synctest.Wait()
		got := w.text()
		if !strings.HasPrefix(got, "retry: 2000\n\n") || !strings.Contains(got, "event: snapshot") || strings.Contains(got, "ping") {
			t.Fatalf("at start the stream holds %q; want retry, then a snapshot, no ping", got)
		}
		if h := w.Header(); h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache" || h.Get("X-Accel-Buffering") != "no" {
			t.Fatalf("headers %v", h)
		}

		time.Sleep(15*time.Second - time.Nanosecond)
		synctest.Wait()
		if n := strings.Count(w.text(), ": ping\n\n"); n != 0 {
			t.Fatalf("%d pings before the first heartbeat", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := strings.Count(w.text(), ": ping\n\n"); n != 1 {
			t.Fatalf("%d pings after one heartbeat interval, want 1", n)
		}
		ev := src.add("rooms/a", "hello")
		synctest.Wait()
		if !strings.Contains(w.text(), "id: "+ev.ID+"\n") {
			t.Fatalf("live event not written: %q", w.text())
		}
		time.Sleep(15 * time.Second)
		synctest.Wait()
		if n := strings.Count(w.text(), ": ping\n\n"); n != 2 {
			t.Fatalf("%d pings after two intervals, want 2", n)
		}
		select {
		case <-done:
			t.Fatal("stream ended before the token expired")
		default:
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("stream still open after the token expired")
		}
		if !strings.HasSuffix(w.text(), "event: expired\ndata: {\"reason\":\"token expired\"}\n\n") {
			t.Fatalf("stream does not end with expired: %q", w.text())
		}
	})
}

// TestServeEndsWhenClientGoes: Serve returns when the request's context
// ends.
func TestServeEndsWhenClientGoes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		m := New(src, Config{})
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		ctx, cancel := context.WithCancel(context.Background())
		r := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Serve(newRecorder(), r, StreamOptions{Topics: []string{"orders/1"}})
		}()
		synctest.Wait()
		if got := m.Stats(); got.OpenStreams != 1 || got.OrderSubscribers != 1 {
			t.Fatalf("stats with one stream open: %+v", got)
		}
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("Serve still running after the client went")
		}
		if got := m.Stats(); got.OpenStreams != 0 || got.OrderSubscribers != 0 {
			t.Fatalf("stats after the stream ended: %+v", got)
		}
	})
}
