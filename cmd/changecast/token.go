package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"changecast/handlers"
	"changecast/store"
)

// tokenFlags are the token command's flags.
type tokenFlags struct {
	sub, role, rooms string
	ttl              durationFlag
	// key, kid, iss, aud: a token signed with a private key instead.
	key, kid, iss, aud string
}

// tokenCommand returns the token command's flags.
func tokenCommand() (*command, *tokenFlags) {
	f := tokenFlags{ttl: durationFlag(time.Hour)}
	c := &command{
		name:     "token",
		synopsis: "token -sub NAME [-role customer|staff] [-rooms ROOM,...] [-ttl 1h] [-key FILE.pem -kid KID [-iss URL] [-aud AUD]]",
		about:    "Print an HS256 token signed with JWT_SECRET (at least 32 bytes), for curl and tail; with -key, an RS256, ES256 or EdDSA token signed with that private key, for a local JWK Set (JWKS_URL).",
		fs:       flag.NewFlagSet("changecast token", flag.ContinueOnError),
	}
	c.fs.StringVar(&f.sub, "sub", "", "subject: the user name (required)")
	c.fs.StringVar(&f.role, "role", handlers.RoleCustomer, "role: customer or staff")
	c.fs.StringVar(&f.rooms, "rooms", "", "comma-separated rooms the token may read and post to; * for all")
	c.fs.Var(&f.ttl, "ttl", "how long the token is valid, such as 90m or 24h")
	c.fs.StringVar(&f.key, "key", "", "a PEM private key (RSA, EC P-256 or Ed25519; PKCS #8, PKCS #1 or SEC 1) to sign with instead of JWT_SECRET")
	c.fs.StringVar(&f.kid, "kid", "", "with -key: the kid of the key in the JWK Set (required)")
	c.fs.StringVar(&f.iss, "iss", "", "with -key: the iss claim (JWT_ISSUER)")
	c.fs.StringVar(&f.aud, "aud", "", "with -key: the aud claim (JWT_AUDIENCE)")
	return c, &f
}

// durationFlag is a positive duration flag whose error says what is wrong.
type durationFlag time.Duration

func (d *durationFlag) String() string { return time.Duration(*d).String() }

func (d *durationFlag) Set(s string) error {
	v, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return errors.New("not a duration: want a number with a unit (h, m or s), such as 90m or 24h")
	case v <= 0:
		return errors.New("not positive: want a duration such as 90m or 24h")
	}
	*d = durationFlag(v)
	return nil
}

// runToken prints a token signed with JWT_SECRET. It warns on stderr
// when the token names no room.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, f := tokenCommand()
	if err := c.parse(args, stdout); err != nil {
		return err
	}
	if c.fs.NArg() > 0 {
		return usagef("token", "unexpected argument %q (flags come as -name value)", c.fs.Arg(0))
	}
	if f.sub == "" {
		return usagef("token", "-sub is required: the user the token is for")
	}
	if f.role != handlers.RoleCustomer && f.role != handlers.RoleStaff {
		return usagef("token", "-role %q: want customer or staff", f.role)
	}
	var list []string
	for _, r := range strings.Split(f.rooms, ",") {
		if r = strings.TrimSpace(r); r != "" {
			if r != "*" && !store.ValidRoom(r) {
				return usagef("token", "-rooms: %q is not a valid room name", r)
			}
			list = append(list, r)
		}
	}
	if len(list) == 0 {
		fmt.Fprintln(stderr, "changecast: warning: no -rooms given: this token can read and post to no room (give -rooms lobby,kitchen or -rooms '*')")
	}
	if f.key != "" {
		tok, err := keyToken(f, list, time.Now())
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, tok)
		return nil
	}
	secret := strings.TrimSpace(getenv("JWT_SECRET"))
	switch {
	case secret == "":
		return errors.New("JWT_SECRET must be set (at least 32 bytes) to sign a token: the server's own")
	case len(secret) < 32:
		return errors.New("JWT_SECRET is too short (at least 32 bytes)")
	}
	tok, err := handlers.IssueToken([]byte(secret), f.sub, f.role, list, time.Duration(f.ttl), time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// keyToken returns a token signed with the private key in the PEM file
// f.key, with the algorithm of that key (RS256, ES256 or EdDSA), the kid
// f.kid and the claims role and rooms (the default JWT_ROLE_CLAIM and
// JWT_ROOMS_CLAIM).
func keyToken(f *tokenFlags, rooms []string, now time.Time) (string, error) {
	if f.kid == "" {
		return "", usagef("token", "-kid is required with -key: the key's kid in the JWK Set")
	}
	b, err := os.ReadFile(f.key)
	if err != nil {
		return "", fmt.Errorf("-key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return "", fmt.Errorf("-key %s: no PEM block", f.key)
	}
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			key, err = x509.ParseECPrivateKey(block.Bytes)
		}
	}
	if err != nil {
		return "", fmt.Errorf("-key %s: not an RSA, EC or Ed25519 private key", f.key)
	}
	var method jwt.SigningMethod
	switch k := key.(type) {
	case *rsa.PrivateKey:
		method = jwt.SigningMethodRS256
	case *ecdsa.PrivateKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("-key %s: an EC key must be on P-256 (ES256)", f.key)
		}
		method = jwt.SigningMethodES256
	case ed25519.PrivateKey:
		method = jwt.SigningMethodEdDSA
	default:
		return "", fmt.Errorf("-key %s: not an RSA, EC or Ed25519 private key", f.key)
	}
	if rooms == nil {
		rooms = []string{}
	}
	c := jwt.MapClaims{"sub": f.sub, "role": f.role, "rooms": rooms, "iat": now.Unix(), "exp": now.Add(time.Duration(f.ttl)).Unix()}
	if f.iss != "" {
		c["iss"] = f.iss
	}
	if f.aud != "" {
		c["aud"] = f.aud
	}
	t := jwt.NewWithClaims(method, c)
	t.Header["kid"] = f.kid
	return t.SignedString(key)
}
