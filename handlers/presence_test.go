package handlers

import (
	"changecast/protocol"
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"
)

// presenceEvent is the data of a presence event.
type presenceEvent = protocol.Payload

// nextPresence returns the stream's next presence event.
func (s *sseStream) nextPresence(tb testing.TB) (presenceEvent, sseEvent) {
	tb.Helper()
	select {
	case ev := <-s.presence:
		var p presenceEvent
		if err := json.Unmarshal([]byte(ev.Data), &p); err != nil {
			tb.Fatalf("presence data %q: %v", ev.Data, err)
		}
		return p, ev
	case <-time.After(waitTimeout):
		tb.Fatal("no presence event within the timeout")
	}
	return presenceEvent{}, sseEvent{}
}

// presentUsers answers GET /api/rooms/:room/presence as a list of users.
func (e *env) presentUsers(tb testing.TB, room, tok string) []string {
	tb.Helper()
	r := e.do(tb, req{method: "GET", path: "/api/rooms/" + room + "/presence", token: tok})
	mustStatus(tb, r, http.StatusOK)
	var page struct {
		Room  string            `json:"room"`
		Users []protocol.Member `json:"users"`
	}
	r.decode(tb, &page)
	if page.Room != room {
		tb.Fatalf("presence of %q answered room %q", room, page.Room)
	}
	out := []string{}
	for _, u := range page.Users {
		if u.Since.IsZero() {
			tb.Fatalf("user %q without since", u.User)
		}
		out = append(out, u.User)
	}
	return out
}

// TestPresenceDev: in dev mode a stream says who it is with ?user=; an
// anonymous one is not listed; two streams of one user (the room's and a
// multi-topic one) are one join; the leave follows the last close.
func TestPresenceDev(t *testing.T) {
	e := newEnv(t, dev)
	watcher := e.openStream(t, "/api/rooms/lobby/events", nil)
	if ev := watcher.next(t); ev.Event != "snapshot" {
		t.Fatalf("first event %q, want snapshot", ev.Event)
	}
	p, _ := watcher.nextPresence(t)
	if p.Op != "sync" || p.Topic != "rooms/lobby" || len(p.Users) != 0 {
		t.Fatalf("first presence %+v, want an empty sync of rooms/lobby", p)
	}
	if got := e.presentUsers(t, "lobby", ""); len(got) != 0 {
		t.Fatalf("present with only an anonymous stream: %q", got)
	}

	tab1 := e.openStream(t, "/api/rooms/lobby/events?user=alice", nil)
	if p, _ := watcher.nextPresence(t); p.Op != "join" || p.User != "alice" || p.Topic != "rooms/lobby" {
		t.Fatalf("got %+v, want alice's join", p)
	}
	tab2 := e.openStream(t, "/api/events?topic=rooms/lobby&topic=rooms/kitchen&user=alice", nil)
	p, _ = tab2.nextPresence(t)
	if p.Op != "sync" || len(p.Users) != 1 || p.Users[0].User != "alice" {
		t.Fatalf("second tab's sync %+v, want alice alone", p)
	}
	if got := e.presentUsers(t, "lobby", ""); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("present %q, want [alice] once", got)
	}
	if got := e.presentUsers(t, "kitchen", ""); !slices.Equal(got, []string{"alice"}) {
		t.Fatalf("kitchen present %q, want [alice]", got)
	}
	tab1.Close()
	tab2.Close()
	closed := time.Now()
	p, _ = watcher.nextPresence(t)
	if p.Op != "leave" || p.User != "alice" {
		t.Fatalf("got %+v, want alice's leave (and no second join)", p)
	}
	if time.Since(closed) < 4*time.Second {
		t.Fatalf("leave %v after the last close; want the grace period first", time.Since(closed))
	}
	if got := e.presentUsers(t, "lobby", ""); len(got) != 0 {
		t.Fatalf("present after leave: %q", got)
	}

	for _, bad := range []string{"%01x", "%7F", "%FF"} {
		r := e.do(t, req{method: "GET", path: "/api/rooms/lobby/events?user=" + bad})
		mustStatus(t, r, http.StatusBadRequest)
	}
}

// TestPresenceAuth: with auth a stream counts as its token's subject
// (a user parameter changes nothing), and presence has the room's grants.
func TestPresenceAuth(t *testing.T) {
	e := newEnv(t)
	bob := token(t, "bob", RoleCustomer, "lobby")
	e.openStream(t, "/api/rooms/lobby/events?user=mallory", map[string]string{"Authorization": "Bearer " + bob})
	waitUntil(t, "bob present", func() bool { return slices.Equal(e.presentUsers(t, "lobby", bob), []string{"bob"}) })
	r := e.do(t, req{method: "GET", path: "/api/rooms/kitchen/presence", token: bob})
	mustStatus(t, r, http.StatusForbidden)
	r = e.do(t, req{method: "GET", path: "/api/rooms/No!/presence", token: bob})
	mustStatus(t, r, http.StatusBadRequest)
}

// waitUntil polls ok until it holds, failing after waitTimeout.
func waitUntil(tb testing.TB, what string, ok func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(waitTimeout); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}
