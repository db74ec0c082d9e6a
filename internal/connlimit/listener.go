package connlimit

import (
	"container/list"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
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

// Grace is how long a connection that has not sent a whole request
// header yet keeps its place against a newcomer when the Listener is
// full. An honest client's request is in the socket before the
// connection is accepted, and is read in microseconds; one second is
// ample over any network, and bounds how long a silent flood can hold a
// place.
const Grace = time.Second

// IdleGrace is how long a keep-alive connection between requests keeps
// its place against a newcomer: longer than Grace, so that a proxy's
// pooled upstream connection is not closed just as it sends its next
// request (the proxy would answer 502, and not retry a POST).
const IdleGrace = 5 * time.Second

// WriteTimeout bounds how long Serve lets an ordinary response take to
// reach the client: a client that does not read (a zero HTTP/2 window,
// a full receive buffer) loses the response and gives up its place
// instead of holding it for ever. Handlers that write for longer (a
// stream, a backup) push the deadline forward as they write.
const WriteTimeout = 30 * time.Second

// Listener is a net.Listener that keeps at most max connections open
// for ordinary traffic, and up to reserve more for health checks (see
// Serve). When its places are full, a new connection takes the place of
// the connection that has served no request for the longest time, past
// its grace: first one that never sent a whole request header (grace),
// else an idle keep-alive one (idleGrace, longer). A connection serving a
// request (until its answer is sent; a stream included) never loses its
// place. Only when every ordinary place serves
// a request does a new connection go to the reserve, and only when the
// reserve too is busy is it closed at once (and counted); while a place
// is bound to come free within the grace, Accept waits, leaving
// newcomers in the kernel's backlog. So a flood of idle connections
// costs the server nothing but accepts and never runs it out of file
// descriptors, and cannot keep working requests or health checks out.
// The http.Server must use Serve, ConnContext and ConnState (the Listener
// learns from them which connections serve requests). All its methods
// are safe for concurrent use.
type Listener struct {
	net.Listener
	probation, grace, idleGrace time.Duration

	mu       sync.Mutex
	ordinary pool
	reserve  pool
	changed  chan struct{} // closed at the next change of a place; nil when no Accept waits

	done     chan struct{} // closed by Close
	stopOnce sync.Once
	refused  atomic.Uint64 // connections closed at once
	evicted  atomic.Uint64 // connections closed to make room
}

// pool is one set of places: the ordinary ones or the reserve. Guarded
// by the Listener's mu.
type pool struct {
	limit, open int
	// silent holds the connections that have not sent a whole request
	// header, idle those between requests; each oldest first. A
	// connection serving a request, or taken over, is in neither.
	silent, idle list.List
}

// NewListener returns ln limited to max ordinary connections plus
// reserve connections that must send their request within probation; a
// connection that has not sent a whole request header keeps its place
// for grace against a newcomer, a keep-alive one between requests for
// idleGrace. The Listener owns ln: closing it closes ln.
func NewListener(ln net.Listener, max, reserve int, probation, grace, idleGrace time.Duration) *Listener {
	l := &Listener{Listener: ln, probation: probation, grace: grace, idleGrace: idleGrace, done: make(chan struct{})}
	l.ordinary.limit, l.reserve.limit = max, reserve
	return l
}

// Accept returns the next connection within the bounds, closing another
// that serves no request to make room if it must, or waiting for one to
// come free (see Listener). A connection it cannot place is closed and
// counted, and Accept waits for the next one. Closing a returned
// connection frees its place (once, however often it is closed). Accept
// returns the underlying listener's error unchanged, net.ErrClosed once
// the Listener is closed.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if c := l.admit(nc); c != nil {
			return c, nil
		}
	}
}

// Close closes the listener; an Accept waiting for a place returns.
func (l *Listener) Close() error {
	l.stopOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// admit finds nc a place, waiting while one is bound to come free. It
// returns nil if nc was closed instead: refused, or the Listener closed.
func (l *Listener) admit(nc net.Conn) *conn {
	for {
		l.mu.Lock()
		now := time.Now()
		c, victim, wake := l.place(nc, now)
		var changed chan struct{}
		if c == nil && !wake.IsZero() {
			if l.changed == nil {
				l.changed = make(chan struct{})
			}
			changed = l.changed
		}
		l.mu.Unlock()
		if victim != nil {
			l.evicted.Add(1)
			victim.Conn.Close()
		}
		if c != nil {
			if !c.until.IsZero() {
				_ = nc.SetReadDeadline(c.until)
			}
			return c
		}
		if wake.IsZero() {
			l.refused.Add(1)
			nc.Close()
			return nil
		}
		t := time.NewTimer(wake.Sub(now))
		select {
		case <-t.C:
		case <-changed:
			t.Stop()
		case <-l.done:
			t.Stop()
			nc.Close()
			return nil
		}
	}
}

// place gives nc an ordinary place, else (when every ordinary place
// serves a request) a reserve place, freeing one held by victim if it
// must. With no place now, c is nil and wake is when one comes free at
// the latest (zero if none will before a request ends). l.mu is held.
func (l *Listener) place(nc net.Conn, now time.Time) (c, victim *conn, wake time.Time) {
	ok, victim, wake := l.ordinary.claim(now, l.grace, l.idleGrace)
	if ok {
		return l.ordinary.add(&conn{Conn: nc, l: l, p: &l.ordinary, since: now}), victim, time.Time{}
	}
	if !wake.IsZero() {
		return nil, nil, wake
	}
	ok, victim, wake = l.reserve.claim(now, l.grace, l.idleGrace)
	if ok {
		return l.reserve.add(&conn{Conn: nc, l: l, p: &l.reserve, since: now, until: now.Add(l.probation)}), victim, time.Time{}
	}
	return nil, nil, wake
}

// claim makes room for one more connection: ok when there is a free
// place, or when victim (removed from the pool, for the caller to close)
// served no request for its grace: grace if silent, idleGrace if idle.
// Else wake is when such a connection's grace ends, zero if every
// connection serves a request.
func (p *pool) claim(now time.Time, grace, idleGrace time.Duration) (ok bool, victim *conn, wake time.Time) {
	if p.open < p.limit {
		return true, nil, time.Time{}
	}
	for _, q := range []struct {
		l     *list.List
		grace time.Duration
	}{{&p.silent, grace}, {&p.idle, idleGrace}} {
		if e := q.l.Front(); e != nil {
			c := e.Value.(*conn)
			end := c.since.Add(q.grace)
			if !end.After(now) {
				p.remove(c)
				return true, c, time.Time{}
			}
			if wake.IsZero() || end.Before(wake) {
				wake = end
			}
		}
	}
	return false, nil, wake
}

// add places c, silent, and returns it.
func (p *pool) add(c *conn) *conn {
	p.open++
	c.elem = p.silent.PushBack(c)
	return c
}

// remove takes c out of the pool for good.
func (p *pool) remove(c *conn) {
	c.unlist()
	c.gone = true
	p.open--
}

// changedLocked wakes an Accept waiting for a place. l.mu is held.
func (l *Listener) changedLocked() {
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
}

// Open returns how many accepted connections are open, reserve included.
// It may be called at any time, from any goroutine.
func (l *Listener) Open() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int64(l.ordinary.open + l.reserve.open)
}

// Refused returns how many connections were closed at once for being
// past the bounds. It may be called at any time, from any goroutine.
func (l *Listener) Refused() uint64 { return l.refused.Load() }

// Evicted returns how many connections serving no request were closed
// to make room for a newcomer. It may be called at any time, from any
// goroutine.
func (l *Listener) Evicted() uint64 { return l.evicted.Load() }

// conn is an accepted connection holding a place; it gives its place
// back once, when it is first closed.
type conn struct {
	net.Conn
	l     *Listener
	p     *pool
	until time.Time // end of the probation in the reserve, zero elsewhere

	// Guarded by l.mu.
	elem    *list.Element // in p.silent or p.idle, nil if in neither
	since   time.Time     // accepted, or its last request ended
	serving int           // handlers running (several over HTTP/2)
	// flushing: a request began and net/http has not yet said the
	// connection is idle (its answer may still wait in net/http's
	// buffers, or for the client's window).
	flushing bool
	active   bool // net/http reports c active (not idle)
	served   bool // a request has been served
	taken    bool // taken over (hijacked) by a handler
	gone     bool // its place is given back
}

// unlist takes c out of its pool's lists. l.mu is held.
func (c *conn) unlist() {
	if c.elem == nil {
		return
	}
	if c.served {
		c.p.idle.Remove(c.elem)
	} else {
		c.p.silent.Remove(c.elem)
	}
	c.elem = nil
}

// Close closes the connection and frees its place.
func (c *conn) Close() error {
	l := c.l
	l.mu.Lock()
	if !c.gone {
		c.p.remove(c)
		l.changedLocked()
	}
	l.mu.Unlock()
	return c.Conn.Close()
}

// begin marks c as serving one more request.
func (c *conn) begin() {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	c.serving++
	c.unlist()
	// The answer is sent once net/http reports the connection idle.
	// Over HTTP/2 a stream closed (reset) before its handler began may
	// have made it idle already: no answer is left to send, and end
	// ends the request. (net/http reports the connection active again
	// before a new stream's handler begins.)
	if c.active {
		c.flushing = true
	}
	l.changedLocked()
}

// end marks the handler of one request of c as returned.
func (c *conn) end() {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	c.serving--
	c.served = true
	c.idleLocked()
}

// setActive records that net/http reports c active: reading a request,
// or (HTTP/2) with streams open.
func (c *conn) setActive() {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	c.active = true
}

// idle marks c's answers as sent: net/http says the connection is idle.
func (c *conn) idle() {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	c.active = false
	if !c.flushing {
		return // no request began: an HTTP/2 connection past its preface
	}
	c.flushing = false
	c.idleLocked()
}

// idleLocked makes c idle if it serves nothing. l.mu is held.
func (c *conn) idleLocked() {
	if c.serving == 0 && !c.flushing && !c.taken && !c.gone && c.elem == nil {
		c.since = time.Now()
		c.elem = c.p.idle.PushBack(c)
		c.l.changedLocked()
	}
}

// take marks c as taken over by its handler: its place is held until it
// is closed.
func (c *conn) take() {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	c.taken = true
	c.unlist()
}

// SyscallConn gives the stream writer the socket itself (for writev), as
// an unwrapped *net.TCPConn would.
func (c *conn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.New("connection has no file descriptor")
	}
	return sc.SyscallConn()
}

// ReadFrom lets net/http send files with sendfile, as an unwrapped
// *net.TCPConn would.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(c.Conn, r)
}

// SetReadDeadline sets the read deadline to t; in the reserve, to the
// end of the probation if that is sooner, whatever net/http asks for.
func (c *conn) SetReadDeadline(t time.Time) error {
	if !c.until.IsZero() && (t.IsZero() || t.After(c.until)) {
		t = c.until
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines, the read one bounded as
// SetReadDeadline bounds it.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// connKey is the context key of a request's *conn.
type connKey struct{}

// ConnContext is meant as an http.Server's ConnContext: it gives the
// requests of a connection accepted by a Listener that connection, for
// Serve, and returns ctx unchanged for any other connection. It is safe
// for concurrent use and cannot fail.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if lc, ok := c.(*conn); ok {
		return context.WithValue(ctx, connKey{}, lc)
	}
	return ctx
}

// ConnState is meant as an http.Server's ConnState: a connection serves
// a request until net/http has sent the whole answer and reports it idle
// (not merely until the handler returns), and one taken over by its
// handler (hijacked, as HTTP/1.1 streams are) keeps its place until it
// is closed. It is safe for concurrent use.
func ConnState(c net.Conn, s http.ConnState) {
	lc, ok := c.(*conn)
	if !ok {
		return
	}
	switch s {
	case http.StateActive:
		lc.setActive()
	case http.StateIdle:
		lc.idle()
	case http.StateHijacked:
		lc.take()
	}
}

// reservePaths are the only paths answered on a reserve connection.
var reservePaths = map[string]bool{"/healthz": true, "/readyz": true}

// Serve marks each request's connection as serving from the moment its
// header is whole until its answer is sent (see ConnState), so that the
// Listener never takes its place meanwhile. It gives every answer
// writeTimeout to reach the client (a write deadline: past it, writes
// fail and the connection closes, or over HTTP/2 the stream is reset);
// a handler that writes for longer pushes the deadline forward itself,
// through http.ResponseController. On reserve connections (those past
// MAX_CONNECTIONS) health checks (/healthz, /readyz) are served by next,
// anything else gets a 503 with a JSON error and Retry-After, and the
// connection closes after the one answer. Requests on connections of no
// Listener only get the deadline. The handler is as safe for concurrent
// use as next is.
func Serve(next http.Handler, writeTimeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeTimeout))
		c, _ := r.Context().Value(connKey{}).(*conn)
		if c == nil {
			next.ServeHTTP(w, r)
			return
		}
		c.begin()
		defer c.end()
		if c.until.IsZero() {
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
