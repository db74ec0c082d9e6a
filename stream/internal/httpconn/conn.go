// Package httpconn writes the body of a long-lived 200 response, either on
// the connection taken over from net/http (HTTP/1.x) or through the
// http.ResponseWriter (HTTP/2, or a writer that cannot be taken over).
//
// On a connection taken over the response needs no goroutine of
// net/http's, nor its buffers: Conn writes the status line and headers
// itself, frames the body in HTTP/1.1 chunks (HTTP/1.0: the body ends
// with the connection) and sends each Write, a list of buffers, as one
// chunk with one writev. Conn and ResponseWriter have the same methods,
// so the code above them chooses one when the response starts and never
// branches on it again.
package httpconn

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
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
type Conn struct {
	conn    net.Conn
	chunked bool     // the body is in HTTP/1.1 chunks, else it ends with the connection
	head    []byte   // the status line and headers, until written
	hdr     [18]byte // scratch for a chunk header
	gw      *gatherWriter
	reading chan struct{} // closed when the reader has returned
}

// TakeOver takes the connection of w over from net/http before anything
// was written, for a 200 response whose headers are w's (sent with the
// first Write or End), plus Connection: close, a Date and, for HTTP/1.1,
// Transfer-Encoding: chunked. It starts a goroutine that reads the
// connection until the client hangs up, then calls gone (if not nil);
// End and Drop close the connection and wait for that goroutine. It
// returns an error, having changed nothing, if r is not HTTP/1.x or w
// cannot be taken over; w and r must not be used once it succeeds.
func TakeOver(w http.ResponseWriter, r *http.Request, gone func()) (*Conn, error) {
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
	return newConn(conn, head.Bytes(), chunked, gone), nil
}

// newConn returns the response on conn that starts with head, and starts
// its reader.
func newConn(conn net.Conn, head []byte, chunked bool, gone func()) *Conn {
	c := &Conn{conn: conn, chunked: chunked, head: head, gw: newGatherWriter(conn), reading: make(chan struct{})}
	go func() {
		defer close(c.reading)
		if gone != nil {
			defer gone()
		}
		// A client sends nothing more on this connection; whatever it
		// sends is read and dropped until it hangs up.
		var b [64]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				return
			}
		}
	}()
	return c
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
	err := c.gw.write(iov)
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

// SetWriteDeadline sets the connection's write deadline; a Write in
// progress fails when it passes.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

// End ends the response cleanly, last (if not empty) being the final
// bytes of its body: it writes the head if it is still unsent (the client
// then gets a whole response), last and the last chunk, within
// finishTimeout, then closes the connection and waits for its reader.
func (c *Conn) End(last []byte) {
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
// failed write, and waits for its reader. It may be called more than once.
func (c *Conn) Drop() {
	_ = c.conn.Close()
	<-c.reading
}
