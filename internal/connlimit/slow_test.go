package connlimit

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// bigSize is the length of /big: more than the kernel buffers both ends
// of a loopback connection can hold, so a client that does not read
// leaves the handler blocked in Write.
const bigSize = 32 << 20

// h2Request opens an HTTP/2 (h2c) connection to addr whose streams have
// the flow-control window window, and asks for path on stream 1.
func h2Request(t *testing.T, addr string, window uint32, path string) (net.Conn, *http2.Framer) {
	t.Helper()
	conn := dialT(t, addr)
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: window}); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "x"}, {":path", path}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	return conn, fr
}

// waitFor waits up to 10 s for cond to hold.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within 10s", what)
		}
	}
}

// TestSlowReaderLosesPlace: an HTTP/1.1 client that asks for a large
// answer and does not read it holds its place only until the write
// deadline: then the server closes its connection, and a newcomer gets
// the place.
func TestSlowReaderLosesPlace(t *testing.T) {
	s := startServerWith(t, 1, 0, time.Hour, 20*time.Millisecond, 20*time.Millisecond, 200*time.Millisecond)
	slow := s.dial(t)
	slow.Conn.(*net.TCPConn).SetReadBuffer(4096)
	slow.get(t, "/big")
	s.waitEntered(t)
	waitFor(t, "the slow reader's connection closed", func() bool { return s.l.Open() == 0 })

	newcomer := s.dial(t)
	newcomer.get(t, "/healthz")
	if resp := newcomer.answer(t); resp.StatusCode != http.StatusOK {
		t.Errorf("newcomer: status %d, want 200", resp.StatusCode)
	}
}

// TestH2SlowReaderLosesPlace: an HTTP/2 client with a zero window that
// asks for a large answer loses that stream at the write deadline; its
// connection then serves nothing and a newcomer takes its place.
func TestH2SlowReaderLosesPlace(t *testing.T) {
	s := startServerWith(t, 1, 0, time.Hour, 20*time.Millisecond, 20*time.Millisecond, 200*time.Millisecond)
	conn, fr := h2Request(t, s.addr, 0, "/big")
	s.waitEntered(t)
	waitFor(t, "the HTTP/2 connection idle", func() bool {
		s.l.mu.Lock()
		defer s.l.mu.Unlock()
		return s.l.ordinary.idle.Len() == 1
	})

	newcomer := s.dial(t)
	newcomer.get(t, "/healthz")
	if resp := newcomer.answer(t); resp.StatusCode != http.StatusOK {
		t.Errorf("newcomer: status %d, want 200", resp.StatusCode)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			if !isClosed(err) {
				t.Errorf("HTTP/2 connection: %v, want it closed by the server", err)
			}
			break
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamEnded() {
			t.Fatal("the whole answer reached a client with a zero window")
		}
	}
	conn.Close()
	if got := s.l.Evicted(); got != 1 {
		t.Errorf("Evicted() = %d, want 1", got)
	}
}

// TestAnswerSentBeforeIdle: a connection whose handler has returned but
// whose answer still waits for the client (here an HTTP/2 window) keeps
// its place; the answer arrives whole once the client reads.
func TestAnswerSentBeforeIdle(t *testing.T) {
	s := startServerWith(t, 1, 0, time.Hour, 20*time.Millisecond, 20*time.Millisecond, time.Hour)
	conn, fr := h2Request(t, s.addr, 0, "/small")
	defer conn.Close()
	s.waitEntered(t)

	newcomer := s.dial(t)
	newcomer.get(t, "/healthz")
	newcomer.wantClosed(t, "newcomer while an answer waits for its client")
	if err := fr.WriteWindowUpdate(1, 1<<16); err != nil {
		t.Fatal(err)
	}
	var body []byte
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("waiting for the answer: %v (got %q)", err, body)
		}
		if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
			body = append(body, d.Data()...)
			if d.StreamEnded() {
				break
			}
		}
	}
	if string(body) != "ok" {
		t.Errorf("answer %q, want %q", body, "ok")
	}
	wantTally(t, s.l, 0, 1)
}

// TestIdleGraceLongerThanSilent: a keep-alive connection between
// requests (a proxy's pooled connection) keeps its place for the idle
// grace, longer than a silent one's: a newcomer waits, and a request
// arriving on the idle connection meanwhile is served, not reset.
func TestIdleGraceLongerThanSilent(t *testing.T) {
	s := startServerWith(t, 1, 0, time.Hour, 20*time.Millisecond, time.Hour, time.Hour)
	idle := s.dial(t)
	idle.get(t, "/healthz")
	idle.answer(t)

	newcomer := s.dial(t)
	newcomer.get(t, "/healthz")
	newcomer.wantOpen(t, "newcomer within the idle grace", 200*time.Millisecond)
	idle.get(t, "/healthz")
	if resp := idle.answer(t); resp.StatusCode != http.StatusOK {
		t.Errorf("request on the idle connection: status %d, want 200", resp.StatusCode)
	}
	// The newcomer is refused if it looks again while the idle
	// connection serves, else waits on: either is right.
	if s.l.Evicted() != 0 {
		t.Errorf("Evicted() = %d, want 0", s.l.Evicted())
	}
}

// TestStreamClosedBeforeHandler: over HTTP/2 a stream can close (be
// reset) before its handler begins, so that net/http reports the
// connection idle first; once that handler returns the connection is
// idle, not serving for ever.
func TestStreamClosedBeforeHandler(t *testing.T) {
	l, nc := acceptOne(t)
	c := nc.(*conn)
	ConnState(c, http.StateActive) // the stream opens
	ConnState(c, http.StateIdle)   // and is reset
	c.begin()                      // before its handler begins
	c.end()
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.elem == nil || l.ordinary.idle.Len() != 1 {
		t.Error("connection with no stream open and no handler running is not idle")
	}
}
