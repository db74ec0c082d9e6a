package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestLoadConfig(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	c, err := loadConfig(env())
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 8080 || c.DataDir != "./data" || c.MongoDatabase != "changecast" || c.Heartbeat != 15*time.Second || c.ShutdownTimeout != 10*time.Second || c.Limits.StreamsPerSubject != 16 || c.Limits.WritesPerSecond != 20 {
		t.Errorf("defaults = %+v", c)
	}
	c, err = loadConfig(env("PORT", "5000", "HEARTBEAT_INTERVAL", "20s", "CORS_ORIGINS", "https://a.example, http://localhost:3000/", "WRITES_PER_SECOND", "-1"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != 5000 || c.Heartbeat != 20*time.Second || strings.Join(c.CORSOrigins, " ") != "https://a.example http://localhost:3000" || c.Limits.WritesPerSecond != -1 {
		t.Errorf("parsed = %+v", c)
	}
	for _, tc := range []struct{ name, value, wantErr string }{
		{"PORT", "http", `PORT="http": want a port number`},
		{"PORT", "70000", "PORT"},
		{"HEARTBEAT_INTERVAL", "90s", "HEARTBEAT_INTERVAL"},
		{"HEARTBEAT_INTERVAL", "15", "want a duration"},
		{"SHUTDOWN_TIMEOUT", "1h", "SHUTDOWN_TIMEOUT"},
		{"MONGODB_URI", "postgres://user:hunter2@x", "MONGODB_URI: want"},
		{"JWT_SECRET", "short-secret", "JWT_SECRET is too short: want"},
		{"CORS_ORIGINS", "*", "CORS_ORIGINS"},
		{"CORS_ORIGINS", "https://a.example/path", "CORS_ORIGINS"},
		{"RETAIN_CHANGES", "10", "RETAIN_CHANGES"},
		{"STREAMS_PER_SUBJECT", "0", "STREAMS_PER_SUBJECT"},
		{"WRITES_PER_SECOND", "fast", "WRITES_PER_SECOND"},
		{"MONGODB_DATABASE", "a/b", "MONGODB_DATABASE"},
	} {
		_, err := loadConfig(env(tc.name, tc.value))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s=%q: error %v, want one containing %q", tc.name, tc.value, err, tc.wantErr)
		}
		if err != nil && (strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "short-secret")) {
			t.Errorf("%s: error leaks the secret: %v", tc.name, err)
		}
	}
}

// TestServeRefusesWithoutSecret: without -dev the server does not start
// unless JWT_SECRET is set.
func TestServeRefusesWithoutSecret(t *testing.T) {
	var out, errOut strings.Builder
	err := run(t.Context(), nil, func(k string) string {
		if k == "PORT" {
			return "0"
		}
		return ""
	}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "JWT_SECRET is required") {
		t.Fatalf("run without -dev or JWT_SECRET: %v; want a JWT_SECRET error", err)
	}
}

func TestVersionAndToken(t *testing.T) {
	var out strings.Builder
	if err := run(t.Context(), []string{"-version"}, func(string) string { return "" }, &out, &out); err != nil || !strings.HasPrefix(out.String(), "changecast ") {
		t.Fatalf("-version: %q, %v", out.String(), err)
	}
	secret := strings.Repeat("s", 32)
	getenv := func(k string) string {
		if k == "JWT_SECRET" {
			return secret
		}
		return ""
	}
	out.Reset()
	if err := run(t.Context(), []string{"token", "-sub", "alice", "-role", "staff", "-rooms", "lobby,kitchen", "-ttl", "5m"}, getenv, &out, &out); err != nil {
		t.Fatalf("token: %v", err)
	}
	if tok := strings.TrimSpace(out.String()); strings.Count(tok, ".") != 2 {
		t.Fatalf("token printed %q; want a JWT", tok)
	}
	for _, args := range [][]string{{"token"}, {"token", "-sub", "a", "-role", "admin"}, {"token", "-sub", "a", "-rooms", "Bad Room"}, {"token", "-sub", "a", "-ttl", "-1s"}} {
		if err := run(t.Context(), args, getenv, &out, &out); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
	if err := run(t.Context(), []string{"token", "-sub", "a"}, func(string) string { return "" }, &out, &out); err == nil {
		t.Error("token without JWT_SECRET: no error")
	}
}

func TestPprofAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:6060", "localhost:6060", "[::1]:6060"} {
		if c, err := loadConfig(func(k string) string {
			if k == "PPROF_ADDR" {
				return ok
			}
			return ""
		}); err != nil || c.PprofAddr != ok {
			t.Errorf("PPROF_ADDR=%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"0.0.0.0:6060", ":6060", "10.0.0.1:6060", "127.0.0.1"} {
		if _, err := loadConfig(func(k string) string {
			if k == "PPROF_ADDR" {
				return bad
			}
			return ""
		}); err == nil {
			t.Errorf("PPROF_ADDR=%s accepted; want loopback only", bad)
		}
	}
}

// TestConnectionLimitConfig: MAX_CONNECTIONS, BODY_TIMEOUT and
// IDLE_TIMEOUT parse, default and refuse bad values.
func TestConnectionLimitConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := loadConfig(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConnections != 0 || c.BodyTimeout != 30*time.Second || c.IdleTimeout != 60*time.Second {
		t.Errorf("defaults: MaxConnections %d, BodyTimeout %s, IdleTimeout %s; want 0 (derived), 30s, 60s", c.MaxConnections, c.BodyTimeout, c.IdleTimeout)
	}
	c, err = loadConfig(env(map[string]string{"MAX_CONNECTIONS": "500", "BODY_TIMEOUT": "5s", "IDLE_TIMEOUT": "2m"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxConnections != 500 || c.BodyTimeout != 5*time.Second || c.IdleTimeout != 2*time.Minute {
		t.Errorf("parsed: %d %s %s", c.MaxConnections, c.BodyTimeout, c.IdleTimeout)
	}
	for _, kv := range [][2]string{{"MAX_CONNECTIONS", "0"}, {"MAX_CONNECTIONS", "-5"}, {"MAX_CONNECTIONS", "lots"},
		{"BODY_TIMEOUT", "0s"}, {"BODY_TIMEOUT", "1h"}, {"IDLE_TIMEOUT", "500ms"}} {
		_, err := loadConfig(env(map[string]string{kv[0]: kv[1]}))
		if err == nil || !strings.Contains(err.Error(), kv[0]) {
			t.Errorf("%s=%s: error %v, want one naming the variable", kv[0], kv[1], err)
		}
	}
}

func TestStreamMaxAgeConfig(t *testing.T) {
	env := func(k, v string) func(string) string {
		return func(key string) string {
			if key == k {
				return v
			}
			return ""
		}
	}
	for value, want := range map[string]time.Duration{"": 30 * time.Minute, "0": 0, "1m": time.Minute, "2h": 2 * time.Hour} {
		c, err := loadConfig(env("STREAM_MAX_AGE", value))
		if err != nil || c.StreamMaxAge != want {
			t.Errorf("STREAM_MAX_AGE=%q: %v, %v; want %v", value, c.StreamMaxAge, err, want)
		}
	}
	for _, v := range []string{"30s", "25h", "-1m", "0s", "forever", "30"} {
		if _, err := loadConfig(env("STREAM_MAX_AGE", v)); err == nil || !strings.Contains(err.Error(), "STREAM_MAX_AGE") {
			t.Errorf("STREAM_MAX_AGE=%q: %v; want an error naming it", v, err)
		}
	}
}

// TestMetricsTokenConfig: METRICS_TOKEN is read, checked, and never
// echoed in an error.
func TestMetricsTokenConfig(t *testing.T) {
	for _, tc := range []struct {
		value string
		ok    bool
	}{
		{"", true},
		{"scrape-me-0123456789abcdef", true},
		{"short-one", false},
		{"has a space 0123456789", false},
		{"non-ascii-ü-0123456789", false},
	} {
		c, err := loadConfig(func(k string) string {
			if k == "METRICS_TOKEN" {
				return tc.value
			}
			return ""
		})
		switch {
		case tc.ok && (err != nil || c.MetricsToken != tc.value):
			t.Errorf("METRICS_TOKEN=%q: got %q, %v; want it read", tc.value, c.MetricsToken, err)
		case !tc.ok && err == nil:
			t.Errorf("METRICS_TOKEN=%q: no error, want one", tc.value)
		case !tc.ok && (strings.Contains(err.Error(), tc.value) || !strings.Contains(err.Error(), "METRICS_TOKEN")):
			t.Errorf("METRICS_TOKEN=%q: error %q, want one naming the variable and not its value", tc.value, err)
		}
	}
}

func TestTrustedProxiesConfig(t *testing.T) {
	get := func(v string) func(string) string {
		return func(k string) string {
			if k == "TRUSTED_PROXIES" {
				return v
			}
			return ""
		}
	}
	for value, want := range map[string]string{
		"":                        "[]",
		"10.0.0.0/8, 192.168.1.7": "[10.0.0.0/8 192.168.1.7/32]",
		"*":                       "[0.0.0.0/0 ::/0]",
		"fd00::/8,2001:db8::1":    "[fd00::/8 2001:db8::1/128]",
		"10.1.2.3/8":              "[10.0.0.0/8]",
	} {
		c, err := loadConfig(get(value))
		if got := fmt.Sprint(c.TrustedProxies); err != nil || got != want {
			t.Errorf("TRUSTED_PROXIES=%q: %s, %v; want %s", value, got, err, want)
		}
	}
	for _, v := range []string{"10.0.0.0/33", "localhost", "10.0.0.0/8;*"} {
		if _, err := loadConfig(get(v)); err == nil || !strings.Contains(err.Error(), "TRUSTED_PROXIES") {
			t.Errorf("TRUSTED_PROXIES=%q: %v; want an error naming it", v, err)
		}
	}
}

// TestIdPConfig: the identity provider's variables are checked at start,
// each error naming its variable, and read into the config.
func TestIdPConfig(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{"JWT_SECRET": strings.Repeat("s", 32)}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	c, err := loadConfig(env("JWT_ISSUER", "https://tenant.auth0.com/", "JWT_AUDIENCE", "https://api.example.com",
		"JWT_ROLE_CLAIM", "app_metadata.role", "JWT_ROOMS_CLAIM", "https://example.com/rooms", "JWT_STAFF_ROLES", "admin, support",
		"JWT_SECRET_PREVIOUS", strings.Repeat("p", 32)))
	if err != nil {
		t.Fatal(err)
	}
	want := "https://tenant.auth0.com/ https://api.example.com app_metadata.role https://example.com/rooms [admin support] " + strings.Repeat("p", 32)
	if got := fmt.Sprintf("%s %s %s %s %v %s", c.IdP.Issuer, c.IdP.Audience, c.IdP.RoleClaim, c.IdP.RoomsClaim, c.IdP.StaffRoles, c.JWTSecretPrevious); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if c, err := loadConfig(env()); err != nil || c.IdP.On() || c.IdP.RoleClaim != "role" || c.IdP.RoomsClaim != "rooms" || fmt.Sprint(c.IdP.StaffRoles) != "[staff]" {
		t.Errorf("defaults: %+v %v", c.IdP, err)
	}
	for _, tc := range []struct{ name, value, wantErr string }{
		{"JWKS_URL", "ftp://idp.example/keys", `JWKS_URL="ftp://idp.example/keys": want`},
		{"JWKS_URL", "/keys", "JWKS_URL"},
		{"JWT_ISSUER", "tenant.auth0.com", "JWT_ISSUER"},
		{"JWT_ROLE_CLAIM", "app_metadata..role", "JWT_ROLE_CLAIM"},
		{"JWT_ROOMS_CLAIM", ".rooms", "JWT_ROOMS_CLAIM"},
		{"JWT_STAFF_ROLES", " , ", "JWT_STAFF_ROLES"},
		{"JWT_SECRET_PREVIOUS", "short", "JWT_SECRET_PREVIOUS is too short"},
	} {
		_, err := loadConfig(env(tc.name, tc.value))
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s=%q: error %v, want one containing %q", tc.name, tc.value, err, tc.wantErr)
		}
	}
	_, err = loadConfig(func(k string) string {
		if k == "JWT_SECRET_PREVIOUS" {
			return strings.Repeat("p", 32)
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "JWT_SECRET_PREVIOUS is set without JWT_SECRET") {
		t.Errorf("JWT_SECRET_PREVIOUS alone: %v", err)
	}
	// Without JWT_SECRET, an identity provider is enough to serve.
	err = run(t.Context(), nil, func(k string) string {
		switch k {
		case "PORT":
			return "http"
		case "JWKS_URL":
			return "https://idp.example/keys"
		}
		return ""
	}, io.Discard, io.Discard)
	if err == nil || strings.Contains(err.Error(), "JWT_SECRET is required") {
		t.Errorf("JWKS_URL without JWT_SECRET: %v, want only the PORT error", err)
	}
}

// TestTokenWithKey: `changecast token -key` signs with the key file's
// algorithm (ES256 for a P-256 key) and names the kid, iss and aud given;
// it refuses a key without -kid and an EC key off P-256.
func TestTokenWithKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, curve elliptic.Curve) (string, *ecdsa.PrivateKey) {
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return f, k
	}
	p256, key := write("p256.pem", elliptic.P256())
	p384, _ := write("p384.pem", elliptic.P384())
	none := func(string) string { return "" }
	var out, errOut strings.Builder
	if err := run(t.Context(), []string{"token", "-sub", "auth0|1", "-role", "staff", "-rooms", "lobby", "-key", p256, "-kid", "k1", "-iss", "https://idp.test/", "-aud", "api"}, none, &out, &errOut); err != nil {
		t.Fatalf("token -key: %v %s", err, errOut.String())
	}
	var c jwt.MapClaims
	tok, err := jwt.ParseWithClaims(strings.TrimSpace(out.String()), &c, func(*jwt.Token) (any, error) { return &key.PublicKey, nil },
		jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer("https://idp.test/"), jwt.WithAudience("api"), jwt.WithExpirationRequired())
	if err != nil || tok.Header["kid"] != "k1" || c["sub"] != "auth0|1" || c["role"] != "staff" {
		t.Fatalf("token -key: %v, header %v, claims %v", err, tok.Header, c)
	}
	for _, args := range [][]string{
		{"token", "-sub", "a", "-key", p256},
		{"token", "-sub", "a", "-key", p384, "-kid", "k"},
		{"token", "-sub", "a", "-key", filepath.Join(dir, "missing.pem"), "-kid", "k"},
	} {
		if err := run(t.Context(), args, none, &out, &errOut); err == nil {
			t.Errorf("run %q: no error", args)
		}
	}
}

// TestRoomAuthConfig: the ROOM_AUTH_ variables are read with their
// defaults, bad values are refused naming the variable (the URL and the
// secret without their values), and a secret needs a URL.
func TestRoomAuthConfig(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{"JWT_SECRET": strings.Repeat("s", 32)}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	c, err := loadConfig(env())
	if err != nil || c.RoomAuth.On() || c.RoomAuth.Cache != 15*time.Second || c.RoomAuth.Timeout != 2*time.Second || c.RoomAuth.MaxCalls != 16 {
		t.Fatalf("defaults: %+v %v", c.RoomAuth, err)
	}
	c, err = loadConfig(env("ROOM_AUTH_URL", "https://app.example/rooms/check", "ROOM_AUTH_SECRET", "0123456789abcdef",
		"ROOM_AUTH_CACHE", "30s", "ROOM_AUTH_TIMEOUT", "500ms", "ROOM_AUTH_CONCURRENCY", "4"))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprintf("%s %s %s %s %d", c.RoomAuth.URL, c.RoomAuth.Secret, c.RoomAuth.Cache, c.RoomAuth.Timeout, c.RoomAuth.MaxCalls); got != "https://app.example/rooms/check 0123456789abcdef 30s 500ms 4" {
		t.Errorf("got %s", got)
	}
	for _, tc := range []struct{ name, value string }{
		{"ROOM_AUTH_URL", "ftp://user:pw@app.example/rooms"},
		{"ROOM_AUTH_SECRET", "short secret!"},
		{"ROOM_AUTH_CACHE", "0s"},
		{"ROOM_AUTH_TIMEOUT", "1m"},
		{"ROOM_AUTH_CONCURRENCY", "0"},
	} {
		kv := []string{tc.name, tc.value}
		if tc.name != "ROOM_AUTH_URL" {
			kv = append(kv, "ROOM_AUTH_URL", "https://app.example/rooms")
		}
		_, err := loadConfig(env(kv...))
		secret := tc.name == "ROOM_AUTH_URL" || tc.name == "ROOM_AUTH_SECRET"
		if err == nil || !strings.Contains(err.Error(), tc.name) || (secret && strings.Contains(err.Error(), tc.value)) {
			t.Errorf("%s=%q: error %v, want one naming the variable (and not a secret's value)", tc.name, tc.value, err)
		}
	}
	if _, err := loadConfig(env("ROOM_AUTH_SECRET", "0123456789abcdef")); err == nil || !strings.Contains(err.Error(), "ROOM_AUTH_SECRET is set without ROOM_AUTH_URL") {
		t.Errorf("ROOM_AUTH_SECRET alone: %v", err)
	}
}
