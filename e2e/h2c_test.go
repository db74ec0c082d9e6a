package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"changecast/protocol"
)

// h2cClient speaks HTTP/2 without TLS, with prior knowledge, as a proxy
// or platform in front of changecast may.
func h2cClient() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}

// TestStreamOverHTTP2: a stream over h2c carries every message once, in
// order, with heartbeats, and resumes from Last-Event-ID exactly, while
// writes go over the same HTTP/2 connection; HTTP/1.1 still works on the
// same port.
func TestStreamOverHTTP2(t *testing.T) {
	s := newE2EServer(t, map[string]string{"HEARTBEAT_INTERVAL": "1s"})
	c := h2cClient()
	defer c.CloseIdleConnections()
	post := func(text string) {
		t.Helper()
		resp, err := c.Post(s.URL+"/api/rooms/h2/messages", "application/json", strings.NewReader(`{"text":"`+text+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated || resp.ProtoMajor != 2 {
			t.Fatalf("POST over h2c: %d %s, want 201 over HTTP/2", resp.StatusCode, resp.Proto)
		}
	}
	type event struct{ id, name, data string }
	open := func(lastID string) (<-chan event, <-chan string, func()) {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", s.URL+"/api/rooms/h2/events", nil)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.Header.Get("Cache-Control") != "no-cache, no-transform" {
			t.Fatalf("stream over h2c: %d %s %v; want 200 over HTTP/2 with the stream headers", resp.StatusCode, resp.Proto, resp.Header)
		}
		evs, comments := make(chan event, 100), make(chan string, 100)
		go func() {
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			var ev event
			for sc.Scan() {
				line := sc.Text()
				switch {
				case line == "":
					if ev.name != "" {
						evs <- ev
					}
					ev = event{}
				case strings.HasPrefix(line, ":"):
					comments <- line
				case strings.HasPrefix(line, "id: "):
					ev.id = line[4:]
				case strings.HasPrefix(line, "event: "):
					ev.name = line[7:]
				case strings.HasPrefix(line, "data: "):
					ev.data = line[6:]
				}
			}
		}()
		return evs, comments, cancel
	}
	next := func(evs <-chan event, want protocol.EventName) event {
		t.Helper()
		for {
			select {
			case ev := <-evs:
				if ev.name == string(protocol.EventPresence) {
					continue
				}
				if ev.name != string(want) {
					t.Fatalf("got %s %s, want %s", ev.name, ev.data, want)
				}
				return ev
			case <-time.After(20 * time.Second):
				t.Fatalf("no %s event within 20s", want)
			}
		}
	}

	evs, comments, stop := open("")
	next(evs, protocol.EventSnapshot)
	var ids []string
	for i := range 5 {
		post(fmt.Sprint("m", i))
		ev := next(evs, protocol.EventMessage)
		if !strings.Contains(ev.data, fmt.Sprintf(`"text":"m%d"`, i)) {
			t.Fatalf("message %d: %s", i, ev.data)
		}
		ids = append(ids, ev.id)
	}
	select {
	case <-comments:
	case <-time.After(20 * time.Second):
		t.Fatal("no heartbeat over HTTP/2 within 20s")
	}
	stop()

	// Resume from the second message: exactly the three after it.
	post("m5")
	evs, _, stop = open(ids[1])
	defer stop()
	for i := 2; i <= 5; i++ {
		ev := next(evs, protocol.EventMessage)
		if !strings.Contains(ev.data, fmt.Sprintf(`"text":"m%d"`, i)) || (i < 5 && ev.id != ids[i]) {
			t.Fatalf("resumed after %s: got %s %s, want m%d", ids[1], ev.id, ev.data, i)
		}
	}

	// HTTP/1.1 on the same port.
	resp, err := http.Get(s.URL + "/healthz")
	if err != nil || resp.ProtoMajor != 1 || resp.StatusCode != 200 {
		t.Fatalf("HTTP/1.1 beside h2c: %v %v", resp, err)
	}
	resp.Body.Close()
}
