// Package httpconn writes the body of a long-lived 200 response, either on
// the connection taken over from net/http (HTTP/1.x) or through the
// http.ResponseWriter (HTTP/2, or a writer that cannot be taken over).
//
// On a connection taken over the response needs no goroutine of
// net/http's, nor its buffers: Conn writes the status line and headers
// itself, frames the body in HTTP/1.1 chunks (HTTP/1.0: the body ends
// with the connection) and sends each Write, a list of buffers, as one
// chunk with one writev. Conn and ResponseWriter have the same methods,
// so the code above them writes through either alike: it chooses one
// when the response starts, and with it how the stream runs (on the Pool
// a Conn that a Poller watches, else on a goroutine), and never branches
// on the writer again.
//
// Many such responses share a few goroutines once they are live:
//
//   - a Poller (one epoll instance, Linux) notices each client hanging up,
//     instead of a goroutine blocked in Read per connection;
//   - a Pool runs each response's work (a Task) on one of a few workers
//     when something wakes it, instead of a goroutine per response
//     waiting for its next event;
//   - a Conn made non-blocking (SetNonblocking) writes what the socket
//     takes at once; the rest waits in a backlog that a goroutine, started
//     only then, writes when the client reads, so a worker never waits
//     for a slow client.
//
// Nothing here knows what the bytes mean: the stream package decides what
// to write and when a response ends.
package httpconn

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// MaxBufs is the most buffers one Write should be given: up to it, a
// Write on a Conn allocates nothing (its scratch comes from pools of this
// size). The kernel takes at most 1,024 buffers per writev; more are
// written in several.
const MaxBufs = 256

// maxWriteBufs is the most buffers of one writev: a Write's, the head,
// a chunk header and the chunk's end.
const maxWriteBufs = MaxBufs + 3

// finishTimeout bounds writing the end of a response: a client that does
// not take a few hundred bytes within it is not reading, and the caller
// waits for it.
const finishTimeout = time.Second

var (
	crlf      = []byte("\r\n")
	lastChunk = []byte("0\r\n\r\n")

	errNotHTTP1 = errors.New("httpconn: only an HTTP/1.x connection can be taken over")
)

// bufsPool holds the scratch lists of buffers a Conn's writes use, so
// that an idle response holds none.
var bufsPool = sync.Pool{New: func() any {
	s := make([][]byte, 0, maxWriteBufs)
	return &s
}}

// Conn is a 200 response on a connection taken over from net/http. One
// goroutine at a time may call Write and End or Drop; SetWriteDeadline
// may be called from another goroutine to cut a Write short.
//
// A Conn's Write waits until the client has taken the bytes, unless
// SetNonblocking made it keep what the client cannot take yet, for a
// Pool's tasks, which must not wait.
type Conn struct {
	conn    net.Conn
	chunked bool     // the body is in HTTP/1.1 chunks, else it ends with the connection
	head    []byte   // the status line and headers, until written
	hdr     [18]byte // scratch for a chunk header
	gw      *gatherWriter
	gone    func()
	hungUp  sync.Once
	// reading is closed when the goroutine reading the connection has
	// returned; nil when a Poller watches it instead.
	reading chan struct{}
	poller  *Poller
	pollKey int32

	// After SetNonblocking: ready is called when the backlog is written.
	ready    func()
	mu       sync.Mutex
	backlog  [][]byte      // bytes written but not yet taken by the client
	draining bool          // a goroutine is writing the backlog
	drained  chan struct{} // closed when that goroutine has returned
	failed   error         // the backlog could not be written
	// busy is draining || failed != nil, for Blocked without the lock.
	busy atomic.Bool
}

// TakeOver takes the connection of w over from net/http before anything
// was written, for a 200 response whose headers are w's (sent with the
// first Write or End), plus Connection: close, a Date and, for HTTP/1.1,
// Transfer-Encoding: chunked; call Watch next. It returns an error, having
// changed nothing, if r is not HTTP/1.x or w cannot be taken over; w and r
// must not be used once it succeeds.
func TakeOver(w http.ResponseWriter, r *http.Request) (*Conn, error) {
	if r.ProtoMajor != 1 {
		return nil, errNotHTTP1
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return nil, err
	}
	h := w.Header()
	chunked := r.ProtoAtLeast(1, 1)
	proto := "HTTP/1.0"
	if chunked {
		proto = "HTTP/1.1"
		h.Set("Transfer-Encoding", "chunked")
	}
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	head := bytes.NewBuffer(make([]byte, 0, 512))
	head.WriteString(proto + " 200 OK\r\n")
	_ = h.Write(head)
	head.WriteString("\r\n")
	return newConn(conn, head.Bytes(), chunked), nil
}

// newConn returns the response on conn that starts with head.
func newConn(conn net.Conn, head []byte, chunked bool) *Conn {
	return &Conn{conn: conn, chunked: chunked, head: head, gw: newGatherWriter(conn)}
}

// Watch has the connection read until the client hangs up, then calls
// gone (if not nil): by p, or by a goroutine of its own if p is nil or
// cannot watch it. End and Drop stop the watch (waiting for that
// goroutine): gone is not called once they have returned. Call it once,
// before the first Write.
func (c *Conn) Watch(p *Poller, gone func()) {
	c.gone = gone
	if p != nil && p.watch(c) == nil {
		return
	}
	c.reading = make(chan struct{})
	go func() {
		defer close(c.reading)
		defer c.hangUp()
		// A client sends nothing more on this connection; whatever it
		// sends is read and dropped until it hangs up.
		var b [64]byte
		for {
			if _, err := c.conn.Read(b[:]); err != nil {
				return
			}
		}
	}()
}

// Watched reports whether a Poller watches the connection (rather than a
// goroutine of its own): only then may it be made non-blocking.
func (c *Conn) Watched() bool { return c.poller != nil }

// hangUp calls gone, once: the client has hung up.
func (c *Conn) hangUp() {
	if c.gone != nil {
		c.hungUp.Do(c.gone)
	}
}

// SetNonblocking makes Write return without waiting for the client: what
// the connection cannot take at once is kept (the bytes themselves are
// not copied, and must not change) and written by a goroutine that waits
// for the client, within the write deadline; meanwhile Blocked reports
// true and later Writes queue behind it, and ready is called once it is
// written (or failed). Call it once, before Write is called from another
// goroutine; a Conn that no Poller watches should not be made
// non-blocking (it cannot be on every platform).
func (c *Conn) SetNonblocking(ready func()) { c.ready = ready }

// Blocked reports whether bytes written earlier still wait for the
// client, and the error that ended their writing, if one did.
func (c *Conn) Blocked() (bool, error) {
	if !c.busy.Load() {
		return false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.draining, c.failed
}

// Write sends bufs, size bytes in all, as the next part of the body (one
// chunk), preceded by the head if it is still unsent. It returns the
// connection's error, at the write deadline for one. It allocates nothing
// for up to MaxBufs buffers; bufs is not modified nor kept.
func (c *Conn) Write(bufs [][]byte, size int) error {
	p := bufsPool.Get().(*[][]byte)
	iov := (*p)[:0]
	if c.head != nil {
		iov = append(iov, c.head)
		c.head = nil
	}
	if c.chunked {
		hdr := strconv.AppendUint(c.hdr[:0], uint64(size), 16)
		iov = append(iov, append(hdr, '\r', '\n'))
	}
	iov = append(iov, bufs...)
	if c.chunked {
		iov = append(iov, crlf)
	}
	var err error
	if c.ready == nil {
		err = c.gw.write(iov)
	} else {
		err = c.send(iov)
	}
	// The pool must not keep the buffers alive.
	clear(iov)
	if cap(iov) == cap(*p) {
		*p = iov[:0]
	} else {
		clear((*p)[:cap(*p)])
	}
	bufsPool.Put(p)
	return err
}

// send writes iov without waiting for the client: what the connection
// does not take now is kept for drain.
func (c *Conn) send(iov [][]byte) error {
	c.mu.Lock()
	if c.failed != nil || c.draining {
		err := c.failed
		if err == nil {
			c.keepLocked(iov)
		}
		c.mu.Unlock()
		return err
	}
	c.mu.Unlock()
	rest, err := c.gw.tryWrite(iov)
	if err != nil || len(rest) == 0 {
		return err
	}
	c.mu.Lock()
	c.keepLocked(rest)
	c.draining, c.drained = true, make(chan struct{})
	c.busy.Store(true)
	c.mu.Unlock()
	go c.drain()
	return nil
}

// keepLocked adds bufs to the backlog, copying what points into the
// Conn's scratch.
func (c *Conn) keepLocked(bufs [][]byte) {
	for _, b := range bufs {
		if len(b) > 0 && inArray(b, c.hdr[:]) {
			b = bytes.Clone(b)
		}
		c.backlog = append(c.backlog, b)
	}
}

// inArray reports whether b (not empty) lies in arr's memory.
func inArray(b, arr []byte) bool {
	p, lo := uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&arr[0]))
	return p >= lo && p < lo+uintptr(len(arr))
}

// drain writes the backlog, waiting for the client (at most until the
// write deadline), then calls ready.
func (c *Conn) drain() {
	defer close(c.drained)
	for {
		c.mu.Lock()
		bufs := c.backlog
		c.backlog = nil
		if len(bufs) == 0 {
			c.draining = false
			c.busy.Store(false)
			c.mu.Unlock()
			break
		}
		c.mu.Unlock()
		if err := c.gw.write(bufs); err != nil {
			c.mu.Lock()
			c.failed, c.backlog, c.draining = err, nil, false
			c.mu.Unlock()
			break
		}
	}
	c.ready()
}

// waitDrained waits until no goroutine writes the backlog.
func (c *Conn) waitDrained() {
	c.mu.Lock()
	ch := c.drained
	c.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// SetWriteDeadline sets the connection's write deadline; a Write in
// progress fails when it passes.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// End ends the response cleanly, last (if not empty) being the final
// bytes of its body: it writes the head if it is still unsent (the client
// then gets a whole response), last and the last chunk, within
// finishTimeout, then closes the connection and waits for its reader. On a
// non-blocking Conn it first waits for the backlog to be written (within
// the write deadline), and drops the response if it could not be.
func (c *Conn) End(last []byte) {
	c.waitDrained()
	if _, err := c.Blocked(); err != nil {
		c.Drop()
		return
	}
	end := c.head
	if len(last) > 0 && c.chunked {
		end = strconv.AppendUint(end, uint64(len(last)), 16)
		end = append(append(append(end, crlf...), last...), crlf...)
	} else {
		end = append(end, last...)
	}
	if c.chunked {
		end = append(end, lastChunk...)
	}
	if len(end) > 0 {
		_ = c.conn.SetWriteDeadline(time.Now().Add(finishTimeout))
		_, _ = c.conn.Write(end)
	}
	c.head = nil
	c.Drop()
}

// Drop closes the connection without writing anything more, after a
// failed write, and waits for its reader and for the goroutine writing
// its backlog. It may be called more than once.
func (c *Conn) Drop() {
	if c.poller != nil {
		c.poller.forget(c)
	}
	_ = c.conn.Close()
	if c.reading != nil {
		<-c.reading
	}
	c.waitDrained()
}
