package handlers

import (
	"slices"
	"strings"
	"testing"
)

func TestCORS(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.CORSOrigins = []string{"https://shop.example", "http://localhost:3000"} })
	tok := token(t, "alice", RoleCustomer, "lobby")
	tests := []struct {
		name, method, origin string
		header               map[string]string
		wantStatus           int
		wantOrigin           string
	}{
		{"preflight allowed", "OPTIONS", "https://shop.example",
			map[string]string{"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}, 204, "https://shop.example"},
		{"preflight other port", "OPTIONS", "http://localhost:3000", map[string]string{"Access-Control-Request-Method": "PATCH"}, 204, "http://localhost:3000"},
		{"preflight refused", "OPTIONS", "https://evil.example", map[string]string{"Access-Control-Request-Method": "POST"}, 204, ""},
		{"preflight subdomain refused", "OPTIONS", "https://a.shop.example", map[string]string{"Access-Control-Request-Method": "POST"}, 204, ""},
		{"preflight null origin refused", "OPTIONS", "null", map[string]string{"Access-Control-Request-Method": "POST"}, 204, ""},
		{"simple allowed", "GET", "https://shop.example", map[string]string{"Authorization": "Bearer " + tok}, 200, "https://shop.example"},
		{"simple refused", "GET", "https://evil.example", map[string]string{"Authorization": "Bearer " + tok}, 200, ""},
		{"error still carries CORS", "GET", "https://shop.example", nil, 401, "https://shop.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{"Origin": tt.origin}
			for k, v := range tt.header {
				h[k] = v
			}
			r := e.do(t, req{method: tt.method, path: "/api/rooms/lobby/messages", header: h})
			if r.status != tt.wantStatus {
				t.Errorf("got status %d %s, want %d", r.status, r.body, tt.wantStatus)
			}
			if got := r.header.Get("Access-Control-Allow-Origin"); got != tt.wantOrigin {
				t.Errorf("got Access-Control-Allow-Origin %q, want %q", got, tt.wantOrigin)
			}
			if !slices.Contains(r.header.Values("Vary"), "Origin") {
				t.Errorf("got Vary %q, want Origin in it", r.header.Values("Vary"))
			}
			if tt.wantOrigin != "" {
				if got := r.header.Get("Access-Control-Allow-Credentials"); got != "true" {
					t.Errorf("got Access-Control-Allow-Credentials %q, want true", got)
				}
			} else if r.header.Get("Access-Control-Allow-Credentials") != "" {
				t.Error("credentials allowed for an origin not listed")
			}
			if tt.method == "OPTIONS" && tt.wantOrigin != "" {
				allow := r.header.Get("Access-Control-Allow-Headers")
				for _, want := range []string{"Authorization", "Content-Type", "If-Match", "Last-Event-ID"} {
					if !strings.Contains(allow, want) {
						t.Errorf("got Access-Control-Allow-Headers %q, want %s in it", allow, want)
					}
				}
			}
		})
	}
}

func TestCORSOff(t *testing.T) {
	e := newEnv(t)
	r := e.do(t, req{method: "OPTIONS", path: "/api/orders", header: map[string]string{"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"}})
	if got := r.header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("without CORS_ORIGINS: got Access-Control-Allow-Origin %q, want none", got)
	}
}

func TestCORSOriginsChecked(t *testing.T) {
	for _, bad := range []string{"*", "https://*.example", "shop.example", "https://shop.example/path", "ftp://shop.example", "https://"} {
		if _, err := corsMiddleware([]string{bad}); err == nil {
			t.Errorf("origin %q: got no error, want one", bad)
		}
	}
	if _, err := corsMiddleware([]string{"https://shop.example", "http://localhost:8080/"}); err != nil {
		t.Errorf("good origins: %v", err)
	}
}
