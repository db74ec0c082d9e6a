package handlers

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/labstack/echo/v4"

	"changecast/store"
)

// Where a request may carry its token, in the order they are tried.
const (
	// CookieName is the cookie that may carry the token.
	CookieName = "changecast_token"
	// QueryTokenParam is the query parameter that may carry the token (for
	// EventSource, which cannot set headers). Its value is never logged.
	QueryTokenParam = "access_token"
)

// signingMethod is the only algorithm accepted: tokens are signed with a
// shared secret, and anything else ("none", RS256 with the secret taken as
// a public key) is refused before the signature is checked.
var signingMethod = jwt.SigningMethodHS256

// devPrincipal is everyone in dev mode.
var devPrincipal = Principal{Subject: "dev", Role: RoleStaff, Rooms: []string{"*"}, Dev: true}

// claims are the token's claims.
type claims struct {
	Role  string   `json:"role"`
	Rooms []string `json:"rooms"`
	jwt.RegisteredClaims
}

// IssueToken returns an HS256 token signed with secret for subject sub
// with role (RoleCustomer or RoleStaff) and rooms ("*" for all), issued at
// now and expiring ttl later. It returns an error for an empty secret, an
// invalid subject, role or room, or a ttl that is not positive. It is safe
// for concurrent use.
func IssueToken(secret []byte, sub, role string, rooms []string, ttl time.Duration, now time.Time) (string, error) {
	if len(secret) == 0 {
		return "", errors.New("issue token: empty secret")
	}
	if err := checkSubject(sub); err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	if role != RoleCustomer && role != RoleStaff {
		return "", fmt.Errorf("issue token: role %q is not %s or %s", role, RoleCustomer, RoleStaff)
	}
	for _, r := range rooms {
		if r != "*" && !store.ValidRoom(r) {
			return "", fmt.Errorf("issue token: room %q is not a valid room name", r)
		}
	}
	if ttl <= 0 {
		return "", fmt.Errorf("issue token: ttl %s is not positive", ttl)
	}
	if rooms == nil {
		rooms = []string{}
	}
	c := claims{
		Role:  role,
		Rooms: rooms,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
	tok, err := jwt.NewWithClaims(signingMethod, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("issue token: %w", err)
	}
	return tok, nil
}

// checkSubject accepts what the store accepts as a customer or author:
// 1 to store.MaxNameLen bytes of UTF-8 without control characters (C0,
// DEL or C1).
func checkSubject(sub string) error {
	if sub == "" || len(sub) > store.MaxNameLen || !utf8.ValidString(sub) {
		return fmt.Errorf("subject must be 1 to %d bytes of UTF-8", store.MaxNameLen)
	}
	if hasControl(sub) {
		return errors.New("subject has a control character")
	}
	return nil
}

// authenticator checks tokens. It is safe for concurrent use.
type authenticator struct {
	secret []byte
	// previous is an older secret still accepted during a rotation.
	previous []byte
	parser   *jwt.Parser
	// idp, keys and idpParser check an identity provider's tokens; keys
	// is nil when none is configured.
	idp       IdP
	keys      *keySet
	idpParser *jwt.Parser
}

func newAuthenticator(secret []byte, now func() time.Time) *authenticator {
	return &authenticator{
		secret: secret,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{signingMethod.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithTimeFunc(now),
			jwt.WithStrictDecoding(), // one token, one spelling
		),
	}
}

// withIdP makes a accept the tokens of idp too, fetching its key set
// until ctx ends.
func (a *authenticator) withIdP(ctx context.Context, idp IdP, now func() time.Time) {
	if idp.RoleClaim == "" {
		idp.RoleClaim = "role"
	}
	if idp.RoomsClaim == "" {
		idp.RoomsClaim = "rooms"
	}
	if len(idp.StaffRoles) == 0 {
		idp.StaffRoles = []string{RoleStaff}
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(idpMethods),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(idpLeeway),
		jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding(),
	}
	if idp.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(idp.Issuer))
	}
	if idp.Audience != "" {
		opts = append(opts, jwt.WithAudience(idp.Audience))
	}
	a.idp, a.idpParser = idp, jwt.NewParser(opts...)
	a.keys = newKeySet(ctx, idp)
}

// MaxTokenLen is the longest token accepted, in bytes (8 KiB). A token of
// changecast is a few hundred bytes, and a long list of rooms a few KiB;
// a longer one is refused before any decoding or signature work.
const MaxTokenLen = 8 << 10

// principal returns who the token names, or an error for the client
// saying why it is refused (never the token itself). Beyond what the JWT
// library checks, it refuses a token over MaxTokenLen, one with a "crit"
// header (RFC 7515 §4.1.11: this server understands no extension, so
// it must refuse any it is told is critical) and one whose exp is not a
// JSON number (the library also takes a string holding a number).
func (a *authenticator) principal(token string) (Principal, error) {
	if len(token) > MaxTokenLen {
		return Principal{}, fmt.Errorf("token is longer than %d bytes", MaxTokenLen)
	}
	if a.keys != nil && headerAlg(token) != signingMethod.Alg() {
		return a.idpPrincipal(a.keys.ctx, token)
	}
	var c claims
	tok, err := a.parser.ParseWithClaims(token, &c, a.hmacKey)
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Principal{}, errors.New("token expired")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return Principal{}, errors.New("token has no expiry")
	case err != nil:
		return Principal{}, errors.New("invalid token")
	}
	if err := a.checkVerified(tok, token, c.Subject); err != nil {
		return Principal{}, err
	}
	if c.Role != RoleCustomer && c.Role != RoleStaff {
		return Principal{}, errors.New("token role must be customer or staff")
	}
	return Principal{
		Subject: c.Subject,
		Role:    c.Role,
		Rooms:   c.Rooms,
		Expires: c.ExpiresAt.Time,
	}, nil
}

// checkVerified applies what every token whose signature checked out must
// also pass, whoever signed it: no crit header (no extension is
// supported), a numeric exp, and a subject the store accepts (sub).
func (a *authenticator) checkVerified(tok *jwt.Token, token, sub string) error {
	if _, ok := tok.Header["crit"]; ok {
		return errors.New("token has a crit header; no extension is supported")
	}
	if !a.expIsNumber(token) {
		return errors.New("token exp must be a number")
	}
	if err := checkSubject(sub); err != nil {
		return errors.New("the token's " + err.Error())
	}
	return nil
}

// hmacKey returns the HS256 secrets a token may be signed with: the
// current one, and the previous one during a rotation.
func (a *authenticator) hmacKey(*jwt.Token) (any, error) {
	if len(a.secret) == 0 {
		return nil, errors.New("no secret")
	}
	if len(a.previous) == 0 {
		return a.secret, nil
	}
	return jwt.VerificationKeySet{Keys: []jwt.VerificationKey{a.secret, a.previous}}, nil
}

// headerAlg returns the alg of token's header, or "" if it has none.
func headerAlg(token string) string {
	head, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return ""
	}
	var h struct {
		Alg string `json:"alg"`
	}
	if json.Unmarshal(b, &h) != nil {
		return ""
	}
	return h.Alg
}

// expIsNumber reports whether the exp claim of token, a token the parser
// has accepted (so its payload decodes), is a JSON number.
func (a *authenticator) expIsNumber(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	payload, err := a.parser.DecodeSegment(parts[1])
	if err != nil {
		return false
	}
	var p struct {
		Exp json.RawMessage `json:"exp"`
	}
	if err := json.Unmarshal(payload, &p); err != nil || len(p.Exp) == 0 {
		return false
	}
	return p.Exp[0] == '-' || (p.Exp[0] >= '0' && p.Exp[0] <= '9')
}

// tokenFrom returns the request's token: from the Authorization header
// (Bearer), else the changecast_token cookie, else the access_token query
// parameter. An Authorization header of another scheme is an error.
func tokenFrom(c echo.Context) (string, error) {
	r := c.Request()
	if h := r.Header.Get(echo.HeaderAuthorization); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", errors.New("the Authorization header must be Bearer <token>")
		}
		return strings.TrimSpace(tok), nil
	}
	if ck, err := r.Cookie(CookieName); err == nil && ck.Value != "" {
		return ck.Value, nil
	}
	if tok := c.QueryParam(QueryTokenParam); tok != "" {
		return tok, nil
	}
	return "", errors.New("a token is required")
}

// authenticate is the middleware of every /api route: it puts the
// request's Principal in the request context, or answers 401. In dev mode
// every request is the dev principal.
func (s *server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := devPrincipal
		if !s.dev {
			tok, err := tokenFrom(c)
			if err == nil {
				p, err = s.auth.principal(tok)
			}
			var ae *authError
			if errors.As(err, &ae) && ae.status == http.StatusServiceUnavailable {
				// The key set is down, not the token wrong: try again.
				c.Response().Header().Set("Retry-After", "10")
				return errorf(ae.status, "%s", ae.msg)
			}
			if err != nil {
				c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="changecast"`)
				return errorf(http.StatusUnauthorized, "%s", err.Error())
			}
		}
		c.Set(ctxKeySubject, p.Subject)
		r := c.Request()
		c.SetRequest(r.WithContext(WithPrincipal(r.Context(), p)))
		return next(c)
	}
}

// principal returns the request's principal. Outside authenticate (a
// wiring mistake) it is the zero Principal, which may do nothing.
func principal(c echo.Context) Principal {
	p, _ := PrincipalFrom(c.Request().Context())
	return p
}
