package handlers

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// testIdP is a local identity provider: an OpenID discovery document at
// /.well-known/openid-configuration (its issuer has a trailing slash, as
// Auth0's does) and a JWK Set at /jwks that a test may change or take down.
type testIdP struct {
	srv     *httptest.Server
	issuer  string
	fetches atomic.Int32 // requests for the JWK Set

	mu   sync.Mutex
	keys map[string]crypto.Signer // by kid, published
	down bool
	// discoveryDown makes down take discovery down too.
	discoveryDown bool
}

// idpKeys are one key of each kind, made once (RSA is slow to make).
var idpKeys = sync.OnceValue(func() map[string]crypto.Signer {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	r2, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return map[string]crypto.Signer{"rsa": r, "ec": ec, "ed": ed, "rsa-new": r2}
})

func newTestIdP(tb testing.TB, kids ...string) *testIdP {
	tb.Helper()
	p := &testIdP{keys: map[string]crypto.Signer{}}
	for _, k := range kids {
		p.keys[k] = idpKeys()[k]
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		down := p.down && p.discoveryDown
		p.mu.Unlock()
		if down {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": p.issuer, "jwks_uri": p.srv.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var set jwkset.JWKSMarshal
		for kid, k := range p.keys {
			j, err := jwkset.NewJWKFromKey(k.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid}})
			if err != nil {
				tb.Error(err)
				return
			}
			set.Keys = append(set.Keys, j.Marshal())
		}
		_ = json.NewEncoder(w).Encode(set)
	})
	// Exact paths only: a discovery URL with a doubled slash is 404 here, as
	// at a real provider (ServeMux would redirect it to the clean path).
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks" && r.URL.Path != "/.well-known/openid-configuration" {
			http.NotFound(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	tb.Cleanup(p.srv.Close)
	p.issuer = p.srv.URL + "/"
	return p
}

func (p *testIdP) publish(kid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = idpKeys()[kid]
}

func (p *testIdP) remove(kid string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.keys, kid)
}

func (p *testIdP) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// idpToken signs claims with the key kid (any of idpKeys), with the
// algorithm of that key unless method says otherwise.
func idpToken(tb testing.TB, kid string, method jwt.SigningMethod, claims jwt.MapClaims) string {
	tb.Helper()
	key := idpKeys()[kid]
	if method == nil {
		switch key.(type) {
		case *rsa.PrivateKey:
			method = jwt.SigningMethodRS256
		case *ecdsa.PrivateKey:
			method = jwt.SigningMethodES256
		default:
			method = jwt.SigningMethodEdDSA
		}
	}
	t := jwt.NewWithClaims(method, claims)
	t.Header["kid"] = kid
	s, err := t.SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// idpClaims are valid claims of p for sub, valid for an hour.
func (p *testIdP) claims(sub string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{"sub": sub, "iss": p.issuer, "aud": []string{"https://api.test", "other"}, "exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "role": "customer"}
}

// idpEnv runs the server with p as its identity provider (found by
// discovery from the issuer alone) and testSecret.
func idpEnv(t *testing.T, p *testIdP, change ...func(*IdP)) *env {
	idp := IdP{Issuer: p.issuer, Audience: "https://api.test"}
	for _, f := range change {
		f(&idp)
	}
	return newEnv(t, func(c *Config) { c.IdP = idp; c.Ctx = t.Context() })
}

func mustStatusText(t *testing.T, r response, status int, text string) {
	t.Helper()
	if r.status != status || !strings.Contains(r.errText(), text) {
		t.Errorf("got %d %s, want %d %q", r.status, r.body, status, text)
	}
}

// TestIdPTokens: RS256, ES256 and EdDSA tokens of a key in the identity
// provider's set are accepted; the algorithm must be the key's; iss, aud,
// exp (with the stated leeway), kid and the alg none are checked; an HMAC
// token whose secret is the provider's public key is refused.
func TestIdPTokens(t *testing.T) {
	p := newTestIdP(t, "rsa", "ec", "ed")
	e := idpEnv(t, p)
	for _, kid := range []string{"rsa", "ec", "ed"} {
		r := e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, kid, nil, p.claims("alice"))})
		mustStatus(t, r, http.StatusOK)
	}
	with := func(k string, v any) jwt.MapClaims {
		c := p.claims("alice")
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	pubDER, err := x509.MarshalPKIXPublicKey(idpKeys()["rsa"].Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	// The algorithm confusion attack: HMAC keyed with the public key, the
	// header saying HS256 or RS256.
	hmacPub := func(alg string) string {
		enc := func(v any) string {
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			return base64.RawURLEncoding.EncodeToString(b)
		}
		signing := enc(map[string]string{"alg": alg, "typ": "JWT", "kid": "rsa"}) + "." + enc(p.claims("alice"))
		mac := hmac.New(sha256.New, pubPEM)
		mac.Write([]byte(signing))
		return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
	}
	none := jwt.NewWithClaims(jwt.SigningMethodNone, p.claims("alice"))
	none.Header["kid"] = "rsa"
	noneTok, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// An EC key's token claiming ES384 (the key is P-256): the alg is the key's.
	es384 := func() string {
		tk := jwt.NewWithClaims(jwt.SigningMethodES384, p.claims("alice"))
		tk.Header["kid"] = "ec"
		signing, err := tk.SigningString()
		if err != nil {
			t.Fatal(err)
		}
		sig, err := jwt.SigningMethodES256.Sign(signing, idpKeys()["ec"])
		if err != nil {
			t.Fatal(err)
		}
		return signing + "." + base64.RawURLEncoding.EncodeToString(sig)
	}()
	// RS256 signed with the RSA key but claiming PS256 in the header.
	ps256 := idpToken(t, "rsa", jwt.SigningMethodPS256, p.claims("alice"))
	// A token signed by the EC key but naming the RSA kid.
	swapped := func() string {
		tk := jwt.NewWithClaims(jwt.SigningMethodES256, p.claims("alice"))
		tk.Header["kid"] = "rsa"
		s, err := tk.SignedString(idpKeys()["ec"])
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	now := time.Now()
	for _, tt := range []struct {
		name, tok, want string
	}{
		{"wrong iss", idpToken(t, "rsa", nil, with("iss", "https://evil.test/")), "iss"},
		{"no iss", idpToken(t, "rsa", nil, with("iss", nil)), "iss"},
		{"wrong aud", idpToken(t, "ec", nil, with("aud", "https://other.test")), "aud"},
		{"no aud", idpToken(t, "ec", nil, with("aud", nil)), "aud"},
		{"expired past the leeway", idpToken(t, "ed", nil, with("exp", now.Add(-time.Minute).Unix())), "expired"},
		{"no exp", idpToken(t, "ed", nil, with("exp", nil)), "expiry"},
		{"nbf past the leeway", idpToken(t, "rsa", nil, with("nbf", now.Add(time.Minute).Unix())), "invalid"},
		{"iat in the future past the leeway", idpToken(t, "rsa", nil, with("iat", now.Add(time.Minute).Unix())), "invalid"},
		{"unknown kid", idpToken(t, "rsa-new", nil, p.claims("alice")), "kid"},
		{"alg none", noneTok, "invalid"},
		{"HMAC with the public key", hmacPub("HS256"), "invalid"},
		{"HMAC with the public key, header RS256", hmacPub("RS256"), "invalid"},
		{"alg not the key's (ES384)", es384, "invalid"},
		{"alg not the key's (PS256)", ps256, "invalid"},
		{"key of another kid", swapped, "alg"},
		{"no sub", idpToken(t, "rsa", nil, with("sub", nil)), "subject"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, req{method: "GET", path: "/api/orders", token: tt.tok})
			mustStatusText(t, r, http.StatusUnauthorized, tt.want)
		})
	}
	// Within the leeway (30 s): exp 10 s ago, nbf and iat 10 s ahead.
	skew := with("exp", now.Add(-10*time.Second).Unix())
	skew["nbf"] = now.Add(10 * time.Second).Unix()
	skew["iat"] = now.Add(10 * time.Second).Unix()
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "ed", nil, skew)}), http.StatusOK)
	// The server's own HS256 tokens keep working beside the provider's.
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders", token: token(t, "bob", RoleCustomer)}), http.StatusOK)
}

// TestIdPWithoutSecret: with only an identity provider (JWKS_URL), an
// HS256 token is refused, whatever its secret.
func TestIdPWithoutSecret(t *testing.T) {
	p := newTestIdP(t, "rsa")
	e := newEnv(t, func(c *Config) { c.Secret = nil; c.IdP = IdP{JWKSURL: p.srv.URL + "/jwks"}; c.Ctx = t.Context() })
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "rsa", nil, p.claims("alice"))}), http.StatusOK)
	mustStatusText(t, e.do(t, req{method: "GET", path: "/api/orders", token: token(t, "alice", RoleCustomer)}), http.StatusUnauthorized, "invalid")
	empty, err := jwt.NewWithClaims(jwt.SigningMethodHS256, p.claims("alice")).SignedString([]byte{0})
	if err != nil {
		t.Fatal(err)
	}
	mustStatusText(t, e.do(t, req{method: "GET", path: "/api/orders", token: empty}), http.StatusUnauthorized, "invalid")
}

// TestIdPKeyAddedAfterStart: a token of a key the provider publishes
// after start is accepted at once (the set is fetched again for its
// unknown kid); made-up kids after that cost no fetch within MinRefresh.
func TestIdPKeyAddedAfterStart(t *testing.T) {
	p := newTestIdP(t, "rsa")
	e := idpEnv(t, p, func(i *IdP) { i.MinRefresh = time.Hour })
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "rsa", nil, p.claims("alice"))}), http.StatusOK)
	p.publish("ec")
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "ec", nil, p.claims("alice"))}), http.StatusOK)
	before := p.fetches.Load()
	p.publish("ed")
	for range 20 {
		c := p.claims("alice")
		tk := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
		tk.Header["kid"] = "made-up"
		s, err := tk.SignedString(idpKeys()["ed"])
		if err != nil {
			t.Fatal(err)
		}
		mustStatusText(t, e.do(t, req{method: "GET", path: "/api/orders", token: s}), http.StatusUnauthorized, "kid")
	}
	mustStatusText(t, e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "ed", nil, p.claims("alice"))}), http.StatusUnauthorized, "kid")
	if n := p.fetches.Load() - before; n != 0 {
		t.Errorf("%d fetches of the key set for unknown kids within MinRefresh, want 0", n)
	}
}

// TestIdPDown: the key set down at start, the server starts and answers
// the provider's tokens 503 with Retry-After (HS256 tokens still work);
// once it answers, they are accepted; down again, tokens of known keys
// still are, and an unknown kid is 503.
func TestIdPDown(t *testing.T) {
	p := newTestIdP(t, "rsa", "ec")
	p.setDown(true)
	e := idpEnv(t, p, func(i *IdP) { i.MinRefresh = time.Millisecond })
	r := e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "rsa", nil, p.claims("alice"))})
	mustStatusText(t, r, http.StatusServiceUnavailable, "key set")
	if r.header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After: %v", r.header)
	}
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders", token: token(t, "bob", RoleCustomer)}), http.StatusOK)
	p.setDown(false)
	time.Sleep(5 * time.Millisecond) // past MinRefresh
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "rsa", nil, p.claims("alice"))}), http.StatusOK)
	p.setDown(true)
	time.Sleep(5 * time.Millisecond)
	mustStatusText(t, e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "ed", nil, p.claims("alice"))}), http.StatusServiceUnavailable, "key set")
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "ec", nil, p.claims("alice"))}), http.StatusOK)
}

// TestPreviousSecret: during a rotation a token signed with the previous
// secret is accepted beside the current one's; any other secret is not.
func TestPreviousSecret(t *testing.T) {
	old := []byte("the-previous-secret-of-changecast-tests")
	e := newEnv(t, func(c *Config) { c.SecretPrevious = old })
	for _, tt := range []struct {
		secret []byte
		want   int
	}{{testSecret, http.StatusOK}, {old, http.StatusOK}, {[]byte("yet-another-secret-of-changecast-tests"), http.StatusUnauthorized}} {
		tok, err := IssueToken(tt.secret, "alice", RoleCustomer, nil, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders", token: tok}), tt.want)
	}
}

// TestIdPClaimNames: the role and rooms come from the dot paths set, as
// a string or an array; a role in StaffRoles is staff, any other a
// customer.
func TestIdPClaimNames(t *testing.T) {
	p := newTestIdP(t, "ec")
	e := idpEnv(t, p, func(i *IdP) {
		i.RoleClaim, i.RoomsClaim, i.StaffRoles = "app_metadata.role", "https://changecast/rooms", []string{"admin", "support"}
	})
	mk := func(role any, rooms any) string {
		c := p.claims("auth0|42")
		delete(c, "role")
		c["app_metadata"] = map[string]any{"role": role}
		c["https://changecast/rooms"] = rooms
		return idpToken(t, "ec", nil, c)
	}
	// Staff sees another customer's list; a customer does not.
	for _, tt := range []struct {
		name       string
		role       any
		wantOrders int
	}{
		{"staff as a string", "admin", http.StatusOK},
		{"staff in an array", []string{"user", "support"}, http.StatusOK},
		{"customer", "user", http.StatusForbidden},
		{"top-level role ignored", nil, http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, req{method: "GET", path: "/api/orders?customer=bob", token: mk(tt.role, []string{"lobby"})})
			if (r.status == http.StatusOK) != (tt.wantOrders == http.StatusOK) {
				t.Errorf("GET /api/orders?customer=bob as role %v: %d %s", tt.role, r.status, r.body)
			}
		})
	}
	// The rooms claim, an array or one string.
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/rooms/lobby/messages", token: mk("user", []string{"lobby", "kitchen"})}), http.StatusOK)
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/rooms/kitchen/messages", token: mk("user", "kitchen")}), http.StatusOK)
	r := e.do(t, req{method: "GET", path: "/api/rooms/lobby/messages", token: mk("user", "kitchen")})
	if r.status == http.StatusOK {
		t.Errorf("room not in the token's rooms claim: %d", r.status)
	}
}

// TestIdPSubjects: subjects with | and / in a JWKS token round-trip:
// their orders, GET /api/orders and the customers/<sub> topic.
func TestIdPSubjects(t *testing.T) {
	p := newTestIdP(t, "rsa", "ed")
	e := idpEnv(t, p)
	for _, sub := range []string{"auth0|123", "google-oauth2|1043", "user/42"} {
		t.Run(sub, func(t *testing.T) {
			subjectRoundTrip(t, e, sub, idpToken(t, "rsa", nil, p.claims(sub)))
		})
	}
}

// TestIdPBackgroundRefresh: the key set is fetched again every Refresh
// without a token asking: a key published meanwhile is accepted with no
// fetch for its kid left (MinRefresh spent), and a key withdrawn is
// refused.
func TestIdPBackgroundRefresh(t *testing.T) {
	p := newTestIdP(t, "rsa")
	e := idpEnv(t, p, func(i *IdP) { i.Refresh, i.MinRefresh = 20*time.Millisecond, time.Hour })
	// Spend the one fetch an unknown kid may make.
	mustStatusText(t, e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "ec", nil, p.claims("alice"))}), http.StatusUnauthorized, "kid")
	p.publish("ec")
	p.remove("rsa")
	deadline := time.Now().Add(waitTimeout)
	for {
		ec := e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "ec", nil, p.claims("alice"))})
		rs := e.do(t, req{method: "GET", path: "/api/orders", token: idpToken(t, "rsa", nil, p.claims("alice"))})
		if ec.status == http.StatusOK && rs.status == http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after background refreshes (%d fetches): the new key's token %d, the withdrawn key's %d", p.fetches.Load(), ec.status, rs.status)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIdPDiscoveryDown: with JWT_ISSUER alone and the provider down at
// start (discovery too), the server starts; its tokens are 503 until the
// provider answers, then accepted.
func TestIdPDiscoveryDown(t *testing.T) {
	p := newTestIdP(t, "ed")
	p.down, p.discoveryDown = true, true
	e := idpEnv(t, p, func(i *IdP) { i.MinRefresh = time.Millisecond })
	tok := idpToken(t, "ed", nil, p.claims("alice"))
	mustStatusText(t, e.do(t, req{method: "GET", path: "/api/orders", token: tok}), http.StatusServiceUnavailable, "key set")
	p.setDown(false)
	time.Sleep(5 * time.Millisecond) // past MinRefresh
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders", token: tok}), http.StatusOK)
}
