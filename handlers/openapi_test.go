package handlers

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/getkin/kin-openapi/openapi3"

	"changecast/store/bolt"
	"changecast/stream"
)

// TestOpenAPIDocumentIsValid loads docs/openapi.yaml and validates it
// as an OpenAPI 3.1 document.
func TestOpenAPIDocumentIsValid(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile(specPath)
	if err != nil {
		t.Fatalf("load %s: %v", specPath, err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("validate %s: %v", specPath, err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Errorf("%s is OpenAPI %s, want 3.1", specPath, doc.OpenAPI)
	}
}

// notInSpec are the routes of the server the spec leaves out on
// purpose: the demo page's files, served below / (unknown paths under
// /api/ answer a JSON 404 there).
var notInSpec = map[string]bool{
	"GET /*":  true,
	"HEAD /*": true,
}

// echoParam is a path parameter as Echo spells it (:id).
var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// TestOpenAPIMatchesRoutes checks that every route the server registers
// (with the demo page and /metrics on, so that all are) is an operation
// of the spec, and that every operation of the spec is routed.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc, _ := loadSpec(t)
	e, err := New(Config{
		Store:   (*bolt.Store)(nil), // New keeps them; nothing is served here
		Streams: (*stream.Multiplexer)(nil),
		Dev:     true,
		Static:  fstest.MapFS{"index.html": {Data: []byte("demo")}},
		Metrics: http.NotFoundHandler(),
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}

	routed := map[string]bool{}
	for _, r := range e.Routes() {
		key := r.Method + " " + echoParam.ReplaceAllString(r.Path, "{$1}")
		if notInSpec[key] {
			continue
		}
		routed[key] = true
	}
	specified := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			specified[strings.ToUpper(method)+" "+path] = true
		}
	}
	if len(routed) == 0 || len(specified) == 0 {
		t.Fatalf("routed %d operations, specified %d", len(routed), len(specified))
	}
	for _, k := range sortedKeys(routed) {
		if !specified[k] {
			t.Errorf("route %s is not in %s", k, specPath)
		}
	}
	for _, k := range sortedKeys(specified) {
		if !routed[k] {
			t.Errorf("%s has %s, which the server does not route", specPath, k)
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// A valid order as the contract shows it, and its parts.
const (
	specOrderID   = "65f1c0d2a4b5c6d7e8f90123"
	specOrderJSON = `{"id":"65f1c0d2a4b5c6d7e8f90123","customer":"alice",` +
		`"items":[{"sku":"pizza","qty":1}],"status":"placed","version":1,` +
		`"history":[{"status":"placed","at":"2026-01-02T15:04:05Z"}],` +
		`"createdAt":"2026-01-02T15:04:05Z","updatedAt":"2026-01-02T15:04:05Z",` +
		`"allowed":["preparing","cancelled"]}`
)

// TestSpecCheckCatchesDrift runs the check every API test's server runs
// (checkSpec) over handlers that answer as the contract says, then as a
// drifted handler would, and wants each drift reported, and nothing
// reported for the faithful answers.
func TestSpecCheckCatchesDrift(t *testing.T) {
	type answer struct {
		status int
		header map[string]string
		body   string
	}
	order := func(status int) answer {
		return answer{status, map[string]string{"Content-Type": "application/json", "ETag": `"1"`,
			"X-Request-ID": "r1", "Location": "/api/orders/" + specOrderID}, specOrderJSON}
	}
	errAnswer := func(status int, body string) answer {
		return answer{status, map[string]string{"Content-Type": "application/json", "X-Request-ID": "r1"}, body}
	}
	streamHeaders := map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache, no-transform",
		"X-Accel-Buffering": "no", "X-Request-ID": "r1"}
	createBody := `{"customer":"alice","items":[{"sku":"pizza","qty":1}]}`
	tests := []struct {
		name         string
		method, path string
		body         string
		answer       answer
		drift        bool
	}{
		{"create 201", "POST", "/api/orders", createBody, order(201), false},
		{"create 200", "POST", "/api/orders", createBody, order(200), true},
		{"create without Location", "POST", "/api/orders", createBody,
			func() answer { a := order(201); delete(a.header, "Location"); return a }(), true},
		{"create with too many items", "POST", "/api/orders",
			`{"customer":"alice","items":[` + strings.Repeat(`{"sku":"p","qty":1},`, 100) + `{"sku":"p","qty":1}]}`,
			order(201), true},
		{"get order", "GET", "/api/orders/" + specOrderID, "", order(200), false},
		{"head order", "HEAD", "/api/orders/" + specOrderID, "", order(200), false},
		{"head order without ETag", "HEAD", "/api/orders/" + specOrderID, "",
			func() answer { a := order(200); delete(a.header, "ETag"); return a }(), true},
		{"order field renamed", "GET", "/api/orders/" + specOrderID, "", func() answer {
			a := order(200)
			a.body = strings.Replace(a.body, `"createdAt"`, `"created_at"`, 1)
			return a
		}(), true},
		{"order status unknown", "GET", "/api/orders/" + specOrderID, "", func() answer {
			a := order(200)
			a.body = strings.Replace(a.body, `"placed"`, `"shipped"`, 1)
			return a
		}(), true},
		{"order without ETag", "GET", "/api/orders/" + specOrderID, "",
			func() answer { a := order(200); delete(a.header, "ETag"); return a }(), true},
		{"conflict with allowed", "PATCH", "/api/orders/" + specOrderID, `{"status":"placed"}`,
			errAnswer(409, `{"error":"cannot move an order from preparing to placed","allowed":["out_for_delivery","cancelled"]}`), false},
		{"error without error", "GET", "/api/orders/" + specOrderID, "",
			errAnswer(404, `{"message":"order not found"}`), true},
		{"undocumented status", "GET", "/api/orders/" + specOrderID, "",
			errAnswer(418, `{"error":"teapot"}`), true},
		{"stream", "GET", "/api/events?topic=rooms/lobby", "",
			answer{200, streamHeaders, "retry: 1000\n\n"}, false},
		{"stream as JSON", "GET", "/api/events?topic=rooms/lobby", "",
			answer{200, map[string]string{"Content-Type": "application/json", "X-Request-ID": "r1"}, `{}`}, true},
		{"stream without Cache-Control", "GET", "/api/rooms/lobby/events", "", func() answer {
			h := map[string]string{}
			for k, v := range streamHeaders {
				h[k] = v
			}
			delete(h, "Cache-Control")
			return answer{200, h, "retry: 1000\n\n"}
		}(), true},
		{"stream without a topic taken", "GET", "/api/events", "",
			answer{200, streamHeaders, "retry: 1000\n\n"}, true},
		{"malformed topic refused", "GET", "/api/events?topic=rooms/Lobby", "",
			errAnswer(400, `{"error":"topic \"rooms/Lobby\" is not orders/<id>, rooms/<room>, orders or customers/<sub>","refused":[{"topic":"rooms/Lobby","status":400,"error":"topic \"rooms/Lobby\" is not orders/<id>, rooms/<room>, orders or customers/<sub>"}]}`), false},
		{"refused with an undocumented status", "GET", "/api/events?topic=rooms/Lobby", "",
			errAnswer(400, `{"error":"x","refused":[{"topic":"rooms/Lobby","status":401,"error":"x"}]}`), true},
		{"unauthorized without WWW-Authenticate", "GET", "/api/orders/" + specOrderID, "",
			errAnswer(401, `{"error":"a token is required"}`), true},
		{"unrouted method answers", "DELETE", "/api/orders/" + specOrderID, "",
			errAnswer(200, `{"orders":[]}`), true},
		{"unrouted method refused", "DELETE", "/api/orders/" + specOrderID, "",
			errAnswer(405, `{"error":"Method Not Allowed"}`), false},
		{"order list", "GET", "/api/orders?status=active&limit=5", "",
			errAnswer(200, `{"orders":[]}`), false},
		{"order list of messages", "GET", "/api/orders", "",
			errAnswer(200, `{"messages":[]}`), true},
		{"message without room", "POST", "/api/rooms/lobby/messages", `{"text":"hi"}`,
			errAnswer(201, `{"id":"65f1c0d2a4b5c6d7e8f90124","author":"ann","text":"hi","createdAt":"2026-01-02T15:04:05Z"}`), true},
		{"ready", "GET", "/readyz", "",
			errAnswer(200, `{"status":"ready","store":"ok","feed":"ok"}`), false},
		{"not ready without error", "GET", "/readyz", "",
			errAnswer(503, `{"store":"down","feed":"ok"}`), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := newSpecChecker(t, false)
			h := sc.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				for k, v := range tt.answer.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.answer.status)
				_, _ = io.WriteString(w, tt.answer.body)
			}))
			srv := httptest.NewServer(h)
			defer srv.Close()
			hr, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			hr.Header.Set("Authorization", "Bearer x")
			if tt.body != "" {
				hr.Header.Set("Content-Type", "application/json")
			}
			res, err := restClient.Do(hr)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			srv.Close() // the check has run when the handler has returned
			got := sc.failures()
			t.Logf("reported: %q", got)
			switch {
			case tt.drift && len(got) == 0:
				t.Errorf("%s %s answering %d: no failure reported, want one", tt.method, tt.path, tt.answer.status)
			case !tt.drift && len(got) > 0:
				t.Errorf("%s %s answering %d as the contract says: reported %q", tt.method, tt.path, tt.answer.status, got)
			}
		})
	}
}
