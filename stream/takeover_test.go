package stream

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// takeOverTTL is the token lifetime of TestTakeOverConnection's stream.
const takeOverTTL = 5 * time.Second

// TestTakeOverConnection: on HTTP/1.1 Serve returns as soon as the stream
// is live, without holding net/http's goroutine, and the stream goes on
// over the connection: live events, then a clean chunked end at expiry,
// with OnStreamEnd and Done called before the client sees that end.
func TestTakeOverConnection(t *testing.T) {
	src := newFakeSource()
	var ended atomic.Pointer[StreamEnd]
	m := startMux(t, src, Config{OnStreamEnd: func(e StreamEnd) { ended.Store(&e) }})
	var returned, done atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "req-1")
		// The token must outlive the snapshot and one live event on a
		// loaded machine; the test waits for its expiry.
		err := m.Serve(w, r, StreamOptions{Topics: []string{"rooms/a"}, Expires: time.Now().Add(takeOverTTL), Done: func() { done.Add(1) }})
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		returned.Add(1)
	}))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/?topic=rooms/a")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("X-Request-Id") != "req-1" ||
		len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || !resp.Close {
		t.Fatalf("response %d, headers %v, transfer encoding %v, close %v; want 200 SSE, chunked, with the handler's headers, closing", resp.StatusCode, resp.Header, resp.TransferEncoding, resp.Close)
	}
	br := bufio.NewReader(resp.Body)
	readUntil := func(want string) string {
		t.Helper()
		var got strings.Builder
		for !strings.Contains(got.String(), want) {
			line, err := br.ReadString('\n')
			got.WriteString(line)
			if err != nil {
				t.Fatalf("reading %q: %v; want %q", got.String(), err, want)
			}
		}
		return got.String()
	}
	readUntil("event: snapshot")
	waitFor(t, "Serve to return while the stream is open", func() bool { return returned.Load() == 1 })
	if m.Stats().OpenStreams != 1 || done.Load() != 0 {
		t.Fatalf("after Serve returned: %+v, Done called %d times; want the stream open", m.Stats(), done.Load())
	}
	ev := src.add("rooms/a", "after the handler returned")
	readUntil("id: " + ev.ID + "\n")

	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("the stream did not end cleanly: %v after %q", err, rest)
	}
	if !strings.HasSuffix(string(rest), string(expiredFrame("rooms/a"))) {
		t.Fatalf("the stream ended with %q; want expired", rest)
	}
	if e := ended.Load(); done.Load() != 1 || e == nil || e.Reason != EndExpired || e.RequestID != "req-1" || e.Events != 2 {
		t.Fatalf("when the client saw the end: Done called %d times, stream end %+v; want Done once and an expired end of req-1 with 2 events", done.Load(), e)
	}
	waitFor(t, "the stream to be gone", func() bool { return m.Stats().OpenStreams == 0 && m.Stats().Subscribers == 0 })
}

// TestTakeOverHTTP10: an HTTP/1.0 client gets a body that ends with the
// connection instead of chunks.
func TestTakeOverHTTP10(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{})
	srv := testServer(t, m)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /?topic=rooms/a&expires=500ms HTTP/1.0\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	all, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := strings.Cut(string(all), "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.0 200 OK\r\n") || strings.Contains(head, "Transfer-Encoding") {
		t.Fatalf("head %q; want HTTP/1.0 200 without chunks", head)
	}
	if !strings.HasPrefix(body, "retry: 1000\n\n") || !strings.Contains(body, "event: snapshot") || !strings.HasSuffix(body, string(expiredFrame("rooms/a"))) {
		t.Fatalf("body %q; want retry, snapshot, expired", body)
	}
}

// TestTakeOverClientGoes: a client that hangs up ends its stream promptly
// although nothing is written to it.
func TestTakeOverClientGoes(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{Heartbeat: time.Hour})
	srv := testServer(t, m)
	c := dial(t, topicsURL(srv.URL, "rooms/a"), "")
	c.next(t)
	if m.Stats().OpenStreams != 1 {
		t.Fatalf("%+v; want one stream", m.Stats())
	}
	c.close()
	waitFor(t, "the stream to end", func() bool { return m.Stats().OpenStreams == 0 && m.Stats().Subscribers == 0 })
}

// endRecorder is a responseWriter that records what it is asked to do.
type endRecorder struct {
	writes int
	ended  []byte
	ends   int
	drops  int
}

func (e *endRecorder) Write([][]byte, int) error        { e.writes++; return nil }
func (e *endRecorder) SetWriteDeadline(time.Time) error { return nil }
func (e *endRecorder) End(last []byte)                  { e.ends++; e.ended = last }
func (e *endRecorder) Drop()                            { e.drops++ }
func (e *endRecorder) Blocked() (bool, error)           { return false, nil }

// TestFinishAfterAbortEnds: a stream that Close stops before its first
// write writes nothing more, and still ends its response cleanly with
// its last words (the connection then sends its unsent head with them:
// httpconn's TestEndSendsUnsentHead), rather than dropping it.
func TestFinishAfterAbortEnds(t *testing.T) {
	for _, last := range []string{"", "retry: 3000\n\n"} {
		rec := &endRecorder{}
		sw := newStreamWriter()
		sw.rw = rec
		sw.abort()
		sw.add([]byte("retry: 1000\n\n"))
		if _, err := sw.flush(); !errors.Is(err, errAborted) {
			t.Fatalf("flush after abort: %v; want errAborted", err)
		}
		sw.finish([]byte(last))
		if rec.writes != 0 || rec.ends != 1 || rec.drops != 0 || string(rec.ended) != last {
			t.Fatalf("after abort and finish(%q): %d writes, %d ends with %q, %d drops; want no write and one end with the last words", last, rec.writes, rec.ends, rec.ended, rec.drops)
		}
	}
}

// TestDeliveredWhenTaken: events the socket of a client that does not read
// has not taken count as backlogged, not delivered; once the client reads
// them all they count as delivered and nothing is backlogged. (The client
// keeps its default receive buffer: one far smaller than the loopback's
// segment size never sends window updates, and TCP's zero-window probes
// would pace the test instead.)
func TestDeliveredWhenTaken(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{QueueSize: 1 << 16})
	srv := httptest.NewUnstartedServer(streamHandler(m))
	srv.Listener = smallBufferListener{srv.Listener}
	srv.Start()
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "GET /?topic=rooms/a HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the stream to be live", func() bool { return m.Stats().Subscribers == 1 && m.Stats().Delivered > 0 })
	before := m.Stats().Delivered // the snapshot

	big := strings.Repeat("x", 16<<10)
	const n = 400 // ~6.5 MB: far more than the socket buffers hold
	for range n {
		src.add("rooms/a", big)
	}
	waitFor(t, "events to wait in the backlog", func() bool { return m.Stats().Backlogged > 0 })
	if st := m.Stats(); st.Delivered-before >= n {
		t.Fatalf("a client that reads nothing: %d delivered, %d backlogged; want fewer than %d delivered", st.Delivered-before, st.Backlogged, n)
	}
	// The client reads everything.
	go io.Copy(io.Discard, conn)
	waitFor(t, "every event to be delivered", func() bool {
		st := m.Stats()
		return st.Delivered-before == n && st.Backlogged == 0
	})
}
