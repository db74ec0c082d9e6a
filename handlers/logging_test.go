package handlers

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestLoggedQuery: the log shows only known-safe parameters, whatever the
// query's shape; a credential never reaches it, and the line is bounded.
func TestLoggedQuery(t *testing.T) {
	long := strings.Repeat("x", 500<<10)
	tests := []struct {
		in, want string
		others   int
	}{
		{"topic=rooms/a", "topic=rooms/a", 0},
		{"access_token=SECRET", "access_token=REDACTED", 0},
		{"topic=rooms/a&access_token=SECRET&lastEventId=5", "topic=rooms/a&lastEventId=5&access_token=REDACTED", 0},
		{"access%5Ftoken=SECRET", "access_token=REDACTED", 0},
		{"%61ccess_token=SECRET", "access_token=REDACTED", 0},
		{"ACCESS_TOKEN=SECRET", "", 1},
		{"x;access_token=SECRET", "", 1},
		{"x=1;access_token=SECRET", "", 1},
		{"a=1&access_token%3dSECRET", "", 2},
		{"a=1&access_token%253dSECRET", "", 2},
		{"access_token=A&access_token=B", "access_token=REDACTED&access_token=REDACTED", 0},
		{"%zzaccess_token=SECRET", "", 1},
		{"access_token", "access_token=REDACTED", 0},
		{"limit=5&SECRET=1", "limit=5", 1},
		{"topic=" + long, "topic=" + strings.Repeat("x", maxLoggedValue) + "...", 0},
		{strings.Repeat("topic=rooms/abcdefgh&", 5000), "", -1},
	}
	for _, tt := range tests {
		params, _ := url.ParseQuery(tt.in)
		got, others := loggedQuery(tt.in, params)
		if strings.Contains(got, "SECRET") || len(got) > maxLoggedQuery {
			t.Errorf("loggedQuery(%.60q): got %d bytes %.80q: a secret or too long", tt.in, len(got), got)
		}
		if tt.others < 0 {
			continue // only bounded
		}
		if got != tt.want || others != tt.others {
			t.Errorf("loggedQuery(%.60q): got %.80q and %d others, want %.80q and %d", tt.in, got, others, tt.want, tt.others)
		}
	}
}

// TestRequestLog: one line per request with the fields, the request id
// taken from X-Request-ID, and never the query token.
func TestRequestLog(t *testing.T) {
	e := newEnv(t)
	tok := token(t, "alice", RoleCustomer, "lobby")
	r := e.do(t, req{method: "GET", path: "/api/rooms/lobby/messages?limit=5&access_token=" + tok, header: map[string]string{"X-Request-ID": "req-123"}})
	mustStatus(t, r, http.StatusOK)
	if got := r.header.Get("X-Request-ID"); got != "req-123" {
		t.Errorf("got X-Request-ID %q, want req-123 echoed", got)
	}
	// A refused token too, and a stream.
	e.do(t, req{method: "GET", path: "/api/rooms/lobby/messages?access_token=" + tok + "x"})
	s := e.openStream(t, "/api/rooms/lobby/events?access_token="+tok, nil)
	s.next(t)
	s.Close()
	// The stream's line is written when its handler returns.
	deadline := time.Now().Add(waitTimeout)
	for strings.Count(e.logs.String(), "access_token=REDACTED") < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}

	logs := e.logs.String()
	sig := tok[strings.LastIndexByte(tok, '.')+1:]
	if strings.Contains(logs, sig) || strings.Contains(logs, tok[:20]) {
		t.Fatalf("the token is in the log:\n%s", logs)
	}
	var line string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "request_id=req-123") {
			line = l
		}
	}
	for _, want := range []string{"msg=request", "method=GET", "path=/api/rooms/lobby/messages", "access_token=REDACTED", "limit=5", "status=200", "duration=", "sub=alice"} {
		if !strings.Contains(line, want) {
			t.Errorf("request line %q lacks %q", line, want)
		}
	}
	if n := strings.Count(logs, "access_token=REDACTED"); n != 3 {
		t.Errorf("got %d redacted request lines, want 3:\n%s", n, logs)
	}
}

func TestLongRequestIDIsCut(t *testing.T) {
	e := newEnv(t, dev)
	r := e.do(t, req{method: "GET", path: "/healthz", header: map[string]string{"X-Request-ID": strings.Repeat("r", 1000)}})
	if got := len(r.header.Get("X-Request-ID")); got != maxRequestIDLen {
		t.Errorf("got an X-Request-ID of %d bytes, want %d", got, maxRequestIDLen)
	}
}

// TestTokenNeverLogged: a token pasted into any logged query parameter or
// into the path is not in the log, whether the request succeeds or not;
// the known-parameter rule still shows the parameters' other values.
func TestTokenNeverLogged(t *testing.T) {
	e := newEnv(t)
	tok := token(t, "alice", RoleStaff, "*")
	bearer := map[string]string{"Authorization": "Bearer " + tok}
	paths := []string{
		"/api/orders/" + tok,
		"/api/orders/" + tok + "/events",
		"/api/rooms/" + tok + "/messages",
		"/api/orders?limit=" + tok,
		"/api/orders?status=" + tok,
		"/api/orders?before=" + tok,
		"/api/orders?customer=" + tok,
		"/api/orders?customer=bob&limit=" + tok,
		"/api/events?topic=" + tok,
		"/api/events?topic=rooms/Lobby&topic=" + tok,
		"/api/rooms/lobby/messages?before=x" + tok + "y",
	}
	for _, p := range paths {
		r := e.do(t, req{method: "GET", path: p, header: bearer})
		if r.status == 0 {
			t.Fatalf("GET %s: no answer", p)
		}
	}
	// Streams that opened (the token as a malformed topic is refused on
	// its own): their lines come when they are live.
	for _, p := range []string{"/api/events?topic=rooms/lobby&lastEventId=" + tok, "/api/events?topic=rooms/lobby&topic=" + tok} {
		s := e.openStream(t, p, bearer)
		s.Close()
	}
	deadline := time.Now().Add(waitTimeout)
	for strings.Count(e.logs.String(), "msg=request") < len(paths)+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	logs := e.logs.String()
	header, claims, _ := strings.Cut(tok, ".")
	claims, sig, _ := strings.Cut(claims, ".")
	for what, part := range map[string]string{"header": header, "claims": claims, "signature": sig} {
		if strings.Contains(logs, part[:12]) {
			t.Errorf("the token's %s is in the log:\n%s", what, logs)
		}
	}
	for _, want := range []string{"customer=bob", "topic=rooms/lobby", "path=/api/orders/REDACTED"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q:\n%s", want, logs)
		}
	}
}
