package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"changecast/handlers"
	"changecast/internal/sseclient"
	"changecast/store"
)

// TestIdPEndToEnd: the built binary with JWT_ISSUER alone (discovery,
// the issuer with a trailing slash), JWT_AUDIENCE, nested claim names and
// a previous HS256 secret. Customers with | and / in their subject, with
// RS256 and ES256 tokens minted by `changecast token -key`, create,
// list and watch their orders; a staff EdDSA token of a key published
// after start is accepted; a wrong audience is refused; with the key set
// down, tokens of known keys still work (TestIdPDown of handlers has
// the 503 of an unknown kid then).
func TestIdPEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	keys := map[string]crypto.Signer{}
	for kid, gen := range map[string]func() (crypto.Signer, error){
		"rsa": func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) },
		"ec":  func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) },
		"ed": func() (crypto.Signer, error) {
			_, k, err := ed25519.GenerateKey(rand.Reader)
			return k, err
		},
	} {
		k, err := gen()
		if err != nil {
			t.Fatal(err)
		}
		keys[kid] = k
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, kid+".pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	published, down := map[string]bool{"rsa": true, "ec": true}, false
	var idp *httptest.Server
	issuer := ""
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": issuer, "jwks_uri": idp.URL + "/keys"})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		var set jwkset.JWKSMarshal
		for kid := range published {
			j, err := jwkset.NewJWKFromKey(keys[kid].Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}})
			if err != nil {
				t.Error(err)
				return
			}
			set.Keys = append(set.Keys, j.Marshal())
		}
		_ = json.NewEncoder(w).Encode(set)
	})
	// Exact paths only, as at a real provider (no redirect of "//").
	idp = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/keys" && r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	issuer = "http://" + idp.Listener.Addr().String() + "/"
	idp.Start()
	t.Cleanup(idp.Close)
	const aud = "https://orders.test"
	secret, previous := strings.Repeat("n", 40), strings.Repeat("o", 40)
	s := startE2E(t, map[string]string{
		"JWT_ISSUER": issuer, "JWT_AUDIENCE": aud,
		"JWT_ROLE_CLAIM": "app_metadata.role", "JWT_STAFF_ROLES": "admin,support",
		"JWT_SECRET": secret, "JWT_SECRET_PREVIOUS": previous,
	}, nil)

	// Customer tokens from `changecast token -key`.
	mint := func(kid, sub string, extra ...string) string {
		var out, errOut bytes.Buffer
		args := append([]string{"token", "-sub", sub, "-key", filepath.Join(dir, kid+".pem"), "-kid", kid, "-iss", issuer}, extra...)
		if err := runBinary(context.Background(), args, nil, &out, &errOut); err != nil {
			t.Fatalf("changecast %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
		}
		return strings.TrimSpace(out.String())
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	staffToken := func(kid string) string {
		c := jwt.MapClaims{"sub": "google-oauth2|77", "iss": issuer, "aud": []string{aud}, "exp": time.Now().Add(time.Hour).Unix(),
			"app_metadata": map[string]any{"role": []string{"user", "support"}}}
		tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		tk.Header["kid"] = kid
		str, err := tk.SignedString(keys["ed"])
		if err != nil {
			t.Fatal(err)
		}
		return str
	}
	staff := bearer(staffToken("ed")) // its key is published after start
	if st, _ := doJSON(t, "GET", s.URL+"/api/orders", nil, bearer(mint("rsa", "alice", "-aud", "https://other.test")), nil); st != http.StatusUnauthorized {
		t.Errorf("another audience: %d, want 401", st)
	}
	for _, tc := range []struct{ kid, sub string }{{"rsa", "auth0|123"}, {"ec", "user/42"}} {
		tok := mint(tc.kid, tc.sub, "-aud", aud)
		var o store.Order
		body := map[string]any{"customer": tc.sub, "items": []map[string]any{{"sku": "pizza", "qty": 1}}}
		if st, _ := doJSON(t, "POST", s.URL+"/api/orders", body, bearer(tok), &o); st != http.StatusCreated {
			t.Fatalf("%s (%s) creates an order: %d, want 201", tc.sub, tc.kid, st)
		}
		var page struct{ Orders []store.Order }
		if st, _ := doJSON(t, "GET", s.URL+"/api/orders", nil, bearer(tok), &page); st != http.StatusOK || len(page.Orders) != 1 || page.Orders[0].ID != o.ID {
			t.Fatalf("%s lists its orders: %d %+v", tc.sub, st, page.Orders)
		}
		topic := store.CustomerTopic(tc.sub)
		c := watch(t, s.URL+"/api/events?topic="+url.QueryEscape(topic)+"&access_token="+tok, "")
		c.WaitFor(t, "the snapshot of "+topic, func(evs []sseclient.Event) bool {
			return len(evs) > 0 && evs[0].Name == "snapshot" && strings.Contains(string(evs[0].Data), o.ID)
		})
		if tc.kid == "rsa" {
			// The staff key is published now: accepted without a restart.
			mu.Lock()
			published["ed"] = true
			mu.Unlock()
		}
		if st, _ := doJSON(t, "PATCH", s.URL+"/api/orders/"+o.ID, map[string]string{"status": "preparing"}, staff, nil); st != http.StatusOK {
			t.Fatalf("staff (nested role, key added after start) advances %s's order: %d, want 200", tc.sub, st)
		}
		c.WaitFor(t, "the change on "+topic, func(evs []sseclient.Event) bool {
			return len(evs) > 1 && strings.Contains(string(evs[len(evs)-1].Data), store.StatusPreparing)
		})
		c.Stop(t)
	}
	// The previous HS256 secret during a rotation.
	old, err := handlers.IssueToken([]byte(previous), "bob", handlers.RoleCustomer, nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := doJSON(t, "GET", s.URL+"/api/orders", nil, bearer(old), nil); st != http.StatusOK {
		t.Errorf("a token of JWT_SECRET_PREVIOUS: %d, want 200", st)
	}
	// The key set down: tokens of known keys still work.
	mu.Lock()
	down = true
	mu.Unlock()
	if st, _ := doJSON(t, "GET", s.URL+"/api/orders", nil, staff, nil); st != http.StatusOK {
		t.Errorf("a known key with the key set down: %d, want 200", st)
	}
}
