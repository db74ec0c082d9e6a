package handlers

import (
	"net/http"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

// TestTokenRefusals: the tightened token checks say what is wrong.
func TestTokenRefusals(t *testing.T) {
	e := newEnv(t)
	bad := badTokens(t)
	for _, tt := range []struct{ name, want string }{
		{"exp a string", "token exp must be a number"},
		{"crit header", "token has a crit header; no extension is supported"},
		{"over 8 KiB", "token is longer than 8192 bytes"},
		{"C1 in subject", "the token's subject has a control character"},
	} {
		r := e.do(t, req{method: "GET", path: "/api/rooms/lobby/messages", token: bad[tt.name]})
		if r.status != http.StatusUnauthorized || r.errText() != tt.want {
			t.Errorf("%s: got %d %q, want 401 %q", tt.name, r.status, r.errText(), tt.want)
		}
	}
	// Within the bound, a token with many rooms is fine.
	rooms := make([]string, 300)
	for i := range rooms {
		rooms[i] = "lobby"
	}
	ok := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "role": RoleCustomer, "rooms": rooms, "exp": 4102444800})
	if len(ok) > MaxTokenLen {
		t.Fatalf("test token is %d bytes, want at most %d", len(ok), MaxTokenLen)
	}
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/rooms/lobby/messages", token: ok}), http.StatusOK)

	// The contract's claims include exp: a token without one would never
	// expire, so it is refused however well it is signed.
	noExp := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "role": RoleCustomer, "rooms": []string{"lobby"}})
	if r := e.do(t, req{method: "GET", path: "/api/rooms/lobby/messages", token: noExp}); r.status != http.StatusUnauthorized || r.errText() == "" {
		t.Errorf("token without exp: got %d %q, want 401 with a reason", r.status, r.errText())
	}
}

// TestControlCharactersInNames: a C0, DEL or C1 control character in a
// customer, SKU or author is a 400 naming the field, and nothing is
// stored.
func TestControlCharactersInNames(t *testing.T) {
	e := newEnv(t, dev)
	for _, tt := range []struct{ path, body, want string }{
		{"/api/orders", `{"customer":"al\u0085ice","items":[{"sku":"pizza","qty":1}]}`, "customer has a control character"},
		{"/api/orders", `{"customer":"al\u009bice","items":[{"sku":"pizza","qty":1}]}`, "customer has a control character"},
		{"/api/orders", `{"customer":"al\u0007ice","items":[{"sku":"pizza","qty":1}]}`, "customer has a control character"},
		{"/api/orders", `{"customer":"alice","items":[{"sku":"pizza","qty":1},{"sku":"pi\u0080zza","qty":1}]}`, "items[1].sku has a control character"},
		{"/api/orders", "{\"customer\":\"alice\",\"items\":[{\"sku\":\"pi\u007fzza\",\"qty\":1}]}", "items[0].sku has a control character"},
		{"/api/rooms/lobby/messages", `{"author":"bo\u0090b","text":"hi"}`, "author has a control character"},
	} {
		before := e.head(t)
		r := e.do(t, req{method: "POST", path: tt.path, body: tt.body})
		if r.status != http.StatusBadRequest || r.errText() != tt.want {
			t.Errorf("POST %s %s: got %d %q, want 400 %q", tt.path, tt.body, r.status, r.errText(), tt.want)
		}
		if e.head(t) != before {
			t.Errorf("POST %s %s: refused, but the log moved", tt.path, tt.body)
		}
	}
	// Names from other scripts are fine.
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/orders", body: `{"customer":"Zoë 李","items":[{"sku":"crème brûlée","qty":1}]}`}), http.StatusCreated)
}

// TestLoneSurrogateRefused: a \u escape of half a UTF-16 surrogate pair is
// a 400, not a U+FFFD stored in its place; a whole pair and an escaped
// backslash before "u" are fine.
func TestLoneSurrogateRefused(t *testing.T) {
	e := newEnv(t, dev)
	for _, tt := range []struct {
		text   string // JSON string contents, escapes as sent
		status int
	}{
		{`\ud800`, 400},
		{`\uDBFF`, 400},
		{`\udc00`, 400},
		{`a\ud800b`, 400},
		{`\ud800\u0041`, 400},
		{`\ud800\ud800`, 400},
		{`\udc00\ud800`, 400},
		{`ok \ud83d\ude00`, 201},
		{`\\ud800`, 201},
		{`\\\ud83d\ude00`, 201},
		{`\u00e9\n\t\"`, 201},
	} {
		before := e.head(t)
		r := e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"` + tt.text + `"}`})
		if r.status != tt.status {
			t.Errorf("text %s: got %d %s, want %d", tt.text, r.status, r.body, tt.status)
		}
		if r.status == 400 {
			if !strings.Contains(r.errText(), "lone UTF-16 surrogate") {
				t.Errorf("text %s: got error %q, want one naming the lone surrogate", tt.text, r.errText())
			}
			if e.head(t) != before {
				t.Errorf("text %s: refused, but the log moved", tt.text)
			}
		}
		if strings.Contains(string(r.body), "\ufffd") {
			t.Errorf("text %s: stored a U+FFFD: %s", tt.text, r.body)
		}
	}
}

// TestTooManyQueryParams: past net/url's bound the answer says so, not
// that a parameter is missing.
func TestTooManyQueryParams(t *testing.T) {
	e := newEnv(t, dev)
	q := "topic=rooms/lobby" + strings.Repeat("&x=1", maxQueryParams)
	for _, path := range []string{"/api/events?" + q, "/api/rooms/lobby/messages?" + q, "/healthz?" + q} {
		r := e.do(t, req{method: "GET", path: path})
		if r.status != http.StatusBadRequest || r.errText() != "too many query parameters (at most 10000)" {
			t.Errorf("GET %.40s: got %d %q, want 400 too many query parameters", path, r.status, r.errText())
		}
	}
	// At the bound, it still works.
	s := e.openStream(t, "/api/events?topic=rooms/lobby"+strings.Repeat("&x=1", maxQueryParams-1), nil)
	s.next(t)
	s.Close()
}

// TestHeadAnswersLikeGet: HEAD on every GET route answers GET's status
// and headers without a body; on a stream route it opens no stream.
func TestHeadAnswersLikeGet(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Metrics = http.NotFoundHandler(); c.MetricsToken = "metrics-token-0123456789" })
	o := e.createOrder(t, "alice")
	alice := token(t, "alice", RoleCustomer, "lobby")
	for _, tt := range []struct {
		path   string
		tok    string
		header map[string]string
		stream bool
	}{
		{path: "/api/orders/" + o.ID, tok: alice},
		{path: "/api/orders/" + o.ID},
		{path: "/api/orders/0123456789abcdef01234567", tok: alice},
		{path: "/api/rooms/lobby/messages", tok: alice},
		{path: "/api/rooms/lobby/messages?limit=0", tok: alice},
		{path: "/api/rooms/kitchen/messages", tok: alice},
		{path: "/api/orders/" + o.ID + "/events", tok: alice, stream: true},
		{path: "/api/rooms/lobby/events", tok: alice, stream: true},
		{path: "/api/events?topic=rooms/lobby&topic=orders/" + o.ID, tok: alice, stream: true},
		{path: "/api/events", tok: alice},
		{path: "/metrics", header: map[string]string{"Authorization": "Bearer metrics-token-0123456789"}},
		{path: "/metrics"},
	} {
		head := e.do(t, req{method: "HEAD", path: tt.path, token: tt.tok, header: tt.header})
		var get response
		if tt.stream {
			s, r := e.tryStream(t, tt.path+sep(tt.path)+"access_token="+tt.tok, tt.header)
			if s == nil {
				t.Fatalf("GET %s: got %d %s, want a stream", tt.path, r.status, r.body)
			}
			get = response{status: http.StatusOK, header: s.header}
			s.Close()
		} else {
			get = e.do(t, req{method: "GET", path: tt.path, token: tt.tok, header: tt.header})
		}
		if head.status != get.status || len(head.body) != 0 {
			t.Errorf("HEAD %s: got %d with %d bytes of body, want GET's %d and no body", tt.path, head.status, len(head.body), get.status)
		}
		for _, h := range []string{"Content-Type", "Cache-Control", "X-Accel-Buffering", "WWW-Authenticate", "ETag"} {
			if head.header.Get(h) != get.header.Get(h) {
				t.Errorf("HEAD %s: %s %q, GET's %q", tt.path, h, head.header.Get(h), get.header.Get(h))
			}
		}
	}
	// The GET streams are closed by the client; each ends once the server
	// notices. No HEAD may have opened one.
	waitUntil(t, "no stream open after the HEAD requests and the closed GETs", func() bool { return e.mux.Stats().OpenStreams == 0 })
}

// TestMetricsToken: outside dev mode /metrics is 404 without a
// MetricsToken, and with one it needs exactly that bearer token; in dev
// mode it is open.
func TestMetricsToken(t *testing.T) {
	metrics := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("metrics\n")) })
	const tok = "metrics-token-0123456789"
	off := newEnv(t, func(c *Config) { c.Metrics = metrics })
	on := newEnv(t, func(c *Config) { c.Metrics = metrics; c.MetricsToken = tok })
	open := newEnv(t, dev, func(c *Config) { c.Metrics = metrics })
	for _, tt := range []struct {
		name   string
		e      *env
		auth   string
		status int
	}{
		{"no METRICS_TOKEN", off, "", 404},
		{"no METRICS_TOKEN, a bearer", off, "Bearer " + tok, 404},
		{"no token", on, "", 401},
		{"wrong token", on, "Bearer " + tok + "x", 401},
		{"prefix of the token", on, "Bearer " + tok[:10], 401},
		{"another scheme", on, "Basic " + tok, 401},
		{"an API token", on, "Bearer " + token(t, "kitchen", RoleStaff, "*"), 401},
		{"right token", on, "Bearer " + tok, 200},
		{"right token, scheme in lower case", on, "bearer " + tok, 200},
		{"dev mode", open, "", 200},
	} {
		var h map[string]string
		if tt.auth != "" {
			h = map[string]string{"Authorization": tt.auth}
		}
		r := tt.e.do(t, req{method: "GET", path: "/metrics", header: h})
		if r.status != tt.status {
			t.Errorf("%s: got %d %s, want %d", tt.name, r.status, r.body, tt.status)
		}
		if r.status == 200 && string(r.body) != "metrics\n" {
			t.Errorf("%s: got body %q, want the metrics", tt.name, r.body)
		}
		if r.status == 401 && r.header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: a 401 without WWW-Authenticate", tt.name)
		}
		if r.status != 200 && strings.Contains(string(r.body), "metrics\n") {
			t.Errorf("%s: refused but served the metrics", tt.name)
		}
	}
}

func TestLoneSurrogate(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int
	}{
		{`{"a":"x"}`, -1},
		{`{"a":"\ud800"}`, 6},
		{`{"a":"\\ud800"}`, -1},
		{`{"a":"\\\ud800"}`, 8},
		{`{"a":"\ud83d\ude00"}`, -1},
		{`{"a":"\ud83d\ude00\ude00"}`, 18},
		{`{"a":"\ud83d"}`, 6},
		{`{"a":"\ud83d\n"}`, 6},
		{`{"a":"\u0041\udfff"}`, 12},
	} {
		if got := loneSurrogate([]byte(tt.in)); got != tt.want {
			t.Errorf("loneSurrogate(%s) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
