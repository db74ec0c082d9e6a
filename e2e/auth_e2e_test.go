package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"changecast/handlers"
	"changecast/store"
)

// TestAuthEndToEnd runs the server without -dev: every /api route needs a
// token signed with JWT_SECRET, a customer sees only its own orders, and
// the request log never shows an access_token.
func TestAuthEndToEnd(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("k", 40)
	s := startE2E(t, map[string]string{"JWT_SECRET": secret}, nil)
	token := func(sub, role string, rooms ...string) http.Header {
		tok, err := handlers.IssueToken([]byte(secret), sub, role, rooms, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return http.Header{"Authorization": {"Bearer " + tok}}
	}
	alice, bob, staff := token("alice", "customer", "lobby"), token("bob", "customer"), token("kim", "staff", "*")
	body := map[string]any{"customer": "alice", "items": []map[string]any{{"sku": "pizza", "qty": 2}}}

	if st, _ := doJSON(t, "POST", s.URL+"/api/orders", body, nil, nil); st != http.StatusUnauthorized {
		t.Fatalf("no token: status %d, want 401", st)
	}
	var o store.Order
	if st, _ := doJSON(t, "POST", s.URL+"/api/orders", body, alice, &o); st != http.StatusCreated {
		t.Fatalf("alice creates her order: status %d, want 201", st)
	}
	for _, tc := range []struct {
		name   string
		method string
		path   string
		header http.Header
		body   any
		want   int
	}{
		{"owner reads", "GET", "/api/orders/" + o.ID, alice, nil, 200},
		{"staff reads", "GET", "/api/orders/" + o.ID, staff, nil, 200},
		{"other customer gets 404", "GET", "/api/orders/" + o.ID, bob, nil, 404},
		{"other customer cannot watch", "GET", "/api/orders/" + o.ID + "/events", bob, nil, 404},
		{"customer cannot advance", "PATCH", "/api/orders/" + o.ID, alice, map[string]string{"status": "preparing"}, 403},
		{"staff advances", "PATCH", "/api/orders/" + o.ID, staff, map[string]string{"status": "preparing"}, 200},
		{"room not granted", "POST", "/api/rooms/kitchen/messages", alice, map[string]string{"text": "hi"}, 403},
		{"room granted", "POST", "/api/rooms/lobby/messages", alice, map[string]string{"text": "hi"}, 201},
		{"bad signature", "GET", "/api/orders/" + o.ID, http.Header{"Authorization": {"Bearer " + strings.Repeat("x", 20) + ".e30.sig"}}, nil, 401},
	} {
		if st, _ := doJSON(t, tc.method, s.URL+tc.path, tc.body, tc.header, nil); st != tc.want {
			t.Errorf("%s: %s %s = %d, want %d", tc.name, tc.method, tc.path, st, tc.want)
		}
	}

	// EventSource passes the token in the query; it must not reach the log.
	tok := strings.TrimPrefix(alice.Get("Authorization"), "Bearer ")
	w := watch(t, s.URL+"/api/orders/"+o.ID+"/events?access_token="+tok, "")
	if evs := w.WaitN(t, 1); evs[0].Name != "snapshot" {
		t.Fatalf("first event %s, want snapshot", evs[0].Name)
	}
	w.Stop(t)
	s.Stop(t)
	if logs := s.logs.String(); strings.Contains(logs, tok) || !strings.Contains(logs, "stream ended") {
		t.Errorf("the log shows the access token, or no stream end:\n%s", logs)
	}
}
