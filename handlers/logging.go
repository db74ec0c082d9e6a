package handlers

import (
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// ctxKeySubject is the Echo context key under which authenticate leaves
// the subject for the request log.
const ctxKeySubject = "changecast.sub"

// redacted replaces a secret in a log line.
const redacted = "REDACTED"

// logRequests writes one log line per request when it ends (for a stream
// on HTTP/1.x: when it is live, its body not counted; the stream's own
// line comes when it ends): method, path, query (with any access_token
// value redacted), status, bytes, duration, request_id and, once known,
// the subject. It answers a handler's error itself so the line carries
// the final status.
func (s *server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		if err := next(c); err != nil {
			c.Error(err)
		}
		req, res := c.Request(), c.Response()
		attrs := []slog.Attr{
			slog.String("method", req.Method),
			slog.String("path", req.URL.Path),
		}
		if req.URL.RawQuery != "" {
			attrs = append(attrs, slog.String("query", redactQuery(req.URL.RawQuery)))
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

// redactQuery returns the raw query with the value of every access_token
// parameter replaced. It errs on the side of hiding: a key that merely
// contains access_token, in any case, escaped or not, and however
// malformed the rest of the pair, is redacted too.
func redactQuery(raw string) string {
	parts := strings.Split(raw, "&")
	for i, part := range parts {
		key, _, _ := strings.Cut(part, "=")
		if isTokenKey(key) {
			parts[i] = key + "=" + redacted
		}
	}
	return strings.Join(parts, "&")
}

func isTokenKey(key string) bool {
	const name = "access_token"
	if strings.Contains(strings.ToLower(key), name) {
		return true
	}
	k, err := url.QueryUnescape(key)
	if err != nil {
		// Not a key Go parses; if it hides the name, hide its value.
		k = strings.ReplaceAll(key, "%", "")
	}
	return strings.Contains(strings.ToLower(k), name)
}
