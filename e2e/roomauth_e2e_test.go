package e2e

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"changecast/handlers"
	"changecast/internal/sseclient"
)

// TestRoomAuthEndToEnd: the built binary with ROOM_AUTH_URL and
// ROOM_AUTH_SECRET asks a fake app backend about the rooms a token does
// not list: a yes streams and reads the room, a no is 403; when the
// backend withdraws the room, the open stream gets `refused` for it
// (within two ROOM_AUTH_CACHE periods) while the room the token lists
// keeps streaming.
func TestRoomAuthEndToEnd(t *testing.T) {
	t.Parallel()
	const roomSecret = "room-backend-secret-0123"
	var mu sync.Mutex
	members := map[string]bool{"alice kitchen read": true}
	var badAuth []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var q struct{ Sub, Room, Action string }
		if err := json.NewDecoder(r.Body).Decode(&q); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if a := r.Header.Get("Authorization"); a != "Bearer "+roomSecret {
			badAuth = append(badAuth, a)
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]bool{"allowed": members[q.Sub+" "+q.Room+" "+q.Action]})
	}))
	t.Cleanup(backend.Close)
	secret := strings.Repeat("r", 40)
	s := startE2E(t, map[string]string{
		"JWT_SECRET":       secret,
		"ROOM_AUTH_URL":    backend.URL + "/rooms/check",
		"ROOM_AUTH_SECRET": roomSecret,
		"ROOM_AUTH_CACHE":  "1s",
	}, nil)
	mint := func(sub, role string, rooms ...string) string {
		tok, err := handlers.IssueToken([]byte(secret), sub, role, rooms, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	alice, staff := mint("alice", handlers.RoleCustomer, "lobby"), mint("kitchen", handlers.RoleStaff, "*")
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	post := func(room, text string) {
		t.Helper()
		if st, _ := doJSON(t, "POST", s.URL+"/api/rooms/"+room+"/messages", map[string]string{"text": text}, bearer(staff), nil); st != http.StatusCreated {
			t.Fatalf("post to %s: %d", room, st)
		}
	}

	if st, _ := doJSON(t, "GET", s.URL+"/api/rooms/kitchen/messages", nil, bearer(alice), nil); st != http.StatusOK {
		t.Errorf("a room the backend grants: %d, want 200", st)
	}
	if st, _ := doJSON(t, "GET", s.URL+"/api/rooms/cellar/messages", nil, bearer(alice), nil); st != http.StatusForbidden {
		t.Errorf("a room the backend refuses: %d, want 403", st)
	}
	if st, _ := doJSON(t, "POST", s.URL+"/api/rooms/kitchen/messages", map[string]string{"text": "hi"}, bearer(alice), nil); st != http.StatusForbidden {
		t.Errorf("posting where the backend grants only reading: %d, want 403", st)
	}

	c := watch(t, s.URL+"/api/events?topic=rooms/kitchen&topic=rooms/lobby&access_token="+alice, "")
	c.WaitN(t, 2) // the snapshots
	post("kitchen", "k1")
	post("lobby", "l1")
	message := func(evs []sseclient.Event, text string) int {
		for i, ev := range evs {
			if ev.Name == "message" && strings.Contains(string(ev.Data), `"text":"`+text+`"`) {
				return i
			}
		}
		return -1
	}
	c.WaitFor(t, "k1 and l1", func(evs []sseclient.Event) bool { return message(evs, "k1") >= 0 && message(evs, "l1") >= 0 })

	mu.Lock()
	delete(members, "alice kitchen read")
	mu.Unlock()
	withdrawn := time.Now()
	refused := func(evs []sseclient.Event) int {
		for i, ev := range evs {
			if ev.Name == "refused" && strings.Contains(string(ev.Data), `"topic":"rooms/kitchen","status":403`) {
				return i
			}
		}
		return -1
	}
	c.WaitFor(t, "rooms/kitchen refused", func(evs []sseclient.Event) bool { return refused(evs) >= 0 })
	t.Logf("the withdrawal reached the open stream after %s (ROOM_AUTH_CACHE 1s)", time.Since(withdrawn).Round(10*time.Millisecond))
	post("kitchen", "k2")
	post("lobby", "l2")
	evs := c.WaitFor(t, "l2", func(evs []sseclient.Event) bool { return message(evs, "l2") >= 0 })
	if message(evs, "k2") >= 0 {
		t.Fatalf("a message of the withdrawn room reached the stream: %s", describe(evs))
	}
	if st, _ := doJSON(t, "GET", s.URL+"/api/rooms/kitchen/messages", nil, bearer(alice), nil); st != http.StatusForbidden {
		t.Errorf("the withdrawn room's messages: %d, want 403", st)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(badAuth) > 0 {
		t.Errorf("questions without the secret as a bearer token: %q", badAuth)
	}
	if strings.Contains(s.logs.String(), roomSecret) {
		t.Errorf("the room backend's secret is in the logs")
	}
}
