package handlers

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"changecast/internal/connlimit"
)

// backuper is a store that can copy itself while it serves: the
// embedded store (*bolt.Store) is one, MongoDB is not (it has its own
// tools). Backup must be safe for concurrent use.
type backuper interface {
	// Backup writes a consistent copy of the store to w and returns how
	// many bytes it wrote.
	Backup(ctx context.Context, w io.Writer) (int64, error)
}

// Backup answers.
const (
	// HeaderBackupSize is the trailer of a backup answer: the bytes the
	// server wrote. A client that received fewer has a cut copy.
	HeaderBackupSize = "Changecast-Backup-Size"
	// backupRetryAfter is the Retry-After of a backup refused because
	// another one runs: a guess at how long a copy takes.
	backupRetryAfter = 10 * time.Second
	msgBackupMongo   = "this server keeps its data in MongoDB: back it up with mongodump or your provider's backups; " +
		"GET /api/backup copies the embedded store only"
)

// backup handles GET /api/backup: a consistent copy of the embedded
// store, streamed as it is read, while the server goes on serving and
// writing. It is for staff: only a staff token in the Authorization
// header (not the cookie or the query, which a browser sends by itself
// or logs keep) may take one; to anyone else, with or without a token,
// the route does not exist (404). One copy runs at a time (429 for
// another). With MongoDB it answers 501, naming mongodump.
func (s *server) backup(c echo.Context) error {
	if !s.dev {
		scheme, tok, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return echo.ErrNotFound
		}
		p, err := s.auth.principal(strings.TrimSpace(tok))
		if err != nil || !p.IsStaff() {
			return echo.ErrNotFound
		}
		c.Set(ctxKeySubject, p.Subject)
	}
	b, ok := s.store.(backuper)
	if !ok {
		return errorf(http.StatusNotImplemented, "%s", msgBackupMongo)
	}
	select {
	case s.backups <- struct{}{}:
		defer func() { <-s.backups }()
	default:
		return tooMany(c, backupRetryAfter, "a backup is already running; try again when it ends")
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, echo.MIMEOctetStream)
	h.Set(echo.HeaderContentDisposition, `attachment; filename="changecast.db"`)
	h.Set("Cache-Control", "no-store")
	h.Set("Trailer", HeaderBackupSize)
	c.Response().WriteHeader(http.StatusOK)
	c.Response().Flush() // the client learns at once that the copy began
	start := time.Now()
	n, err := b.Backup(c.Request().Context(), deadlineWriter{http.NewResponseController(c.Response()), c.Response()})
	if err != nil {
		// The status is sent: cut the connection, so the client sees a
		// broken answer, not a short copy that ended cleanly.
		level := slog.LevelError
		if c.Request().Context().Err() != nil {
			level = slog.LevelInfo // the client went
		}
		s.log.Log(context.WithoutCancel(c.Request().Context()), level, "backup not finished", "err", err, "bytes", n,
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
		panic(http.ErrAbortHandler)
	}
	h.Set(HeaderBackupSize, strconv.FormatInt(n, 10))
	s.log.Info("backup sent", "bytes", n, "duration", time.Since(start).Round(time.Millisecond).String(),
		"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
	return nil
}

// deadlineWriter pushes the answer's write deadline forward before each
// write: connlimit.Serve gives a whole answer connlimit.WriteTimeout to
// reach the client, a backup gets that much for each chunk.
type deadlineWriter struct {
	rc *http.ResponseController
	w  io.Writer
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	_ = d.rc.SetWriteDeadline(time.Now().Add(connlimit.WriteTimeout))
	return d.w.Write(p)
}
