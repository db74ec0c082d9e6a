package connlimit

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"
)

// HealthReserve is how many connections past MAX_CONNECTIONS are still
// accepted, for health checks only: enough for a platform's probes and
// an operator's curl at the same moment, too few to matter as a resource.
const HealthReserve = 8

// ReserveProbation is how long a connection in the health reserve has to
// send its whole request before it is closed: a health check sends its
// request at once, and idle clients must not keep the reserve full.
const ReserveProbation = 2 * time.Second

// Listener is a net.Listener that keeps at most max connections open
// for ordinary traffic, and up to reserve more for health checks (see
// ServeReserve). A connection past both is accepted and closed at once,
// and counted, so that a flood of connections costs the server nothing
// but the accept and never runs it out of file descriptors
// (x/net/netutil.LimitListener would stop accepting instead, leaving
// clients hanging in the kernel's backlog). All its methods are safe for
// concurrent use.
type Listener struct {
	net.Listener
	max, reserve int64
	probation    time.Duration

	open     atomic.Int64  // ordinary connections open
	reserved atomic.Int64  // reserve connections open
	refused  atomic.Uint64 // connections closed at once
}

// NewListener returns ln limited to max ordinary connections plus
// reserve connections that must send their request within probation.
// The Listener owns ln: closing it closes ln.
func NewListener(ln net.Listener, max, reserve int, probation time.Duration) *Listener {
	return &Listener{Listener: ln, max: int64(max), reserve: int64(reserve), probation: probation}
}

// Accept returns the next connection within the bounds. A connection past
// them is closed and counted, and Accept waits for the next one. Closing
// a returned connection frees its place (once, however often it is
// closed). Accept returns the underlying listener's error unchanged,
// net.ErrClosed once the Listener is closed.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) <= l.max {
			return &limitedConn{Conn: c, count: &l.open}, nil
		}
		l.open.Add(-1)
		if l.reserved.Add(1) <= l.reserve {
			rc := &reserveConn{limitedConn: limitedConn{Conn: c, count: &l.reserved}, until: time.Now().Add(l.probation)}
			_ = c.SetReadDeadline(rc.until)
			return rc, nil
		}
		l.reserved.Add(-1)
		l.refused.Add(1)
		c.Close()
	}
}

// Open returns how many accepted connections are open, reserve included.
// It may be called at any time, from any goroutine.
func (l *Listener) Open() int64 { return l.open.Load() + l.reserved.Load() }

// Refused returns how many connections were closed at once for being
// past the bounds. It may be called at any time, from any goroutine.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

// limitedConn is an accepted connection that gives its place back once,
// when it is first closed.
type limitedConn struct {
	net.Conn
	count  *atomic.Int64
	closed atomic.Bool
}

// Close closes the connection and frees its place.
func (c *limitedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.count.Add(-1)
	}
	return c.Conn.Close()
}

// SyscallConn gives the stream writer the socket itself (for writev), as
// an unwrapped *net.TCPConn would.
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("connection has no file descriptor")
	}
	return sc.SyscallConn()
}

// ReadFrom lets net/http send files with sendfile, as an unwrapped
// *net.TCPConn would.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(c.Conn, r)
}

// reserveConn is a connection in the health reserve: no read deadline
// on it goes past until, whatever net/http asks for.
type reserveConn struct {
	limitedConn
	until time.Time
}

// SetReadDeadline sets the read deadline to t, or to the end of the
// probation if that is sooner.
func (c *reserveConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() || t.After(c.until) {
		t = c.until
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines, the read one bounded as
// SetReadDeadline bounds it.
func (c *reserveConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// reserveKey marks the context of a request on a reserve connection.
type reserveKey struct{}

// MarkReserve is meant as an http.Server's ConnContext: it marks the
// requests of a connection in a Listener's reserve, for ServeReserve, and
// returns ctx unchanged for any other connection. It is safe for
// concurrent use and cannot fail.
func MarkReserve(ctx context.Context, c net.Conn) context.Context {
	if _, ok := c.(*reserveConn); ok {
		return context.WithValue(ctx, reserveKey{}, true)
	}
	return ctx
}

// reservePaths are the only paths answered on a reserve connection.
var reservePaths = map[string]bool{"/healthz": true, "/readyz": true}

// ServeReserve answers requests on reserve connections (those past
// MAX_CONNECTIONS, marked by MarkReserve): health checks (/healthz,
// /readyz) are served by next, anything else gets a 503 with a JSON
// error and Retry-After, and the connection closes after the one answer.
// Requests on ordinary connections go to next untouched. The handler is
// as safe for concurrent use as next is.
func ServeReserve(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(reserveKey{}) == nil {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Connection", "close")
		if reservePaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, `{"error":"the server is at its connection limit"}`+"\n")
	})
}
