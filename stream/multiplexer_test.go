package stream

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func textOf(tb testing.TB, ev parsedEvent) string {
	tb.Helper()
	var p struct {
		Text  string `json:"text"`
		Count int    `json:"count"`
	}
	if err := json.Unmarshal([]byte(ev.Data), &p); err != nil {
		tb.Fatalf("event %q: %v", ev, err)
	}
	return p.Text
}

// checkSequence fails unless evs are exactly the events of src on topics
// with positions in (after, last of evs], in order.
func checkSequence(tb testing.TB, src *fakeSource, topics []string, after string, evs []parsedEvent) {
	tb.Helper()
	src.mu.Lock()
	var want []Event
	for _, ev := range src.log {
		if ev.ID > after && len(evs) > 0 && ev.ID <= evs[len(evs)-1].ID {
			for _, t := range topics {
				if ev.Topic == t {
					want = append(want, ev)
				}
			}
		}
	}
	src.mu.Unlock()
	if len(want) != len(evs) {
		tb.Fatalf("got %d events after %s, want %d", len(evs), after, len(want))
	}
	for i := range want {
		if evs[i].ID != want[i].ID || evs[i].Data != string(want[i].Data) {
			tb.Fatalf("event %d = %s %s; want %s %s", i, evs[i].ID, evs[i].Data, want[i].ID, want[i].Data)
		}
	}
}

func TestSnapshotThenLiveUnderConcurrentWrites(t *testing.T) {
	src := newFakeSource()
	for i := range 50 {
		src.add("rooms/a", fmt.Sprint("before ", i))
	}
	// The writer is not paced, so the queue is big enough for a reader
	// that keeps up with a busy topic.
	m := startMux(t, src, Config{QueueSize: 1 << 16})
	srv := testServer(t, m)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			src.add("rooms/a", fmt.Sprint("during ", i))
			src.add("rooms/b", "other topic")
			if i%10 == 0 {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	var conns []*sseConn
	for range 20 {
		conns = append(conns, dial(t, topicsURL(srv.URL, "rooms/a"), ""))
	}
	// Each client: its snapshot counts the events up to its id, and the
	// live events continue exactly from there.
	for _, c := range conns {
		snap := c.next(t)
		var s struct{ Count int }
		json.Unmarshal([]byte(snap.Data), &s)
		if snap.Name != "snapshot" {
			t.Fatalf("first event %q, want snapshot", snap)
		}
		live := c.nextN(t, 30)
		checkSequence(t, src, []string{"rooms/a"}, snap.ID, live)
		seq, _ := fakeSeq(snap.ID)
		src.mu.Lock()
		n := 0
		for _, ev := range src.log[:seq] {
			if ev.Topic == "rooms/a" {
				n++
			}
		}
		src.mu.Unlock()
		if s.Count != n {
			t.Fatalf("snapshot at %s counts %d events, log has %d there", snap.ID, s.Count, n)
		}
	}
	close(stop)
	wg.Wait()
}

func TestResume(t *testing.T) {
	for _, tc := range []struct {
		name     string
		buffer   int
		topics   []string
		byQuery  bool
		catchUps bool // want a catch-up from the source
	}{
		{"from memory", 1000, []string{"rooms/a"}, false, false},
		{"from memory by query", 1000, []string{"rooms/a"}, true, false},
		{"older than memory", 4, []string{"rooms/a"}, false, true},
		{"multi-topic from memory", 1000, []string{"rooms/a", "orders/1"}, false, false},
		{"multi-topic older than memory", 4, []string{"rooms/a", "orders/1"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFakeSource()
			m := startMux(t, src, Config{TopicBuffer: tc.buffer})
			srv := testServer(t, m)
			u := topicsURL(srv.URL, tc.topics...)
			first := dial(t, u, "")
			first.next(t) // snapshots
			if len(tc.topics) > 1 {
				first.next(t)
			}
			src.add("rooms/a", "seen")
			seen := first.next(t)
			first.close()

			for i := range 20 {
				src.add("rooms/a", fmt.Sprint("missed ", i))
				src.add("rooms/z", "not watched")
				if i%3 == 0 {
					src.add("orders/1", fmt.Sprint("order ", i))
				}
			}
			waitFor(t, "feed to catch up", func() bool { h, _ := src.Head(nil); return m.Stats().Ready && m.lastPos() == h })
			before := src.catchUpCount()
			var c *sseConn
			if tc.byQuery {
				c = dial(t, u+"&lastEventId="+url.QueryEscape(seen.ID), "")
			} else {
				c = dial(t, u, seen.ID)
			}
			want := 20
			if len(tc.topics) > 1 {
				want += 7
			}
			got := c.nextN(t, want)
			src.add("rooms/a", "live")
			got = append(got, c.next(t))
			checkSequence(t, src, tc.topics, seen.ID, got)
			if did := src.catchUpCount() > before; did != tc.catchUps {
				t.Errorf("caught up from the source: %v, want %v", did, tc.catchUps)
			}
		})
	}
}

func (m *Multiplexer) lastPos() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// TestResumeAheadOfFeed: an id newer than this process's feed (the client
// came from a process further ahead) skips what it has.
func TestResumeAheadOfFeed(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{})
	srv := testServer(t, m)
	for range 5 {
		src.add("rooms/a", "x")
	}
	waitFor(t, "feed", func() bool { return m.lastPos() == fakePos(5) })
	// Hold the feed back: the client claims position 7 while the feed
	// has seen only 5.
	release := src.hold()
	src.add("rooms/a", "six")
	ev7 := src.add("rooms/a", "seven")
	c := dial(t, topicsURL(srv.URL, "rooms/a"), ev7.ID)
	waitFor(t, "the subscriber", func() bool { return m.Stats().RoomSubscribers == 1 })
	if got := m.lastPos(); got != fakePos(5) {
		t.Fatalf("feed at %s, want %s while held", got, fakePos(5))
	}
	release()
	src.add("rooms/a", "eight")
	if ev := c.next(t); textOf(t, ev) != "eight" {
		t.Fatalf("after %s got %q; want only what came after it", ev7.ID, ev)
	}
}

func TestResetThenSnapshot(t *testing.T) {
	src := newFakeSource()
	for range 10 {
		src.add("rooms/a", "old")
	}
	m := startMux(t, src, Config{})
	srv := testServer(t, m)
	src.prune(8)
	for _, tc := range []struct{ id, reason string }{
		{"garbage", "invalid-id"},
		{fakePos(99), "invalid-id"},
		{"00000000000000zz", "invalid-id"},
		{fakePos(3), "history-lost"},
	} {
		t.Run(tc.id, func(t *testing.T) {
			c := dial(t, topicsURL(srv.URL, "rooms/a", "rooms/b"), tc.id)
			evs := c.nextN(t, 4)
			for i, topic := range []string{"rooms/a", "rooms/b"} {
				var r struct{ Topic, Reason string }
				json.Unmarshal([]byte(evs[i].Data), &r)
				if evs[i].Name != "reset" || r.Reason != tc.reason || r.Topic != topic {
					t.Fatalf("event %d = %q; want reset of %s with reason %s", i, evs[i], topic, tc.reason)
				}
				if evs[2+i].Name != "snapshot" {
					t.Fatalf("event %d = %q; want snapshot", 2+i, evs[2+i])
				}
			}
			live := src.add("rooms/b", "live")
			if ev := c.next(t); ev.ID != live.ID {
				t.Fatalf("after reset and snapshot got %q, want the live event %s", ev, live.ID)
			}
		})
	}
}

// TestSlowSubscriberDropped: a client that never reads is dropped and
// does not hold up a client that reads; reconnecting with its last id it
// gets the rest exactly once.
func TestSlowSubscriberDropped(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{QueueSize: 8, TopicBuffer: 16})
	srv := testServer(t, m)
	u := topicsURL(srv.URL, "rooms/a")
	fast := dial(t, u, "")
	snap := fast.next(t)

	// The slow client: a raw connection that sends its request, reads the
	// head and then nothing.
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /?topic=rooms%%2Fa HTTP/1.1\r\nHost: x\r\n\r\n")
	waitFor(t, "two subscribers", func() bool { return m.Stats().RoomSubscribers == 2 })

	// Events go one at a time in lockstep with the fast client, so only a
	// client that stops reading can fall behind.
	payload := strings.Repeat("p", 16<<10)
	const n = 2000
	var got []parsedEvent
	for i := range n {
		src.add("rooms/a", fmt.Sprint(i, payload))
		got = append(got, fast.next(t))
	}
	checkSequence(t, src, []string{"rooms/a"}, snap.ID, got)
	waitFor(t, "the slow subscriber to be dropped", func() bool { return m.Stats().DroppedSlow == 1 })

	// What the slow client did get ends cleanly; it resumes from there.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(conn)
	var raw strings.Builder
	for {
		l, err := br.ReadString('\n')
		raw.WriteString(l)
		if err != nil {
			break
		}
	}
	body := raw.String()
	if i := strings.Index(body, "\r\n\r\n"); i >= 0 {
		body = body[i+4:]
	}
	evs := parseAll(dechunk(body))
	if len(evs) == 0 || len(evs) > n {
		t.Fatalf("slow client parsed %d events before its end", len(evs))
	}
	last := evs[len(evs)-1].ID
	rest := dial(t, u, last).nextN(t, n+1-len(evs))
	checkSequence(t, src, []string{"rooms/a"}, last, rest)
	if rest[len(rest)-1].ID != got[n-1].ID {
		t.Fatalf("slow client ends at %s, want %s", rest[len(rest)-1].ID, got[n-1].ID)
	}
}

// dechunk undoes HTTP/1.1 chunked encoding, tolerating a cut-off end.
func dechunk(s string) string {
	var out strings.Builder
	for {
		i := strings.Index(s, "\r\n")
		if i < 0 {
			return out.String()
		}
		var size int
		if _, err := fmt.Sscanf(s[:i], "%x", &size); err != nil || size == 0 {
			return out.String()
		}
		s = s[i+2:]
		if size > len(s) {
			out.WriteString(s)
			return out.String()
		}
		out.WriteString(s[:size])
		s = strings.TrimPrefix(s[size:], "\r\n")
	}
}

func TestCloseEndsManyStreams(t *testing.T) {
	src := newFakeSource()
	m := New(src, Config{})
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	srv := testServer(t, m)
	var conns []*sseConn
	for i := range 100 {
		conns = append(conns, dial(t, topicsURL(srv.URL, fmt.Sprint("rooms/r", i%7)), ""))
	}
	for _, c := range conns {
		c.next(t)
	}
	waitFor(t, "100 open streams", func() bool { return m.Stats().OpenStreams == 100 })
	m.Close()
	for _, c := range conns {
		c.ended(t)
	}
	waitFor(t, "every Serve to return", func() bool { return m.Stats().OpenStreams == 0 })
	if m.Ready() {
		t.Error("Ready after Close")
	}
	// A stream opened after Close ends at once.
	dial(t, topicsURL(srv.URL, "rooms/x"), "").ended(t)
}

// TestFeedLosesHistory: when the shared feed itself cannot resume, it
// restarts from the head and every stream is ended so its client resets.
func TestFeedLosesHistory(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{TopicBuffer: 4})
	srv := testServer(t, m)
	c := dial(t, topicsURL(srv.URL, "rooms/a"), "")
	c.next(t)
	ev := src.add("rooms/a", "one")
	c.next(t)
	// Make the feed fail with history lost: prune past where it is.
	m.mu.Lock()
	for range 5 {
		src.add("rooms/a", "lost")
	}
	src.prune(len(src.log))
	m.mu.Unlock()
	c.ended(t)
	waitFor(t, "feed ready again", m.Ready)
	r := dial(t, topicsURL(srv.URL, "rooms/a"), ev.ID)
	first := r.next(t)
	if first.Name != "reset" || !strings.Contains(first.Data, "history-lost") {
		t.Fatalf("reconnect after the feed lost history: %q, want reset history-lost", first)
	}
}
