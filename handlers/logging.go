package handlers

import (
	"log/slog"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// ctxKeySubject is the Echo context key under which authenticate leaves
// the subject for the request log.
const ctxKeySubject = "changecast.sub"

// redacted replaces a secret in a log line.
const redacted = "REDACTED"

// Bounds on what a request line may hold of the request's URL, so that a
// client cannot fill the logs with one request: the API's paths and
// parameters are far shorter (a topic ~70 bytes, an event id at most 512).
const (
	// maxLoggedPath is the most bytes of a path logged.
	maxLoggedPath = 512
	// maxLoggedValue is the most bytes of one query value, or of a
	// method, logged.
	maxLoggedValue = 512
	// maxLoggedQuery is the most bytes of query logged in all.
	maxLoggedQuery = 2048
)

// loggedParams are the query parameters whose values may be logged, in
// the order they are logged: none of them is a credential. Every other
// parameter is counted, not shown: its name may itself be a credential
// (`access_token%3d<token>` is a name), and the name of a credential
// parameter may take any shape a client invents.
var loggedParams = []string{"topic", "lastEventId", "limit", "before", "status", "customer"}

// logRequests writes one log line per request when it ends (for a stream
// on HTTP/1.x: when it is live, its body not counted; the stream's own
// line comes when it ends): method, path, the query's known-safe
// parameters (see loggedQuery), status, bytes, duration, request_id and,
// once known, the subject. It answers a handler's error itself so the
// line carries the final status.
func (s *server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		req, res := c.Request(), c.Response()
		attrs := []slog.Attr{
			slog.String("method", clip(req.Method, maxLoggedValue)),
			slog.String("path", clip(redactTokens(req.URL.Path), maxLoggedPath)),
			slog.String("client", c.RealIP()),
		}
		if req.URL.RawQuery != "" {
			shown, others := loggedQuery(req.URL.RawQuery, c.QueryParams())
			if shown != "" {
				attrs = append(attrs, slog.String("query", shown))
			}
			if others > 0 {
				attrs = append(attrs, slog.Int("query_other", others))
			}
		}
		attrs = append(attrs,
			slog.Int("status", res.Status),
			slog.Int64("bytes", res.Size),
			slog.Duration("duration", time.Since(start)),
			slog.String("request_id", res.Header().Get(echo.HeaderXRequestID)),
		)
		if sub, ok := c.Get(ctxKeySubject).(string); ok {
			attrs = append(attrs, slog.String("sub", sub))
		}
		level := slog.LevelInfo
		if res.Status >= 500 {
			level = slog.LevelError
		}
		s.log.LogAttrs(req.Context(), level, "request", attrs...)
		return nil
	}
}

// tokenShape matches what looks like a JWT: three base64url segments
// joined by dots, the first two long enough to hold a header and claims
// (an unsigned token's third may be empty). A token pasted where a path
// segment or a logged parameter belongs must not reach the logs.
var tokenShape = regexp.MustCompile(`[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*`)

// redactTokens replaces every JWT-shaped run of s with REDACTED. It runs
// before a value is clipped, so a clipped token cannot slip through.
func redactTokens(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	return tokenShape.ReplaceAllLiteralString(s, redacted)
}

// loggedQuery returns what the log shows of a raw query, given the
// parameters the server parsed from it (url.ParseQuery, as the handlers
// read them): the values of loggedParams, each clipped, at most
// maxLoggedQuery bytes in all, and access_token=REDACTED when the token
// parameter was sent; and how many of the raw query's parameters it does
// not show. Nothing else of the raw query is ever logged, whatever its
// shape (semicolons, escaped separators, malformed escapes).
func loggedQuery(raw string, params url.Values) (shown string, others int) {
	var b strings.Builder
	n := 0
	add := func(k, v string) bool {
		if b.Len()+len(k)+len(v)+2 > maxLoggedQuery {
			return false
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(v)
		n++
		return true
	}
params:
	for _, k := range loggedParams {
		for _, v := range params[k] {
			if !add(k, clip(redactTokens(v), maxLoggedValue)) {
				break params
			}
		}
	}
	for range params[QueryTokenParam] {
		if !add(QueryTokenParam, redacted) {
			break
		}
	}
	return b.String(), max(0, strings.Count(raw, "&")+1-n)
}
