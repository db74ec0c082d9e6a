package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"changecast/internal/sseclient"
	"changecast/stream/sseparse"
)

// readRawEvents parses complete SSE events (terminated by a blank line),
// but presence events, from r until it fails, returning them and the error that ended it
// (io.EOF at a clean end).
func readRawEvents(r *bufio.Reader) ([]sseclient.Event, error) {
	var evs []sseclient.Event
	dec := sseparse.Decoder{OnEvent: func(ev *sseparse.Event) bool {
		if string(ev.Name) == "presence" {
			return true // beside the log
		}
		evs = append(evs, sseclient.Event{ID: string(ev.ID), Name: string(ev.Name), Data: append([]byte(nil), ev.Data...)})
		return true
	}}
	err := dec.Decode(r)
	if err == nil {
		err = io.EOF
	}
	return evs, err
}

// TestSlowSubscriberEndToEnd: a client that never reads does not hold up a
// client that does; the server disconnects it; when it reconnects with the
// last id it read, it gets the rest with nothing lost or doubled.
func TestSlowSubscriberEndToEnd(t *testing.T) {
	s := newE2EServer(t, nil)
	u, _ := url.Parse(s.URL)
	const room, writes = "slow", 1200
	text := strings.Repeat("x", 3000)

	fast := watch(t, s.URL+"/api/rooms/"+room+"/events", "")
	fast.WaitN(t, 1)

	// The slow client: a raw connection with a small receive buffer that
	// sends its request and then reads nothing.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /api/rooms/%s/events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", room, u.Host)
	// It reads its response head and snapshot before any write, so both
	// clients start from the same position; then it stops reading.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the slow client's response head: %v", err)
		}
		if line == "\r\n" {
			break
		}
	}
	body := newChunkedReader(br)
	var snapshot sseclient.Event
	for snapshot.Name != "snapshot" {
		line, err := body.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the slow client's snapshot: %v", err)
		}
		switch {
		case strings.HasPrefix(line, "id: "):
			snapshot.ID = strings.TrimSpace(line[4:])
		case strings.HasPrefix(line, "event: "):
			snapshot.Name = strings.TrimSpace(line[7:])
		}
	}
	if _, err := body.ReadString('\n'); err != nil { // the data line
		t.Fatal(err)
	}
	if _, err := body.ReadString('\n'); err != nil { // the blank line
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for g := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < writes; i += 12 {
				if err := tryPost(s.URL, room, fmt.Sprintf("%d %s", i, text)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// The reader got every write, though the slow client read nothing.
	got := fast.WaitN(t, 1+writes)
	checkOrdered(t, got[1:])
	if len(got) != 1+writes {
		t.Fatalf("fast client got %d events, want %d", len(got), 1+writes)
	}

	// The slow client was cut off: what it has buffered ends in EOF.
	conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	slowEvents, err := readRawEvents(body)
	slowEvents = append([]sseclient.Event{snapshot}, slowEvents...)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the slow client was not disconnected (read %d events, then nothing for 60s)", len(slowEvents))
	}
	if len(slowEvents) < 1 || len(slowEvents) >= 1+writes {
		t.Fatalf("slow client read %d events before the end; want it cut off part way", len(slowEvents))
	}
	t.Logf("slow client was disconnected after %d of %d events (%v)", len(slowEvents), 1+writes, err)

	// It comes back with its last id and catches up exactly.
	last := slowEvents[len(slowEvents)-1]
	back := watch(t, s.URL+"/api/rooms/"+room+"/events", last.ID)
	rest := back.WaitN(t, 1+writes-len(slowEvents))
	all := append(append([]sseclient.Event{}, slowEvents...), rest...)
	if len(all) != 1+writes {
		t.Fatalf("slow client has %d events after catching up, want %d", len(all), 1+writes)
	}
	for i := range all {
		if all[i].ID != got[i].ID || all[i].Name != got[i].Name {
			t.Fatalf("event %d: slow client has %s %s, fast client %s %s", i, all[i].Name, all[i].ID, got[i].Name, got[i].ID)
		}
	}
}
