package handlers

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"changecast/store"
)

// IdP is an identity provider whose tokens are accepted beside (or instead
// of) those signed with the HS256 secret: RS256, ES256 or EdDSA tokens
// signed with a key of its JWK Set. Its zero value is off.
type IdP struct {
	// JWKSURL is the JWK Set's URL. Empty with Issuer set: it is found by
	// OpenID discovery at <Issuer>/.well-known/openid-configuration.
	JWKSURL string
	// Issuer, when set, must be every token's "iss", exactly.
	Issuer string
	// Audience, when set, must be one of every token's "aud".
	Audience string
	// RoleClaim and RoomsClaim are dot paths to the role and the rooms in
	// the token's claims ("app_metadata.role"); empty: "role", "rooms".
	RoleClaim, RoomsClaim string
	// StaffRoles are the role values that mean staff; empty: "staff".
	// Any other role, or none, is a customer.
	StaffRoles []string
	// Client fetches the key set; nil: a client with a 10 s timeout.
	Client *http.Client
	// Refresh is how often the key set is fetched again; 0: 10 minutes.
	Refresh time.Duration
	// MinRefresh is the least time between two fetches made for a token
	// whose kid the set does not have; 0: 10 s.
	MinRefresh time.Duration
}

// On reports whether tokens of an identity provider are accepted.
func (p IdP) On() bool { return p.JWKSURL != "" || p.Issuer != "" }

// idpLeeway is the clock skew allowed on an identity provider's exp, nbf
// and iat: its clock is not ours.
const idpLeeway = 30 * time.Second

// idpMethods are the algorithms an identity provider's token may use;
// which one a token must use is decided by its key (keyAlg).
var idpMethods = []string{"RS256", "ES256", "EdDSA"}

// keySet is an identity provider's JWK Set, fetched at start, again every
// Refresh in the background, and on a token with an unknown kid (at most
// once per MinRefresh, so made-up kids cost no fetch). It is safe for
// concurrent use.
type keySet struct {
	cfg     IdP
	ctx     context.Context
	client  *http.Client
	limiter *rate.Limiter
	// down is true while the last fetch (or discovery) failed.
	down atomic.Bool

	// starting is held by the one start at a time; mu guards the
	// storages it sets.
	starting sync.Mutex
	mu       sync.Mutex
	cached   jwkset.Storage // the keys in memory; nil until discovered
	remote   jwkset.Storage // fetches on a KeyRead of an unknown kid
}

// newKeySet starts fetching the key set of cfg until ctx ends. A key set
// (or discovery) that cannot be fetched now is tried again later; until
// it is, its tokens are answered 503.
func newKeySet(ctx context.Context, cfg IdP) *keySet {
	if cfg.Refresh <= 0 {
		cfg.Refresh = 10 * time.Minute
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = 10 * time.Second
	}
	client := cfg.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	k := &keySet{cfg: cfg, ctx: ctx, limiter: rate.NewLimiter(rate.Every(cfg.MinRefresh), 1)}
	k.client = &http.Client{Timeout: client.Timeout, Transport: watchTransport{k: k, next: client.Transport}}
	k.start()
	return k
}

// watchTransport records whether the key set's endpoint answers.
type watchTransport struct {
	k    *keySet
	next http.RoundTripper
}

func (w watchTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	next := w.next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(r)
	w.k.down.Store(err != nil || resp.StatusCode != http.StatusOK)
	return resp, err
}

// start discovers the key set's URL if need be and starts fetching it,
// unless an earlier start has.
func (k *keySet) start() {
	k.starting.Lock()
	defer k.starting.Unlock()
	if c, _ := k.storages(); c != nil {
		return
	}
	u := k.cfg.JWKSURL
	if u == "" {
		var err error
		if u, err = k.discover(); err != nil {
			k.down.Store(true)
			return
		}
	}
	cached, err := jwkset.NewStorageFromHTTP(u, jwkset.HTTPClientStorageOptions{
		Client:                    k.client,
		Ctx:                       k.ctx,
		HTTPTimeout:               10 * time.Second,
		NoErrorReturnFirstHTTPReq: true, // start; tokens get 503 until it answers
		RefreshErrorHandler:       func(context.Context, error) { k.down.Store(true) },
		RefreshInterval:           k.cfg.Refresh,
	})
	if err != nil {
		k.down.Store(true)
		return
	}
	remote, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{u: cached},
		// keySet.key rate-limits; the client refreshes whenever asked.
		RefreshUnknownKID: rate.NewLimiter(rate.Inf, 1),
	})
	if err != nil {
		k.down.Store(true)
		return
	}
	k.mu.Lock()
	k.cached, k.remote = cached, remote
	k.mu.Unlock()
}

func (k *keySet) storages() (cached, remote jwkset.Storage) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cached, k.remote
}

// discover returns the jwks_uri of the issuer's OpenID configuration. An
// issuer with a trailing slash (Auth0's) is joined without doubling it.
func (k *keySet) discover() (string, error) {
	ctx, cancel := context.WithTimeout(k.ctx, 10*time.Second)
	defer cancel()
	u := strings.TrimSuffix(k.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discovery: %s answered %d", u, resp.StatusCode)
	}
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(&doc); err != nil || doc.JWKSURI == "" {
		return "", fmt.Errorf("discovery: %s has no jwks_uri", u)
	}
	return doc.JWKSURI, nil
}

// errKeySetDown answers a token whose key is unknown while the key set
// cannot be fetched: the client should try again, not sign the user out.
var errKeySetDown = &authError{status: http.StatusServiceUnavailable, msg: "the identity provider's key set cannot be fetched; try again later"}

// key returns the key of kid, fetching the set again (rate-limited) when
// it has none.
func (k *keySet) key(ctx context.Context, kid string) (jwkset.JWK, error) {
	cached, remote := k.storages()
	if cached == nil && k.limiter.Allow() {
		k.start()
		cached, remote = k.storages()
	}
	if cached == nil {
		return jwkset.JWK{}, errKeySetDown
	}
	j, err := cached.KeyRead(ctx, kid)
	if errors.Is(err, jwkset.ErrKeyNotFound) && k.limiter.Allow() {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		j, err = remote.KeyRead(rctx, kid)
		cancel()
	}
	switch {
	case err == nil:
		return j, nil
	case k.down.Load():
		return jwkset.JWK{}, errKeySetDown
	}
	return jwkset.JWK{}, &authError{http.StatusUnauthorized, "token kid is not in the identity provider's key set"}
}

// keyAlg is the one algorithm key may verify: the key decides, never the
// token's header.
func keyAlg(key any) (string, bool) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return "RS256", k.N.BitLen() >= 2048
	case *ecdsa.PublicKey:
		return "ES256", k.Curve == elliptic.P256()
	case ed25519.PublicKey:
		return "EdDSA", true
	}
	return "", false
}

// keyfunc returns the public key that must have signed t: the key set's
// key of t's kid, if the key's algorithm (and the JWK's "alg", if any) is
// the token's.
func (k *keySet) keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, &authError{http.StatusUnauthorized, "token has no kid"}
		}
		j, err := k.key(ctx, kid)
		if err != nil {
			return nil, err
		}
		key := j.Key()
		if pk, ok := key.(interface{ Public() crypto.PublicKey }); ok {
			key = pk.Public()
		}
		alg, ok := keyAlg(key)
		if a := j.Marshal().ALG.String(); !ok || t.Method.Alg() != alg || (a != "" && a != alg) {
			return nil, &authError{http.StatusUnauthorized, "token alg is not its key's"}
		}
		return key, nil
	}
}

// authError is a refused token with its status (401 unless set).
type authError struct {
	status int
	msg    string
}

func (e *authError) Error() string { return e.msg }

// idpPrincipal returns who an identity provider's token names.
func (a *authenticator) idpPrincipal(ctx context.Context, token string) (Principal, error) {
	var mc jwt.MapClaims
	tok, err := a.idpParser.ParseWithClaims(token, &mc, a.keys.keyfunc(ctx))
	var ae *authError
	switch {
	case errors.As(err, &ae):
		return Principal{}, ae
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, errors.New("token expired")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && mc["exp"] == nil:
		return Principal{}, errors.New("token has no expiry")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && mc["iss"] == nil:
		return Principal{}, errors.New("token has no iss; JWT_ISSUER is set")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return Principal{}, errors.New("token has no aud; JWT_AUDIENCE is set")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return Principal{}, errors.New("token iss is not JWT_ISSUER")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return Principal{}, errors.New("token aud does not include JWT_AUDIENCE")
	case err != nil:
		return Principal{}, errors.New("invalid token")
	}
	sub, _ := mc["sub"].(string)
	if err := a.checkVerified(tok, token, sub); err != nil {
		return Principal{}, err
	}
	exp, _ := mc.GetExpirationTime()
	p := Principal{Subject: sub, Role: RoleCustomer, Expires: exp.Time}
	for _, r := range claimStrings(mc, a.idp.RoleClaim) {
		if slices.Contains(a.idp.StaffRoles, r) {
			p.Role = RoleStaff
		}
	}
	for _, r := range claimStrings(mc, a.idp.RoomsClaim) {
		if r == "*" || store.ValidRoom(r) {
			p.Rooms = append(p.Rooms, r)
		}
	}
	return p, nil
}

// claimStrings returns the claim at a dot path ("app_metadata.role"): a
// string, or the strings of an array; nothing for anything else.
func claimStrings(mc jwt.MapClaims, path string) []string {
	var v any = map[string]any(mc)
	for name := range strings.SplitSeq(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[name]
	}
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
