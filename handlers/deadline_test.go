package handlers

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"changecast/internal/connlimit"
)

// shortDeadline is the write deadline these tests give every answer, as
// the binary gives connlimit.WriteTimeout: short, so that they outlive
// it in well under a second.
const shortDeadline = 100 * time.Millisecond

func withShortDeadline(h http.Handler) http.Handler { return connlimit.Serve(h, shortDeadline) }

// TestBackupOutlivesWriteDeadline: a backup that takes longer than the
// write deadline every answer gets is not cut: it pushes the deadline
// forward as it writes.
func TestBackupOutlivesWriteDeadline(t *testing.T) {
	chunk := make([]byte, 64<<10)
	const chunks = 4
	e := newEnvWrapped(t, withShortDeadline, dev, func(c *Config) {
		c.Store = stubBackup{Store: c.Store, backup: func(ctx context.Context, w io.Writer) (int64, error) {
			var n int64
			for i := range chunks {
				if i == chunks/2 {
					time.Sleep(3 * shortDeadline) // the copy goes on past the deadline
				}
				m, err := w.Write(chunk)
				n += int64(m)
				if err != nil {
					return n, err
				}
			}
			return n, nil
		}}
	})
	r, trailer, err := getBackup(e.url, nil)
	if err != nil || r.status != http.StatusOK || len(r.body) != chunks*len(chunk) {
		t.Fatalf("backup: got %d with %d bytes, %v; want 200 with %d bytes", r.status, len(r.body), err, chunks*len(chunk))
	}
	if got := trailer.Get(HeaderBackupSize); got != strconv.Itoa(chunks*len(chunk)) {
		t.Errorf("%s trailer %q, want %d", HeaderBackupSize, got, chunks*len(chunk))
	}
}

// TestStreamOutlivesWriteDeadline: an HTTP/2 stream goes on delivering
// past the write deadline every answer gets: it pushes the deadline
// forward itself. (An HTTP/1.1 stream takes its connection over, which
// clears the deadline.)
func TestStreamOutlivesWriteDeadline(t *testing.T) {
	e := newEnvWrapped(t, withShortDeadline, dev)
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &h2}}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/api/rooms/lobby/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := hc.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK || res.ProtoMajor != 2 {
		t.Fatalf("stream: %d over %s, want 200 over HTTP/2", res.StatusCode, res.Proto)
	}
	lines := bufio.NewScanner(res.Body)
	if !lines.Scan() {
		t.Fatalf("stream ended before its first line: %v", lines.Err())
	}
	time.Sleep(3 * shortDeadline)
	if r := e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"late"}`}); r.status != http.StatusCreated {
		t.Fatalf("post: %d %s", r.status, r.body)
	}
	for !strings.Contains(lines.Text(), "late") {
		if !lines.Scan() {
			t.Fatalf("stream ended before the message posted past the deadline: %v", lines.Err())
		}
	}
}
