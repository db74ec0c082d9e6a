package handlers

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRedactQuery(t *testing.T) {
	tests := []struct{ in, want string }{
		{"topic=rooms/a", "topic=rooms/a"},
		{"access_token=SECRET", "access_token=REDACTED"},
		{"topic=rooms/a&access_token=SECRET&lastEventId=5", "topic=rooms/a&access_token=REDACTED&lastEventId=5"},
		{"access%5Ftoken=SECRET", "access%5Ftoken=REDACTED"},
		{"%61ccess_token=SECRET", "%61ccess_token=REDACTED"},
		{"ACCESS_TOKEN=SECRET", "ACCESS_TOKEN=REDACTED"},
		{"x;access_token=SECRET", "x;access_token=REDACTED"},
		{"access_token=A&access_token=B", "access_token=REDACTED&access_token=REDACTED"},
		{"%zzaccess_token=SECRET", "%zzaccess_token=REDACTED"},
		{"access_token", "access_token=REDACTED"},
	}
	for _, tt := range tests {
		if got := redactQuery(tt.in); got != tt.want || strings.Contains(got, "SECRET") {
			t.Errorf("redactQuery(%q): got %q, want %q", tt.in, got, tt.want)
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
