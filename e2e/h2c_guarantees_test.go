package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"changecast/internal/sseclient"
	"changecast/stream/sseparse"
)

// h2cSmallWindow is an HTTP/2 (h2c) client whose streams each take at
// most 64 KiB (the smallest receive window Go allows) before the client
// reads them: a stream it stops reading stalls the server's writes
// within 64 KiB, while its other streams on the same connection go on.
func h2cSmallWindow() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p, HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10}}}
}

// openH2 opens url over c with lastID (none if empty), failing unless
// the answer is 200 over HTTP/2; reused says whether it went over a
// connection c had open already. The stream ends with ctx.
func openH2(ctx context.Context, t *testing.T, c *http.Client, url, lastID string) (resp *http.Response, reused bool) {
	t.Helper()
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
		resp.Body.Close()
		t.Fatalf("stream over h2c: %d %s, want 200 over HTTP/2", resp.StatusCode, resp.Proto)
	}
	return resp, reused
}

// h2Collector reads a stream's events (but presence) as they come.
type h2Collector struct {
	mu      sync.Mutex
	evs     []sseclient.Event
	retries int
	err     error // why the stream ended, once it has
	done    chan struct{}
}

// collectH2 reads resp's body into a collector until it ends.
func collectH2(resp *http.Response) *h2Collector {
	c := &h2Collector{done: make(chan struct{})}
	dec := sseparse.Decoder{
		OnEvent: func(ev *sseparse.Event) bool {
			if string(ev.Name) != "presence" {
				c.mu.Lock()
				c.evs = append(c.evs, sseclient.Event{ID: string(ev.ID), Name: string(ev.Name), Data: append([]byte(nil), ev.Data...)})
				c.mu.Unlock()
			}
			return true
		},
		OnRetry: func(time.Duration) { c.mu.Lock(); c.retries++; c.mu.Unlock() },
	}
	go func() {
		defer close(c.done)
		err := dec.Decode(resp.Body)
		resp.Body.Close()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
	}()
	return c
}

// waitN waits for n events, failing after 60 s.
func (c *h2Collector) waitN(t *testing.T, n int) []sseclient.Event {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c.mu.Lock()
		evs := append([]sseclient.Event(nil), c.evs...)
		c.mu.Unlock()
		if len(evs) >= n {
			return evs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events within 60s, want %d", len(evs), n)
		}
	}
}

// postH2 posts a message to room over c.
func postH2(c *http.Client, base, room, text string) error {
	resp, err := c.Post(base+"/api/rooms/"+room+"/messages", "application/json", strings.NewReader(fmt.Sprintf(`{"text":%q,"author":"tester"}`, text)))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || resp.ProtoMajor != 2 {
		return fmt.Errorf("post over h2c: %d %s, want 201 over HTTP/2", resp.StatusCode, resp.Proto)
	}
	return nil
}

// TestSlowClientOverHTTP2: over one HTTP/2 connection, a stream the
// client stops reading (its 64 KiB window full) is dropped as slow,
// while a stream beside it on the same connection gets every event and
// writes go over that connection too; the stopped stream's client, once
// it reads again, has what was sent before the drop, and resuming from
// its last id gets exactly the rest.
func TestSlowClientOverHTTP2(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	const room, writes = "slowh2", 1200
	url := s.URL + "/api/rooms/" + room + "/events"
	text := strings.Repeat("x", 3000)
	c := h2cSmallWindow()
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	fastResp, _ := openH2(ctx, t, c, url, "")
	fast := collectH2(fastResp)
	fast.waitN(t, 1)
	slowResp, reused := openH2(ctx, t, c, url, "")
	if !reused {
		t.Fatal("second stream opened a new connection; want both on one HTTP/2 connection")
	}
	// The slow client reads its snapshot, then nothing.
	br := bufio.NewReader(slowResp.Body)
	snapshot := sseclient.Event{}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the slow stream's snapshot: %v", err)
		}
		switch {
		case strings.HasPrefix(line, "id: "):
			snapshot.ID = strings.TrimSpace(line[4:])
		case strings.HasPrefix(line, "event: "):
			snapshot.Name = strings.TrimSpace(line[7:])
		}
		if line == "\n" && snapshot.Name == "snapshot" {
			break
		}
	}

	var wg sync.WaitGroup
	for g := range 12 {
		wg.Go(func() {
			for i := g; i < writes; i += 12 {
				if err := postH2(c, s.URL, room, fmt.Sprintf("%d %s", i, text)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := fast.waitN(t, 1+writes)
	checkOrdered(t, got[1:])

	// The slow stream was ended: what the client holds ends, and not in
	// a minute of silence.
	type result struct {
		evs []sseclient.Event
		err error
	}
	rc := make(chan result, 1)
	go func() {
		evs, err := readRawEvents(br)
		rc <- result{evs, err}
	}()
	var r result
	select {
	case r = <-rc:
	case <-time.After(60 * time.Second):
		slowResp.Body.Close()
		t.Fatal("the slow HTTP/2 stream was not ended (nothing more for 60s)")
	}
	slowEvents := append([]sseclient.Event{snapshot}, r.evs...)
	if len(slowEvents) >= 1+writes {
		t.Fatalf("slow stream read %d events; want it cut off part way", len(slowEvents))
	}
	t.Logf("slow HTTP/2 stream dropped after %d of %d events (%v)", len(slowEvents), 1+writes, r.err)
	waitLogLine(t, s.logs, "stream ended", "reason=slow")

	last := slowEvents[len(slowEvents)-1]
	backResp, reused := openH2(ctx, t, c, url, last.ID)
	if !reused {
		t.Error("the resumed stream opened a new connection; want the same HTTP/2 connection")
	}
	back := collectH2(backResp)
	rest := back.waitN(t, 1+writes-len(slowEvents))
	all := append(slowEvents, rest...)
	if len(all) != 1+writes {
		t.Fatalf("slow client has %d events after resuming, want %d", len(all), 1+writes)
	}
	for i := range all {
		if all[i].ID != got[i].ID || all[i].Name != got[i].Name {
			t.Fatalf("event %d: slow client has %s %s, fast client %s %s", i, all[i].Name, all[i].ID, got[i].Name, got[i].ID)
		}
	}
}

// TestStreamMaxAgeOverHTTP2: with STREAM_MAX_AGE=1m (the smallest
// allowed) a stream over HTTP/2 ends cleanly (END_STREAM, not a reset)
// within the minute (its first line set a one-second retry); resuming from its last id over
// the same connection gets exactly what was written meanwhile.
func TestStreamMaxAgeOverHTTP2(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a one-minute stream age")
	}
	t.Parallel()
	s := newE2EServer(t, map[string]string{"STREAM_MAX_AGE": "1m", "HEARTBEAT_INTERVAL": "5s"})
	const room = "ageh2"
	url := s.URL + "/api/rooms/" + room + "/events"
	c := h2cClient()
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	resp, _ := openH2(ctx, t, c, url, "")
	first := collectH2(resp)
	first.waitN(t, 1)
	for i := range 3 {
		if err := postH2(c, s.URL, room, fmt.Sprint("before ", i)); err != nil {
			t.Fatal(err)
		}
	}
	evs := first.waitN(t, 4)
	select {
	case <-first.done:
	case <-time.After(90 * time.Second):
		t.Fatal("the stream did not end within 90s of STREAM_MAX_AGE=1m")
	}
	if first.err != nil {
		t.Fatalf("the stream ended with %v; want a clean end of the HTTP/2 stream", first.err)
	}
	if first.retries != 1 {
		t.Errorf("%d retry lines; want the short one that opens the stream", first.retries)
	}
	waitLogLine(t, s.logs, "stream ended", "reason=max-age")
	for i := range 2 {
		if err := postH2(c, s.URL, room, fmt.Sprint("after ", i)); err != nil {
			t.Fatal(err)
		}
	}
	resp, reused := openH2(ctx, t, c, url, evs[len(evs)-1].ID)
	if !reused {
		t.Error("the resumed stream opened a new connection; want the same HTTP/2 connection")
	}
	rest := collectH2(resp).waitN(t, 2)
	for i, ev := range rest[:2] {
		if ev.Name != "message" || !strings.Contains(string(ev.Data), fmt.Sprintf(`"text":"after %d"`, i)) {
			t.Errorf("resumed event %d: %s %s, want message \"after %d\"", i, ev.Name, ev.Data, i)
		}
	}
	if len(rest) > 2 {
		t.Errorf("resumed stream has %d events, want 2: %s", len(rest), describe(rest))
	}
}

// TestConnectionLimitOverHTTP2: MAX_CONNECTIONS counts TCP connections:
// one HTTP/2 connection carrying more streams than MAX_CONNECTIONS holds
// one place, keeps it through a flood of silent connections, and keeps
// carrying writes and events; the server tells HTTP/2 clients it takes
// up to 250 streams per connection.
func TestConnectionLimitOverHTTP2(t *testing.T) {
	t.Parallel()
	const max, streams = 2, 5
	s := newE2EServer(t, map[string]string{"MAX_CONNECTIONS": fmt.Sprint(max), "STREAMS_PER_SUBJECT": "-1"})
	addr := strings.TrimPrefix(s.URL, "http://")
	if got := h2MaxConcurrentStreams(t, addr); got != 250 {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want 250", got)
	}
	const room = "connh2"
	c := h2cClient()
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cols []*h2Collector
	for i := range streams {
		resp, reused := openH2(ctx, t, c, s.URL+"/api/rooms/"+room+"/events", "")
		if i > 0 && !reused {
			t.Fatalf("stream %d opened a new connection; want one HTTP/2 connection", i)
		}
		col := collectH2(resp)
		col.waitN(t, 1)
		cols = append(cols, col)
	}
	// This request's own connection is the second.
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if n, ok := metricValue(string(body), "changecast_connections_open"); !ok || n != 2 {
		t.Errorf("changecast_connections_open = %v (found %v) with %d streams on one HTTP/2 connection, want 2", n, ok, streams)
	}

	f := flood(t, addr, 10)
	f.waitFull(t, 10)
	if err := postH2(c, s.URL, room, "through the flood"); err != nil {
		t.Fatal(err)
	}
	for i, col := range cols {
		evs := col.waitN(t, 2)
		if !strings.Contains(string(evs[1].Data), "through the flood") {
			t.Errorf("stream %d: %s, want the message", i, describe(evs))
		}
	}
	f.stop()
}

// h2MaxConcurrentStreams opens an HTTP/2 connection to addr and returns
// the server's SETTINGS_MAX_CONCURRENT_STREAMS (0 if it sets none).
func h2MaxConcurrentStreams(t *testing.T, addr string) uint32 {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's SETTINGS: %v", err)
		}
		sf, ok := f.(*http2.SettingsFrame)
		if !ok || sf.IsAck() {
			continue
		}
		v, _ := sf.Value(http2.SettingMaxConcurrentStreams)
		return v
	}
}
