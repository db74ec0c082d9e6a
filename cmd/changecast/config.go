package main

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"changecast/handlers"
)

// config is everything the server reads from its environment, read once.
type config struct {
	Port          int
	MongoURI      string
	MongoDatabase string
	DataDir       string
	JWTSecret     string
	// JWTSecretPrevious is an older HS256 secret accepted during rotation.
	JWTSecretPrevious string
	// IdP is the identity provider whose tokens are accepted too.
	IdP handlers.IdP
	// RoomAuth is the app's backend asked about rooms a token does not list.
	RoomAuth        handlers.RoomAuth
	Heartbeat       time.Duration
	ShutdownTimeout time.Duration
	ShutdownRetry   [2]time.Duration // the least and the most
	StreamMaxAge    time.Duration    // 0: no limit
	TrustedProxies  []netip.Prefix
	CORSOrigins     []string
	RetainChanges   int
	RetainAge       time.Duration
	Limits          handlers.Limits
	PprofAddr       string
	// TraceSlow, if not zero, keeps a runtime trace around the slowest
	// delivery slower than it (on the PPROF_ADDR listener).
	TraceSlow time.Duration
	// Connection limits: MaxConnections 0 means derived from the limit
	// on open files (connlimit.DefaultMax).
	MaxConnections int
	BodyTimeout    time.Duration
	IdleTimeout    time.Duration
	MetricsToken   string
}

// envVar describes one environment variable: its name, default, the
// accepted form named in errors and what it is (`changecast help` lists
// them from envVars).
type envVar struct {
	name, def, form string
	// doc says what the variable is, for `changecast help`.
	doc string
	set func(c *config, v string) error
}

// secretVars are never echoed in errors: a URI may carry a password.
var secretVars = map[string]bool{"MONGODB_URI": true, "JWT_SECRET": true, "JWT_SECRET_PREVIOUS": true, "METRICS_TOKEN": true,
	"ROOM_AUTH_URL": true, "ROOM_AUTH_SECRET": true}

var envVars = []envVar{
	{"PORT", "8080", "a port number 0-65535", "the port to listen on (set by the platform)", func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 65535 {
			return errBadForm
		}
		c.Port = n
		return nil
	}},
	{"MONGODB_URI", "", "a mongodb:// or mongodb+srv:// URI", "a replica set or Atlas URI; unset: the embedded store in DATA_DIR", func(c *config, v string) error {
		if v != "" && !strings.HasPrefix(v, "mongodb://") && !strings.HasPrefix(v, "mongodb+srv://") {
			return errBadForm
		}
		c.MongoURI = v
		return nil
	}},
	{"MONGODB_DATABASE", "changecast", "a database name (letters, digits, _ or -, at most 63 bytes)", "the MongoDB database", func(c *config, v string) error {
		if v == "" || len(v) > 63 || strings.ContainsAny(v, `/\. "$*<>:|?`) {
			return errBadForm
		}
		c.MongoDatabase = v
		return nil
	}},
	{"DATA_DIR", "./data", "a directory path", "the embedded store's directory", func(c *config, v string) error {
		if v == "" {
			return errBadForm
		}
		c.DataDir = v
		return nil
	}},
	{"JWT_SECRET", "", "a secret of at least 32 bytes", "the HS256 key tokens are signed with; required without -dev", func(c *config, v string) error {
		if v != "" && len(v) < 32 {
			return errTooShort
		}
		c.JWTSecret = v
		return nil
	}},
	{"JWT_SECRET_PREVIOUS", "", "a secret of at least 32 bytes", "an older HS256 key still accepted while tokens signed with it expire (a rotation of JWT_SECRET)", func(c *config, v string) error {
		if v != "" && len(v) < 32 {
			return errTooShort
		}
		c.JWTSecretPrevious = v
		return nil
	}},
	{"JWKS_URL", "", "an https:// (or http://) URL of a JWK Set", "the identity provider's JWK Set: its RS256, ES256 and EdDSA tokens are accepted", func(c *config, v string) error {
		if v != "" && !httpURL(v) {
			return errBadForm
		}
		c.IdP.JWKSURL = v
		return nil
	}},
	{"JWT_ISSUER", "", "an https:// (or http://) URL, exactly as the tokens' iss", "tokens of the identity provider must have this iss; alone, the JWK Set is found at <JWT_ISSUER>/.well-known/openid-configuration", func(c *config, v string) error {
		if v != "" && !httpURL(v) {
			return errBadForm
		}
		c.IdP.Issuer = v
		return nil
	}},
	{"JWT_AUDIENCE", "", "the API's audience, such as https://api.example.com", "tokens of the identity provider must have it in aud (set it when the IdP serves other apps)", func(c *config, v string) error {
		c.IdP.Audience = v
		return nil
	}},
	{"JWT_ROLE_CLAIM", "role", "a claim name or a dot path such as app_metadata.role", "where an identity provider's token carries the role (a string or an array)", claimPath(func(c *config, v string) { c.IdP.RoleClaim = v })},
	{"JWT_ROOMS_CLAIM", "rooms", "a claim name or a dot path such as app_metadata.rooms", "where an identity provider's token carries the rooms (a string or an array)", claimPath(func(c *config, v string) { c.IdP.RoomsClaim = v })},
	{"JWT_STAFF_ROLES", "staff", "a comma-separated list of role values such as admin,support", "the roles of an identity provider's token that mean staff; any other is a customer", func(c *config, v string) error {
		c.IdP.StaffRoles = nil
		for _, r := range strings.Split(v, ",") {
			if r = strings.TrimSpace(r); r != "" {
				c.IdP.StaffRoles = append(c.IdP.StaffRoles, r)
			}
		}
		if len(c.IdP.StaffRoles) == 0 {
			return errBadForm
		}
		return nil
	}},
	// The app's backend decides room membership (handlers.RoomAuth).
	{"ROOM_AUTH_URL", "", "an https:// (or http://) URL", "the app's backend, asked (POST {\"sub\",\"room\",\"action\"}) whether a user may read or post in a room their token does not list; only {\"allowed\": true} allows", func(c *config, v string) error {
		if v != "" && !httpURL(v) {
			return errBadForm
		}
		c.RoomAuth.URL = v
		return nil
	}},
	{"ROOM_AUTH_SECRET", "", "a secret of at least 16 printable ASCII characters without spaces", "sent to ROOM_AUTH_URL as Authorization: Bearer <ROOM_AUTH_SECRET>", func(c *config, v string) error {
		if v != "" && (len(v) < 16 || strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0) {
			return errBadForm
		}
		c.RoomAuth.Secret = v
		return nil
	}},
	{"ROOM_AUTH_CACHE", "15s", "a duration from 1s to 10m, such as 15s", "how long an answer of ROOM_AUTH_URL is kept, and how often an open stream's rooms it granted are asked about again", durationIn(time.Second, 10*time.Minute, func(c *config, d time.Duration) { c.RoomAuth.Cache = d })},
	{"ROOM_AUTH_TIMEOUT", "2s", "a duration from 100ms to 30s, such as 2s", "how long a question to ROOM_AUTH_URL may take, waiting for a free slot included (past it: 503)", durationIn(100*time.Millisecond, 30*time.Second, func(c *config, d time.Duration) { c.RoomAuth.Timeout = d })},
	{"ROOM_AUTH_CONCURRENCY", "16", "a whole number of questions from 1 to 1000", "questions to ROOM_AUTH_URL in flight at once", intIn(1, 1000, func(c *config, n int) { c.RoomAuth.MaxCalls = n })},
	{"HEARTBEAT_INTERVAL", "15s", "a duration from 1s to 50s, such as 15s", "how often a stream sends a `: ping` comment", durationIn(time.Second, 50*time.Second, func(c *config, d time.Duration) { c.Heartbeat = d })},
	{"SHUTDOWN_TIMEOUT", "10s", "a duration from 1s to 25s, such as 10s", "how long a shutdown waits for requests to end", durationIn(time.Second, 25*time.Second, func(c *config, d time.Duration) { c.ShutdownTimeout = d })},
	// The reconnect delay a stream is told, drawn per stream from this
	// window, when a shutdown ends it: clients of a restarting process
	// come back spread over it instead of all at once.
	{"SHUTDOWN_RETRY_WINDOW", "1s-5s", "two durations MIN-MAX from 1ms to 5m, MIN at most MAX, such as 1s-5s", "on shutdown each stream is told to reconnect after a random delay in this window", func(c *config, v string) error {
		a, b, ok := strings.Cut(v, "-")
		lo, err1 := time.ParseDuration(strings.TrimSpace(a))
		hi, err2 := time.ParseDuration(strings.TrimSpace(b))
		if !ok || err1 != nil || err2 != nil || lo < time.Millisecond || lo > hi || hi > 5*time.Minute {
			return errBadForm
		}
		c.ShutdownRetry = [2]time.Duration{lo, hi}
		return nil
	}},
	// Streams that let go: a proxy reloading, or a process added behind a
	// load balancer, gets every client back within it (jittered, so they
	// do not all come back at once); each resumes from its last id.
	{"STREAM_MAX_AGE", "30m", "0 (no limit) or a duration from 1m to 24h, such as 30m", "a stream ends cleanly after a random time between 3/4 of this and this; its client resumes from its last id", func(c *config, v string) error {
		if v == "0" {
			c.StreamMaxAge = 0
			return nil
		}
		return durationIn(time.Minute, 24*time.Hour, func(c *config, d time.Duration) { c.StreamMaxAge = d })(c, v)
	}},
	// A PaaS router (Heroku's) always sets X-Forwarded-For and is the
	// only way in: "*" trusts every peer there.
	{"TRUSTED_PROXIES", "", "a comma-separated list of CIDRs or addresses such as 10.0.0.0/8,192.168.1.7, or * for every peer (a PaaS router that is the only way in)", "the proxies whose X-Forwarded-For or Forwarded names the client in the request log", func(c *config, v string) error {
		c.TrustedProxies = nil
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			switch {
			case f == "":
				continue
			case f == "*":
				c.TrustedProxies = append(c.TrustedProxies, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
				continue
			}
			p, err := netip.ParsePrefix(f)
			if err != nil {
				a, aerr := netip.ParseAddr(f)
				if aerr != nil {
					return errBadForm
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			c.TrustedProxies = append(c.TrustedProxies, p.Masked())
		}
		return nil
	}},
	{"CORS_ORIGINS", "", "a comma-separated list of origins such as https://app.example.com", "origins allowed credentialed cross-origin use", func(c *config, v string) error {
		c.CORSOrigins = nil
		for _, o := range strings.Split(v, ",") {
			o = strings.TrimSpace(o)
			if o == "" {
				continue
			}
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
				return errBadForm
			}
			c.CORSOrigins = append(c.CORSOrigins, u.Scheme+"://"+u.Host)
		}
		return nil
	}},
	{"RETAIN_CHANGES", "1000000", "a whole number of changes from 1000 up", "embedded store: changes the log keeps for resuming", func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			return errBadForm
		}
		c.RetainChanges = n
		return nil
	}},
	{"STREAMS_PER_SUBJECT", "16", "a whole number of open streams per user, or -1 for no bound", "open streams one user may hold", intIn(-1, 1_000_000, func(c *config, n int) { c.Limits.StreamsPerSubject = n })},
	{"TOPICS_PER_STREAM", "32", "a whole number of topics from 1 to 1000", "topics one /api/events stream may name", intIn(1, 1000, func(c *config, n int) { c.Limits.TopicsPerRequest = n })},
	{"WRITES_PER_SECOND", "20", "writes per second per user, such as 20 or 0.5, or -1 for no bound", "writes per second one user may make", func(c *config, v string) error {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || (f <= 0 && f != -1) {
			return errBadForm
		}
		c.Limits.WritesPerSecond = f
		return nil
	}},
	{"WRITE_BURST", "40", "a whole number of writes from 1 up", "writes one user may make in a burst", intIn(1, 1_000_000, func(c *config, n int) { c.Limits.WriteBurst = n })},
	{"PPROF_ADDR", "", "a loopback host:port such as 127.0.0.1:6060", "where to serve net/http/pprof; unset: off", func(c *config, v string) error {
		if v == "" {
			return nil
		}
		host, port, err := net.SplitHostPort(v)
		ip := net.ParseIP(host)
		if err != nil || port == "" || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return errBadForm
		}
		c.PprofAddr = v
		return nil
	}},
	{"TRACE_SLOW", "", "a duration from 1µs to 10s, such as 20ms, with PPROF_ADDR set", "keep a runtime trace of the second before the slowest delivery slower than it, at PPROF_ADDR's /debug/stages/trace; unset: off", func(c *config, v string) error {
		if v == "" {
			return nil
		}
		return durationIn(time.Microsecond, 10*time.Second, func(c *config, d time.Duration) { c.TraceSlow = d })(c, v)
	}},
	{"METRICS_TOKEN", "", "a token of at least 16 printable ASCII characters without spaces", "the bearer token /metrics wants without -dev; unset: /metrics answers 404", func(c *config, v string) error {
		// Sent in an Authorization header, so printable ASCII; long enough
		// not to be guessed by a scraper of the public URL.
		if v != "" && (len(v) < 16 || strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0) {
			return errBadForm
		}
		c.MetricsToken = v
		return nil
	}},
	{"RETAIN_AGE", "168h", "a duration of at least 1m, such as 168h", "embedded store: how long the log keeps a change", durationIn(time.Minute, 100*365*24*time.Hour, func(c *config, d time.Duration) { c.RetainAge = d })},
	// Connection limits (package connlimit, handlers.GuardBodies).
	{"MAX_CONNECTIONS", "", "a whole number of connections from 1 up, or unset to derive it from the open-file limit", "TCP connections held at once; past it a new one takes the place of one that has sent no request for 1 s, then of the longest idle one; 8 more for health checks", func(c *config, v string) error {
		if v == "" {
			c.MaxConnections = 0
			return nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return errBadForm
		}
		c.MaxConnections = n
		return nil
	}},
	{"BODY_TIMEOUT", "30s", "a duration from 1s to 5m, such as 30s", "how long a request body may take to arrive (408 past it)", durationIn(time.Second, 5*time.Minute, func(c *config, d time.Duration) { c.BodyTimeout = d })},
	{"IDLE_TIMEOUT", "60s", "a duration from 1s to 10m, such as 60s", "how long an idle keep-alive connection stays open", durationIn(time.Second, 10*time.Minute, func(c *config, d time.Duration) { c.IdleTimeout = d })},
}

var errBadForm = errors.New("bad form")

// httpURL reports whether v is an absolute http or https URL.
func httpURL(v string) bool {
	u, err := url.Parse(v)
	return err == nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != "" && u.RawQuery == "" && u.Fragment == ""
}

// claimPath accepts dot-separated claim names, none empty.
func claimPath(set func(*config, string)) func(*config, string) error {
	return func(c *config, v string) error {
		if slices.Contains(strings.Split(v, "."), "") || strings.ContainsAny(v, " \t") {
			return errBadForm
		}
		set(c, v)
		return nil
	}
}

// errTooShort is a secret that is set but too short to use.
var errTooShort = errors.New("is too short")

func intIn(lo, hi int, set func(*config, int)) func(*config, string) error {
	return func(c *config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi || n == 0 {
			return errBadForm
		}
		set(c, n)
		return nil
	}
}

func durationIn(lo, hi time.Duration, set func(*config, time.Duration)) func(*config, string) error {
	return func(c *config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < lo || d > hi {
			return errBadForm
		}
		set(c, d)
		return nil
	}
}

// loadConfig reads and validates the environment. It reports every bad
// variable at once, one per line (errors.Join); each names the variable
// and the form it accepts.
func loadConfig(getenv func(string) string) (config, error) {
	var c config
	var errs []error
	for _, ev := range envVars {
		v := strings.TrimSpace(getenv(ev.name))
		if v == "" {
			v = ev.def
		}
		err := ev.set(&c, v)
		switch {
		case err == nil:
		case err != errBadForm:
			errs = append(errs, fmt.Errorf("%s %v: want %s", ev.name, err, ev.form))
		case secretVars[ev.name]:
			errs = append(errs, fmt.Errorf("%s: want %s", ev.name, ev.form))
		default:
			errs = append(errs, fmt.Errorf("%s=%q: want %s", ev.name, getenv(ev.name), ev.form))
		}
	}
	if c.MongoURI == "" && c.DataDir != "" {
		if err := checkDataDir(c.DataDir); err != nil {
			errs = append(errs, err)
		}
	}
	if c.TraceSlow > 0 && c.PprofAddr == "" {
		errs = append(errs, errors.New("TRACE_SLOW is set without PPROF_ADDR: the trace is served on PPROF_ADDR"))
	}
	if c.JWTSecretPrevious != "" && c.JWTSecret == "" {
		errs = append(errs, errors.New("JWT_SECRET_PREVIOUS is set without JWT_SECRET: the previous secret is accepted beside the current one"))
	}
	if c.RoomAuth.Secret != "" && c.RoomAuth.URL == "" {
		errs = append(errs, errors.New("ROOM_AUTH_SECRET is set without ROOM_AUTH_URL: the secret is sent to that URL"))
	}
	if len(errs) > 0 {
		return config{}, errors.Join(errs...)
	}
	return c, nil
}

// checkDataDir reports a DATA_DIR that exists but is not a directory (a
// missing one is made at start).
func checkDataDir(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("DATA_DIR=%q cannot be used: %v", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("DATA_DIR=%q is a file, not a directory: set DATA_DIR to a directory (it is made if missing)", dir)
	}
	return nil
}
