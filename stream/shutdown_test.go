package stream

import (
	"bufio"
	"changecast/protocol"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// lastRetry returns the reconnect delay a client ends up with after
// reading body, in milliseconds, and whether body's last line is the
// `retry:` that set it (followed by the blank line ending its block).
func lastRetry(tb testing.TB, body string) (ms int, last bool) {
	tb.Helper()
	p, _ := parseStream(body)
	n, err := strconv.Atoi(p.retry)
	if err != nil {
		tb.Fatalf("no retry in %q", body)
	}
	return n, strings.HasSuffix(body, "\nretry: "+p.retry+"\n\n") || body == "retry: "+p.retry+"\n\n"
}

// TestCloseSpreadsRetry: Close ends each of 200 streams, served on
// connections taken over, with a last `retry:` drawn from the shutdown
// window, and the values are spread over it, so that the clients of a
// restarting process do not come back at once.
func TestCloseSpreadsRetry(t *testing.T) {
	const streams = 200
	const lo, hi = 2000, 4000 // ms
	src := newFakeSource()
	src.add("rooms/a", "before")
	m := New(src, Config{ShutdownRetryMin: lo * time.Millisecond, ShutdownRetryMax: hi * time.Millisecond})
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	srv := testServer(t, m)

	bodies := make([]string, streams)
	errs := make([]error, streams)
	var wg sync.WaitGroup
	for i := range streams {
		conn := rawStream(t, srv, "topic=rooms%2Fa")
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		wg.Go(func() {
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				errs[i] = err
				return
			}
			b, err := io.ReadAll(resp.Body)
			bodies[i], errs[i] = string(b), err
		})
	}
	waitFor(t, "every snapshot written", func() bool { return m.Stats().Delivered == streams })
	m.Close()
	wg.Wait()

	distinct := map[int]bool{}
	lower := 0
	for i, body := range bodies {
		if errs[i] != nil {
			t.Fatalf("stream %d did not end cleanly: %v (body %q)", i, errs[i], body)
		}
		if evs := parseAll(body); len(evs) != 1 || evs[0].Name != protocol.EventSnapshot {
			t.Fatalf("stream %d: events %q; want its snapshot", i, evs)
		}
		n, last := lastRetry(t, body)
		if !last || n < lo || n > hi {
			t.Fatalf("stream %d ends with retry %d (last line: %v) in %q; want a last retry in [%d, %d]", i, n, last, body, lo, hi)
		}
		distinct[n] = true
		if n < (lo+hi)/2 {
			lower++
		}
	}
	// 200 uniform draws from 2,001 values: about 190 distinct, and 100
	// in each half of the window (standard deviation 7). Failing either
	// bound below by chance is less likely than 1 in 10^12.
	if len(distinct) < 100 {
		t.Errorf("%d distinct retry values over %d streams; want at least 100", len(distinct), streams)
	}
	if lower < 50 || lower > streams-50 {
		t.Errorf("%d of %d retry values in the lower half of the window; want 50 to %d", lower, streams, streams-50)
	}
}

// TestShutdownRetryOnlyOnClose checks, on a fake clock and through a
// ResponseWriter, that only streams Close ends get a last `retry:` from
// the (default) shutdown window: a stream whose token expired or whose
// client went keeps the usual delay.
func TestShutdownRetryOnlyOnClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := started(t, newFakeSource(), Config{})
		defer m.Close()
		closed, expired, gone := newRecorder(), newRecorder(), newRecorder()
		stopClosed := serveInBubble(m, closed, StreamOptions{Topics: []string{"rooms/a"}})
		stopExpired := serveInBubble(m, expired, StreamOptions{Topics: []string{"rooms/a"}, Expires: time.Now().Add(time.Minute)})
		stopGone := serveInBubble(m, gone, StreamOptions{Topics: []string{"rooms/a"}})
		synctest.Wait()
		if err := stopGone(); err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if evs := parseAll(expired.text()); evs[len(evs)-1].Name != protocol.EventExpired {
			t.Fatalf("events %q; want the stream expired", evs)
		}
		m.Close()
		if err := stopClosed(); err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
		if err := stopExpired(); err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}

		lo, hi := int(DefaultShutdownRetryMin.Milliseconds()), int(DefaultShutdownRetryMax.Milliseconds())
		if n, last := lastRetry(t, closed.text()); !last || n < lo || n > hi {
			t.Errorf("closed stream ends with retry %d (last line: %v): %q; want a last retry in [%d, %d]", n, last, closed.text(), lo, hi)
		}
		usual := fmt.Sprint(DefaultRetry.Milliseconds())
		for name, w := range map[string]*recorder{"expired": expired, "gone": gone} {
			if p, _ := parseStream(w.text()); p.retry != usual || strings.Count(w.text(), "retry:") != 1 {
				t.Errorf("%s stream: retry %s in %q; want only the first, %s", name, p.retry, w.text(), usual)
			}
		}
	})
}
