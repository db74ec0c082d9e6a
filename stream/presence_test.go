package stream

import (
	"changecast/protocol"
	"context"
	"encoding/json"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// roomsPresence is the Config.Presence of these tests: rooms/ topics.
func roomsPresence(topic string) bool { return strings.HasPrefix(topic, "rooms/") }

// presStream is one stream served into a recorder, ended by stop.
type presStream struct {
	w    *recorder
	stop context.CancelFunc
	done chan struct{}
}

// openAs serves a stream of topics for user (after last, if set) on its
// own goroutine.
func openAs(m *Multiplexer, user, last string, topics ...string) *presStream {
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequestWithContext(ctx, "GET", "/", nil)
	ps := &presStream{w: newRecorder(), stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(ps.done)
		m.Serve(ps.w, r, StreamOptions{Topics: topics, User: user, LastEventID: last})
	}()
	return ps
}

// close ends the stream and waits for Serve to return.
func (ps *presStream) close() { ps.stop(); <-ps.done }

// presenceData is the data of a presence event.
type presenceData = protocol.Payload

// presences returns the stream's presence events so far, failing on one
// with an id or a malformed one.
func (ps *presStream) presences(t *testing.T) []presenceData {
	t.Helper()
	var out []presenceData
	text := ps.w.text()
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if l == "event: presence" && i > 0 && strings.HasPrefix(lines[i-1], "id:") {
			t.Fatalf("presence event with an id line %q", lines[i-1])
		}
	}
	for _, ev := range parseAll(text) {
		if ev.Name != protocol.EventPresence {
			continue
		}
		var d presenceData
		if err := json.Unmarshal([]byte(ev.Data), &d); err != nil {
			t.Fatalf("presence data %q: %v", ev.Data, err)
		}
		out = append(out, d)
	}
	return out
}

// ops renders presence events as "op user" (sync: "sync u1,u2").
func ops(ds []presenceData) []string {
	var out []string
	for _, d := range ds {
		if d.Op == "sync" {
			var us []string
			for _, u := range d.Users {
				us = append(us, u.User)
			}
			out = append(out, d.Topic+" sync "+strings.Join(us, ","))
			continue
		}
		out = append(out, d.Topic+" "+d.Op+" "+d.User)
	}
	return out
}

func wantOps(t *testing.T, what string, ps *presStream, want ...string) {
	t.Helper()
	if got := ops(ps.presences(t)); !slices.Equal(got, want) {
		t.Fatalf("%s: presence events %q, want %q", what, got, want)
	}
}

func users(ms []protocol.Member) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, m.User)
	}
	return out
}

// TestPresenceJoinAndLeaveAfterGrace: an anonymous watcher gets a sync
// after its snapshot, a join when alice opens a stream, and a leave only
// once her stream has been closed for the whole grace period.
func TestPresenceJoinAndLeaveAfterGrace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := started(t, newFakeSource(), Config{Presence: roomsPresence})
		defer m.Close()
		watcher := openAs(m, "", "", "rooms/a")
		synctest.Wait()
		evs := parseAll(watcher.w.text())
		if len(evs) != 2 || evs[0].Name != protocol.EventSnapshot || evs[1].Name != protocol.EventPresence {
			t.Fatalf("fresh stream's events %+v; want a snapshot, then presence sync", evs)
		}
		wantOps(t, "fresh", watcher, "rooms/a sync ")

		alice := openAs(m, "alice", "", "rooms/a")
		synctest.Wait()
		wantOps(t, "alice opened", watcher, "rooms/a sync ", "rooms/a join alice")
		wantOps(t, "alice's own stream", alice, "rooms/a sync alice")
		if got := users(m.Presence("rooms/a")); !slices.Equal(got, []string{"alice"}) {
			t.Fatalf("Presence = %q, want [alice] (the anonymous watcher is not listed)", got)
		}
		joined := time.Now()
		if ms := m.Presence("rooms/a"); !ms[0].Since.Equal(joined) {
			t.Fatalf("since %v, want %v", ms[0].Since, joined)
		}

		alice.close()
		time.Sleep(PresenceGrace - time.Nanosecond)
		synctest.Wait()
		wantOps(t, "within grace", watcher, "rooms/a sync ", "rooms/a join alice")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		wantOps(t, "after grace", watcher, "rooms/a sync ", "rooms/a join alice", "rooms/a leave alice")
		if got := users(m.Presence("rooms/a")); len(got) != 0 {
			t.Fatalf("Presence after leave = %q", got)
		}
		watcher.close()
	})
}

// TestPresenceSeveralTabsCountOnce: two streams of one user are one
// join; closing one is no leave; a reconnect within the grace is neither
// a leave nor a join; the leave follows the last stream's close.
func TestPresenceSeveralTabsCountOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := started(t, newFakeSource(), Config{Presence: roomsPresence})
		defer m.Close()
		watcher := openAs(m, "", "", "rooms/a")
		synctest.Wait()
		tab1 := openAs(m, "alice", "", "rooms/a")
		tab2 := openAs(m, "alice", "", "rooms/a", "rooms/b")
		synctest.Wait()
		wantOps(t, "two tabs", watcher, "rooms/a sync ", "rooms/a join alice")
		wantOps(t, "second tab", tab2, "rooms/a sync alice", "rooms/b sync alice")

		tab1.close()
		time.Sleep(3 * PresenceGrace)
		synctest.Wait()
		wantOps(t, "one tab left", watcher, "rooms/a sync ", "rooms/a join alice")

		tab2.close()
		time.Sleep(PresenceGrace / 2)
		tab3 := openAs(m, "alice", "", "rooms/a") // a reconnect
		time.Sleep(3 * PresenceGrace)
		synctest.Wait()
		wantOps(t, "reconnected within grace", watcher, "rooms/a sync ", "rooms/a join alice")

		tab3.close()
		time.Sleep(PresenceGrace)
		synctest.Wait()
		wantOps(t, "all closed", watcher, "rooms/a sync ", "rooms/a join alice", "rooms/a leave alice")
		if got := users(m.Presence("rooms/b")); len(got) != 0 {
			t.Fatalf("rooms/b after alice left: %q", got)
		}

		// The grace runs from the last close, not the first.
		tab4 := openAs(m, "bob", "", "rooms/a")
		tab5 := openAs(m, "bob", "", "rooms/a")
		synctest.Wait()
		tab4.close()
		time.Sleep(PresenceGrace / 2)
		tab5.close()
		time.Sleep(PresenceGrace - time.Nanosecond)
		synctest.Wait()
		wantOps(t, "grace from the last close", watcher, "rooms/a sync ", "rooms/a join alice", "rooms/a leave alice", "rooms/a join bob")
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		wantOps(t, "bob gone", watcher, "rooms/a sync ", "rooms/a join alice", "rooms/a leave alice", "rooms/a join bob", "rooms/a leave bob")
		watcher.close()
	})
}

// TestPresenceSyncAfterResumeWithoutID: a resumed stream gets its missed
// events, then the sync; presence events carry no id, so the client's
// position stays the last log event's; a topic that does not track
// presence gets none.
func TestPresenceSyncAfterResumeWithoutID(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		m := started(t, src, Config{Presence: roomsPresence})
		defer m.Close()
		synctest.Wait()
		alice := openAs(m, "alice", "", "rooms/a")
		synctest.Wait()
		first := src.add("rooms/a", "one")
		second := src.add("rooms/a", "two")
		synctest.Wait()

		bob := openAs(m, "bob", first.ID, "rooms/a", "orders/x")
		synctest.Wait()
		p, evs := parseStream(bob.w.text())
		var names []protocol.EventName
		for _, e := range evs {
			names = append(names, e.Name)
		}
		if len(evs) != 2 || evs[0].ID != second.ID || evs[1].Name != protocol.EventPresence {
			t.Fatalf("resumed stream's events %v; want the missed event, then presence", names)
		}
		wantOps(t, "resumed", bob, "rooms/a sync alice,bob")
		if p.lastID != second.ID {
			t.Fatalf("client's Last-Event-ID %q, want %q: presence must not move it", p.lastID, second.ID)
		}
		wantOps(t, "alice sees bob", alice, "rooms/a sync alice", "rooms/a join bob")
		third := src.add("rooms/a", "three")
		synctest.Wait()
		p, _ = parseStream(bob.w.text())
		if p.lastID != third.ID {
			t.Fatalf("Last-Event-ID %q after a live event, want %q", p.lastID, third.ID)
		}
		bob.close()
		alice.close()
	})
}

// TestPresenceNoRepeatOfQueuedJoin: a join queued for a stream before its
// sync is not written after the sync that holds it already.
func TestPresenceNoRepeatOfQueuedJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		m := started(t, src, Config{Presence: roomsPresence})
		defer m.Close()
		synctest.Wait()
		// Registered, its snapshot not yet sent: subscribe directly, as
		// Serve does before the snapshot.
		sub, _ := m.subscribeAs([]string{"rooms/a"}, "", nil)
		alice := openAs(m, "alice", "", "rooms/a")
		synctest.Wait()
		sw := newStreamWriter()
		syncs, synced := m.presence.sync([]string{"rooms/a"})
		s := &session{m: m, sw: sw, synced: synced}
		for _, data := range syncs {
			_ = sw.encode("", protocol.EventPresence, data)
		}
		frames, _ := sub.take(nil)
		for _, f := range frames {
			s.write(f)
		}
		text := ""
		for _, b := range sw.out {
			text += string(b)
		}
		if n := strings.Count(text, "event: presence"); n != 1 || !strings.Contains(text, `"op":"sync"`) {
			t.Fatalf("stream holds %q; want only the sync (the queued join is in it)", text)
		}
		m.unsubscribe(sub)
		alice.close()
	})
}

// TestPresenceRemote: users other processes report join and leave, a
// user present here and elsewhere leaves only when gone from both.
func TestPresenceRemote(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := started(t, newFakeSource(), Config{Presence: roomsPresence})
		defer m.Close()
		watcher := openAs(m, "", "", "rooms/a")
		synctest.Wait()
		early := time.Now().Add(-time.Hour)
		m.SetRemotePresence(map[string][]protocol.Member{"rooms/a": {{User: "carol", Since: early}, {User: "alice", Since: early}}})
		synctest.Wait()
		wantOps(t, "remote joined", watcher, "rooms/a sync ", "rooms/a join carol", "rooms/a join alice")
		alice := openAs(m, "alice", "", "rooms/a")
		synctest.Wait()
		if ms := m.Presence("rooms/a"); len(ms) != 2 || !ms[0].Since.Equal(early) {
			t.Fatalf("Presence %+v; want alice (since the earlier of both) and carol", ms)
		}
		if lp := m.LocalPresence(); len(lp["rooms/a"]) != 1 || lp["rooms/a"][0].User != "alice" {
			t.Fatalf("LocalPresence %+v; want only alice", lp)
		}
		m.SetRemotePresence(map[string][]protocol.Member{})
		synctest.Wait()
		wantOps(t, "remote gone", watcher, "rooms/a sync ", "rooms/a join carol", "rooms/a join alice", "rooms/a leave carol")
		alice.close()
		time.Sleep(PresenceGrace)
		synctest.Wait()
		wantOps(t, "alice gone", watcher, "rooms/a sync ", "rooms/a join carol", "rooms/a join alice", "rooms/a leave carol", "rooms/a leave alice")
		watcher.close()
	})
}

// TestPresenceCloseStopsGraceTimers: Close stops the grace timers it owns.
func TestPresenceCloseStopsGraceTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := started(t, newFakeSource(), Config{Presence: roomsPresence})
		alice := openAs(m, "alice", "", "rooms/a")
		synctest.Wait()
		alice.close()
		m.Close()
		m.presence.mu.Lock()
		defer m.presence.mu.Unlock()
		for t2, pt := range m.presence.topics {
			for u, e := range pt.local {
				if e.timer != nil {
					t.Fatalf("%s %s: grace timer still set after Close", t2, u)
				}
			}
		}
	})
}
