package stream

import (
	"changecast/protocol"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
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
		if ev.ID > after && len(evs) > 0 && ev.ID <= evs[len(evs)-1].ID && onTopics(ev, topics) {
			want = append(want, ev)
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
		if snap.Name != protocol.EventSnapshot {
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
			waitFor(t, "feed to catch up", func() bool { h, _ := src.Head(context.Background()); return m.Stats().Ready && m.lastPos() == h })
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
			st := m.Stats()
			if did := st.CatchUps > 0; did != tc.catchUps || st.CatchUpsRunning != 0 {
				t.Errorf("stats count %d catch-ups, %d running; want some: %v, none running", st.CatchUps, st.CatchUpsRunning, tc.catchUps)
			}
			// Counted once written, which may be just after the client read it.
			read := uint64(len(tc.topics) + 1 + len(got))
			waitFor(t, fmt.Sprintf("%d events counted as delivered", read), func() bool { return m.Stats().Delivered >= read })
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
	waitFor(t, "the subscriber", func() bool { return m.Stats().Subscribers == 1 })
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
	src.forgotten[fakePos(9)] = true
	for _, tc := range []struct {
		id     string
		reason protocol.ResetReason
	}{
		{"garbage", protocol.ResetInvalidID},
		{fakePos(9), protocol.ResetInvalidID}, // well-formed, but the log cannot resume it
		{fakePos(99), protocol.ResetInvalidID},
		{"00000000000000zz", protocol.ResetInvalidID},
		{fakePos(3), protocol.ResetHistoryLost},
	} {
		t.Run(tc.id, func(t *testing.T) {
			c := dial(t, topicsURL(srv.URL, "rooms/a", "rooms/b"), tc.id)
			evs := c.nextN(t, 4)
			for i, topic := range []string{"rooms/a", "rooms/b"} {
				var r struct {
					Topic  string
					Reason protocol.ResetReason
				}
				json.Unmarshal([]byte(evs[i].Data), &r)
				if evs[i].Name != protocol.EventReset || r.Reason != tc.reason || r.Topic != topic {
					t.Fatalf("event %d = %q; want reset of %s with reason %s", i, evs[i], topic, tc.reason)
				}
				if evs[2+i].Name != protocol.EventSnapshot {
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

// TestSlowSubscriberDropped: a client that stops reading is dropped and
// does not hold up a client that reads; what it got ends cleanly, and
// reconnecting with its last id it gets the rest exactly once.
func TestSlowSubscriberDropped(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{QueueSize: 8, TopicBuffer: 16})
	srv := smallBufferServer(t, m)
	u := topicsURL(srv.URL, "rooms/a")
	fast := dial(t, u, "")
	snap := fast.next(t)
	slow := rawStream(t, srv, "topic=rooms%2Fa")
	waitFor(t, "two subscribers", func() bool { return m.Stats().Subscribers == 2 })

	// Events go one at a time in lockstep with the fast client, so only a
	// client that stops reading can fall behind: a few dozen events fill
	// the slow one's socket buffers and then its queue.
	payload := strings.Repeat("p", 1<<10)
	var got []parsedEvent
	for i := 0; m.Stats().DroppedSlow == 0; i++ {
		if i == 100000 {
			t.Fatal("the client that does not read was never dropped")
		}
		src.add("rooms/a", fmt.Sprint(i, payload))
		got = append(got, fast.next(t))
	}
	for i := range 20 {
		src.add("rooms/a", fmt.Sprint("after the drop ", i))
		got = append(got, fast.next(t))
	}
	checkSequence(t, src, []string{"rooms/a"}, snap.ID, got)
	if d := m.Stats().DroppedSlow; d != 1 {
		t.Fatalf("%d subscribers dropped, want 1 (the fast one kept up)", d)
	}

	// The slow client now reads what the server had written for it.
	// The response ends cleanly with the last chunk; the connection itself
	// is kept alive.
	slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	var raw []byte
	buf := make([]byte, 32<<10)
	for !strings.HasSuffix(string(raw), "\r\n0\r\n\r\n") {
		n, err := slow.Read(buf)
		raw = append(raw, buf[:n]...)
		if err != nil {
			t.Fatalf("the dropped stream did not end cleanly: %v after %d bytes ending %q", err, len(raw), raw[max(0, len(raw)-40):])
		}
	}
	body := string(raw)
	body = body[strings.Index(body, "\r\n\r\n")+4:]
	evs := parseAll(dechunk(body))
	if len(evs) < 2 || evs[0].Name != protocol.EventSnapshot || len(evs) >= len(got) {
		t.Fatalf("slow client got %d events before being dropped; want a snapshot and some, not all %d", len(evs), len(got))
	}
	checkSequence(t, src, []string{"rooms/a"}, evs[0].ID, evs[1:])
	last := evs[len(evs)-1].ID
	rest := dial(t, u, last).nextN(t, len(got)+1-len(evs))
	checkSequence(t, src, []string{"rooms/a"}, last, rest)
	if rest[len(rest)-1].ID != got[len(got)-1].ID {
		t.Fatalf("slow client ends at %s, want %s", rest[len(rest)-1].ID, got[len(got)-1].ID)
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
	// Close waits for every Serve to return.
	if st := m.Stats(); st.OpenStreams != 0 || st.Subscribers != 0 {
		t.Fatalf("after Close: %d streams open, %d subscribers; want 0", st.OpenStreams, st.Subscribers)
	}
	for _, c := range conns {
		c.ended(t)
	}
	if m.Ready() {
		t.Error("Ready after Close")
	}
	// A stream opened after Close ends at once.
	dial(t, topicsURL(srv.URL, "rooms/x"), "").ended(t)
}

// TestCloseCutsStuckWrite: Close does not wait out the write timeout of a
// stream whose client stopped reading.
func TestCloseCutsStuckWrite(t *testing.T) {
	src := newFakeSource()
	m := New(src, Config{QueueSize: 1 << 10})
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	srv := smallBufferServer(t, m)
	rawStream(t, srv, "topic=rooms%2Fa")
	waitFor(t, "the subscriber", func() bool { return m.Stats().Subscribers == 1 })
	// Far more than the socket buffers hold: Serve blocks in a write.
	payload := strings.Repeat("p", 16<<10)
	for i := range 200 {
		src.add("rooms/a", fmt.Sprint(i, payload))
	}
	waitFor(t, "the feed", func() bool { h, _ := src.Head(context.Background()); return m.lastPos() == h })
	start := time.Now()
	m.Close()
	// Waiting out the blocked write would take most of writeTimeout; a
	// cut-short write takes milliseconds. A third is a wide margin.
	if d := time.Since(start); d >= writeTimeout/3 {
		t.Fatalf("Close took %v: it waited for the blocked write (timeout %v)", d, writeTimeout)
	}
	if n := m.Stats().OpenStreams; n != 0 {
		t.Fatalf("%d streams open after Close", n)
	}
}

// TestFeedReconnects: when the feed fails, it is reopened from where it
// was; open streams stay open and miss nothing.
func TestFeedReconnects(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{})
	srv := testServer(t, m)
	c := dial(t, topicsURL(srv.URL, "rooms/a", "rooms/b"), "")
	c.nextN(t, 2) // snapshots
	after := m.lastPos()
	var got []parsedEvent
	for round := range 3 {
		for i := range 5 {
			src.add("rooms/a", fmt.Sprint(round, " a ", i))
			src.add("rooms/b", fmt.Sprint(round, " b ", i))
		}
		got = append(got, c.nextN(t, 10)...)
		follows := src.followCount()
		src.breakFeed(errors.New("connection reset by peer"))
		// Written while the feed is down or reopening.
		src.add("rooms/a", fmt.Sprint(round, " while down"))
		got = append(got, c.next(t))
		if n := src.followCount(); n <= follows {
			t.Fatalf("feed opened %d times, want more than %d", n, follows)
		}
	}
	checkSequence(t, src, []string{"rooms/a", "rooms/b"}, after, got)
	if st := m.Stats(); st.OpenStreams != 1 || !st.Ready {
		t.Fatalf("after the feed reconnected: %+v; want the stream still open and the feed ready", st)
	}
}

// TestFeedLosesHistory: when the shared feed itself cannot resume, it
// restarts from the head and every stream is ended; each client, resuming
// with its last id, is reset, gets snapshots, then live events.
func TestFeedLosesHistory(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{TopicBuffer: 4})
	srv := testServer(t, m)
	groups := [][]string{{"rooms/a"}, {"rooms/a", "orders/1"}, {"orders/1"}}
	var conns []*sseConn
	for _, topics := range groups {
		c := dial(t, topicsURL(srv.URL, topics...), "")
		c.nextN(t, len(topics))
		conns = append(conns, c)
	}
	src.add("rooms/a", "one")
	src.add("orders/1", "two")
	var lasts []string
	for i, c := range conns {
		evs := c.nextN(t, len(groups[i]))
		lasts = append(lasts, evs[len(evs)-1].ID)
	}
	// The feed falls out of the log's window while held back.
	release := src.hold()
	for range 5 {
		src.add("rooms/a", "lost")
	}
	src.prune(len(src.log))
	release()
	for _, c := range conns {
		if evs := c.ended(t); len(evs) != 0 {
			t.Fatalf("events %q after the feed lost history, want the stream to end", evs)
		}
	}
	waitFor(t, "feed ready again", m.Ready)
	for i, topics := range groups {
		r := dial(t, topicsURL(srv.URL, topics...), lasts[i])
		evs := r.nextN(t, 2*len(topics))
		for j, topic := range topics {
			// A reset carries no id: the client keeps its last one.
			if ev := evs[j]; ev.Name != protocol.EventReset || ev.ID != "" || !strings.Contains(ev.Data, `"reason":"`+string(protocol.ResetHistoryLost)+`"`) || !strings.Contains(ev.Data, topic) {
				t.Fatalf("%v: event %d = %q; want reset history-lost for %s", topics, j, ev, topic)
			}
			if ev := evs[len(topics)+j]; ev.Name != protocol.EventSnapshot || !strings.Contains(ev.Data, topic) {
				t.Fatalf("%v: event %d = %q; want snapshot of %s", topics, len(topics)+j, ev, topic)
			}
		}
		live := src.add(topics[0], "live")
		if ev := r.next(t); ev.ID != live.ID {
			t.Fatalf("%v: got %q, want live event %s", topics, ev, live.ID)
		}
	}
}

// TestRepeatedTopicsCountOnce: a topic named twice delivers each event
// once, live and replayed.
func TestRepeatedTopicsCountOnce(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{})
	srv := testServer(t, m)
	u := topicsURL(srv.URL, "rooms/a", "rooms/a")
	c := dial(t, u, "")
	snap := c.next(t)
	for i := range 5 {
		src.add("rooms/a", fmt.Sprint(i))
	}
	live := c.nextN(t, 5)
	c.close()
	checkSequence(t, src, []string{"rooms/a"}, snap.ID, live)
	r := dial(t, u, snap.ID)
	replayed := r.nextN(t, 5)
	end := src.add("rooms/a", "end")
	if ev := r.next(t); ev.ID != end.ID {
		t.Fatalf("after the replay got %q, want %s", ev, end.ID)
	}
	checkSequence(t, src, []string{"rooms/a"}, snap.ID, replayed)
}

// TestApplySkipsRepeats: an event at or before the feed's position, or
// without position or topic, never reaches a subscriber or a buffer; the
// stats follow the feed.
func TestApplySkipsRepeats(t *testing.T) {
	m := New(newFakeSource(), Config{})
	m.last = fakePos(5)
	s, _ := m.subscribe([]string{"rooms/a"})
	defer m.unsubscribe(s)
	at := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	ev := func(seq int, topic string) Event {
		return Event{ID: fakePos(seq), Topic: topic, Name: "message", Data: []byte("{}"), Time: at.Add(time.Duration(seq) * time.Second)}
	}
	m.apply(Batch{Events: []Event{ev(3, "rooms/a"), ev(6, "rooms/a"), ev(6, "rooms/a"), ev(5, "rooms/a"), {Topic: "rooms/a", Data: []byte("{}")}, ev(7, "")}, Checkpoint: fakePos(7)})
	m.apply(Batch{Events: []Event{ev(7, "rooms/a"), ev(8, "rooms/a")}, Checkpoint: fakePos(8)})
	var got []string
	frames, _ := s.take(nil)
	for _, f := range frames {
		got = append(got, f.id)
	}
	if want := []string{fakePos(6), fakePos(8)}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	frames, ok := m.replay([]string{"rooms/a"}, fakePos(5), fakePos(8))
	if !ok || len(frames) != 2 {
		t.Fatalf("buffered %d frames (complete %v), want 2", len(frames), ok)
	}
	st := m.Stats()
	if want := at.Add(8 * time.Second); !st.LastEventTime.Equal(want) || st.Topics != 1 || st.Subscribers != 1 {
		t.Fatalf("stats %+v; want last event at %v, 1 topic, 1 room subscriber", st, want)
	}
}

// TestBufferBudget: the events all topics keep stay within BufferBytes,
// the oldest of the least recently written topic going first, and a
// client resuming from before what memory holds is caught up from the
// Source with nothing lost or doubled.
func TestBufferBudget(t *testing.T) {
	src := newFakeSource()
	const budget = 2000
	m := startMux(t, src, Config{BufferBytes: budget, TopicBuffer: 1000})
	srv := testServer(t, m)
	var first []Event
	for i := range 40 {
		first = append(first, src.add(fmt.Sprint("rooms/r", i%4), fmt.Sprint("event ", i)))
	}
	waitFor(t, "feed", func() bool { return m.lastPos() == first[len(first)-1].ID })
	m.mu.Lock()
	held, frames := m.bufBytes, 0
	sum := 0
	for _, r := range m.rings {
		frames += len(r.frames)
		for _, f := range r.frames {
			sum += len(f.wire)
		}
	}
	m.mu.Unlock()
	if held > budget || held != sum || frames == 0 || frames == 40 {
		t.Fatalf("memory holds %d frames of %d bytes (counted %d); want some but not all, within %d", frames, sum, held, budget)
	}
	for _, after := range []Event{first[0], first[20], first[37]} {
		before := src.catchUpCount()
		c := dial(t, topicsURL(srv.URL, "rooms/r1"), after.ID)
		n := 0
		for _, ev := range first {
			if ev.Topic == "rooms/r1" && ev.ID > after.ID {
				n++
			}
		}
		got := c.nextN(t, n)
		checkSequence(t, src, []string{"rooms/r1"}, after.ID, got)
		live := src.add("rooms/r1", "live")
		if ev := c.next(t); ev.ID != live.ID {
			t.Fatalf("after the catch-up got %q, want the live event", ev)
		}
		first = append(first, live)
		// Memory cannot hold all 40 events: the oldest came from the
		// Source. The newest events of the most recently written topic
		// are the last to go: resuming among them reads only memory.
		switch fromSource := src.catchUpCount() > before; {
		case after.ID == first[0].ID && !fromSource:
			t.Fatalf("resume after %s: %d events, all from memory; want a catch-up from the source (memory holds %d of 40 events)", after.ID, n, frames)
		case after.ID == first[37].ID && fromSource:
			t.Fatalf("resume after %s: %d events read from the source; want them from memory (the newest events, well within %d bytes)", after.ID, n, budget)
		}
	}
}
