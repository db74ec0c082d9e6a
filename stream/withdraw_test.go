package stream

import (
	"context"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"changecast/protocol"
)

// refusedEvent is what the tests' Recheck answers for a topic withdrawn.
func refusedEvent(topic string) Event {
	return Event{Topic: topic, Name: protocol.EventRefused, Data: []byte(`{"topic":"` + topic + `","status":403,"error":"gone"}`)}
}

// TestRecheckWithdrawsTopics, on a fake clock: a stream's Recheck runs
// every RecheckEvery with the topics still carried; a topic it refuses
// gets its `refused` event, no more of its events, and its user leaves
// its presence, while the other topic streams on; when the last topic is
// refused the stream ends, with EndWithdrawn.
func TestRecheckWithdrawsTopics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		var ended atomic.Value
		m := started(t, src, Config{Presence: roomsPresence, OnStreamEnd: func(se StreamEnd) { ended.Store(se.Reason) }})
		defer m.Close()
		synctest.Wait()

		var mu sync.Mutex
		refuse := map[string]bool{}
		var asked [][]string
		recheck := func(_ context.Context, topics []string) []Event {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, topics)
			var out []Event
			for _, t := range topics {
				if refuse[t] {
					out = append(out, refusedEvent(t))
				}
			}
			return out
		}
		w := newRecorder()
		r := httptest.NewRequest("GET", "/", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Serve(w, r, StreamOptions{Topics: []string{"rooms/a", "rooms/b"}, User: "ann", Recheck: recheck, RecheckEvery: 10 * time.Second})
		}()
		synctest.Wait()
		src.add("rooms/a", "a-before")
		synctest.Wait()

		mu.Lock()
		refuse["rooms/a"] = true
		mu.Unlock()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		src.add("rooms/a", "a-after")
		src.add("rooms/b", "b-after")
		time.Sleep(PresenceGrace)
		synctest.Wait()
		got := w.text()
		refusedA := "event: refused\ndata: " + string(refusedEvent("rooms/a").Data) + "\n\n"
		if !strings.Contains(got, "a-before") || !strings.Contains(got, refusedA) || !strings.Contains(got, "b-after") || strings.Contains(got, "a-after") {
			t.Fatalf("stream %q: want a-before, then rooms/a refused, b-after and not a-after", got)
		}
		if strings.Index(got, refusedA) < strings.Index(got, "a-before") {
			t.Fatalf("stream %q: the refusal comes before what was sent earlier", got)
		}
		if us := m.Presence("rooms/a"); len(us) != 0 {
			t.Fatalf("presence on rooms/a after withdrawal and grace: %v, want nobody", us)
		}
		if us := m.Presence("rooms/b"); len(us) != 1 || us[0].User != "ann" {
			t.Fatalf("presence on rooms/b: %v, want ann", us)
		}
		select {
		case <-done:
			t.Fatal("stream ended with a topic left")
		default:
		}

		mu.Lock()
		refuse["rooms/b"] = true
		mu.Unlock()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("stream still open with every topic withdrawn")
		}
		if !strings.HasSuffix(w.text(), "event: refused\ndata: "+string(refusedEvent("rooms/b").Data)+"\n\n") {
			t.Fatalf("stream %q does not end with rooms/b refused", w.text())
		}
		if r := ended.Load(); r != EndWithdrawn {
			t.Fatalf("end reason %v, want %v", r, EndWithdrawn)
		}
		mu.Lock()
		defer mu.Unlock()
		if n := len(asked); n < 2 || !slices.Equal(asked[0], []string{"rooms/a", "rooms/b"}) || !slices.Equal(asked[n-1], []string{"rooms/b"}) {
			t.Fatalf("Recheck asked about %q; want both topics first, rooms/b alone last", asked)
		}
	})
}

// gatedWriter holds each Write while gated until the test lets it go.
type gatedWriter struct {
	*recorder
	gated   atomic.Bool
	held    chan struct{} // a Write is held
	release chan struct{}
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	if g.gated.Load() {
		g.held <- struct{}{}
		<-g.release
	}
	return g.recorder.Write(p)
}

// TestRecheckSkipsQueuedFramesOfWithdrawnTopic: events of a topic queued
// before it was withdrawn, but not yet written (the client was slow),
// are not written after its `refused` event.
func TestRecheckSkipsQueuedFramesOfWithdrawnTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		m := started(t, src, Config{})
		defer m.Close()
		synctest.Wait()

		var refuse atomic.Bool
		recheck := func(_ context.Context, topics []string) []Event {
			if refuse.Load() && slices.Contains(topics, "rooms/a") {
				return []Event{refusedEvent("rooms/a")}
			}
			return nil
		}
		w := &gatedWriter{recorder: newRecorder(), held: make(chan struct{}), release: make(chan struct{})}
		r := httptest.NewRequest("GET", "/", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Serve(w, r, StreamOptions{Topics: []string{"rooms/a", "rooms/b"}, Recheck: recheck, RecheckEvery: 10 * time.Second})
		}()
		synctest.Wait()

		w.gated.Store(true)
		src.add("rooms/b", "b-held")
		<-w.held // the stream is writing b-held
		src.add("rooms/a", "a-queued")
		synctest.Wait()
		refuse.Store(true)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		w.gated.Store(false)
		close(w.release)
		src.add("rooms/b", "b-after")
		synctest.Wait()

		got := w.text()
		if !strings.Contains(got, "b-held") || !strings.Contains(got, "event: refused") || !strings.Contains(got, "b-after") || strings.Contains(got, "a-queued") {
			t.Fatalf("stream %q: want b-held, rooms/a refused, b-after, and not a-queued", got)
		}
	})
}

// TestRecheckStopsWhenNoRecheckTopicLeft, on a fake clock: Recheck is
// asked only about RecheckTopics, and once the last of them is
// withdrawn it is asked no more, while the stream's other topic streams
// on.
func TestRecheckStopsWhenNoRecheckTopicLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		m := started(t, src, Config{})
		defer m.Close()
		synctest.Wait()

		var mu sync.Mutex
		var asked [][]string
		recheck := func(_ context.Context, topics []string) []Event {
			mu.Lock()
			defer mu.Unlock()
			asked = append(asked, topics)
			if slices.Contains(topics, "rooms/a") {
				return []Event{refusedEvent("rooms/a")}
			}
			return nil
		}
		w := newRecorder()
		r := httptest.NewRequest("GET", "/", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Serve(w, r, StreamOptions{Topics: []string{"rooms/a", "rooms/b"}, Recheck: recheck, RecheckEvery: 10 * time.Second,
				RecheckTopics: []string{"rooms/a", "rooms/c"}})
		}()
		synctest.Wait()
		time.Sleep(10 * time.Minute) // sixty intervals
		synctest.Wait()
		src.add("rooms/b", "b-after")
		synctest.Wait()
		if got := w.text(); !strings.Contains(got, "event: refused") || !strings.Contains(got, "b-after") {
			t.Fatalf("stream %q: want rooms/a refused and b-after", got)
		}
		select {
		case <-done:
			t.Fatal("stream ended with rooms/b left")
		default:
		}
		mu.Lock()
		defer mu.Unlock()
		if len(asked) != 1 || !slices.Equal(asked[0], []string{"rooms/a"}) {
			t.Fatalf("Recheck asked about %q; want [rooms/a] once", asked)
		}
	})
}
