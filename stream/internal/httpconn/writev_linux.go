package httpconn

import (
	"net"
	"sync"
	"syscall"
	"unsafe"
)

// maxIovecs is the most buffers one writev takes (Linux's IOV_MAX).
const maxIovecs = 1024

var iovecPool = sync.Pool{New: func() any {
	s := make([]syscall.Iovec, 0, maxWriteBufs)
	return &s
}}

// gatherWriter writes buffers to a connection with writev, as
// net.Buffers does, but with scratch iovecs from a pool (net keeps each
// connection's iovecs at their largest size for the life of the
// connection, which a catch-up of a few hundred pieces would leave on
// every stream) and without allocating per write.
type gatherWriter struct {
	conn net.Conn
	rc   syscall.RawConn // nil: write with net.Buffers
	fn   func(fd uintptr) bool
	fd   uintptr // the connection's descriptor, with rc
	// State of the write in progress.
	bufs     [][]byte
	iov      *[]syscall.Iovec
	err      error
	nonblock bool // return at EAGAIN rather than wait
}

func newGatherWriter(c net.Conn) *gatherWriter {
	g := &gatherWriter{conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if rc, err := sc.SyscallConn(); err == nil {
			if rc.Control(func(fd uintptr) { g.fd = fd }) == nil {
				g.rc = rc
				g.fn = g.writev
			}
		}
	}
	return g
}

// write writes every byte of bufs, or fails (at the connection's write
// deadline, for one). It modifies bufs.
func (g *gatherWriter) write(bufs [][]byte) error {
	if g.rc == nil {
		nb := net.Buffers(bufs)
		_, err := nb.WriteTo(g.conn)
		return err
	}
	_, err := g.writeFrom(bufs, false)
	return err
}

// tryWrite writes what the connection takes now, without waiting, and
// returns the rest of bufs (which it modifies). A connection without a
// descriptor is written to in full.
func (g *gatherWriter) tryWrite(bufs [][]byte) ([][]byte, error) {
	if g.rc == nil {
		return nil, g.write(bufs)
	}
	return g.writeFrom(bufs, true)
}

// writeFrom writes bufs with pooled iovecs and returns what is left of
// them. Waiting, it goes through the RawConn, which parks until the
// socket has room and honours the deadline. Not waiting, it writes to the
// descriptor directly, without the net package's locks and deadline
// checks (a write that cannot wait needs neither): the caller must only
// do so while the connection is open, which the Conn's owner guarantees
// by closing it only after its last Write.
func (g *gatherWriter) writeFrom(bufs [][]byte, nonblock bool) ([][]byte, error) {
	g.bufs, g.err, g.nonblock = bufs, nil, nonblock
	g.iov = iovecPool.Get().(*[]syscall.Iovec)
	var err error
	if nonblock {
		g.writev(g.fd)
	} else {
		err = g.rc.Write(g.fn)
	}
	iovecPool.Put(g.iov)
	rest := g.bufs
	g.bufs, g.iov = nil, nil
	switch {
	case g.err != nil:
		return nil, &net.OpError{Op: "writev", Net: g.conn.LocalAddr().Network(), Source: g.conn.LocalAddr(), Addr: g.conn.RemoteAddr(), Err: g.err}
	case err != nil:
		return nil, err
	}
	return rest, nil
}

// writev is called by the runtime when the socket may take more; it
// returns false to wait until it can.
func (g *gatherWriter) writev(fd uintptr) bool {
	for len(g.bufs) > 0 {
		iov := (*g.iov)[:0]
		for _, b := range g.bufs {
			if len(b) == 0 {
				continue
			}
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
			if len(iov) == maxIovecs {
				break
			}
		}
		if cap(iov) <= maxWriteBufs {
			*g.iov = iov
		} else {
			// iov outgrew the pooled array, which still holds the
			// first pieces: the pool must not keep them alive.
			clear((*g.iov)[:cap(*g.iov)])
		}
		if len(iov) == 0 {
			return true
		}
		n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		clear(iov) // the pool must not keep the buffers alive
		switch errno {
		case 0:
			consume(&g.bufs, int(n))
		case syscall.EINTR:
		case syscall.EAGAIN:
			return g.nonblock
		default:
			g.err = errno
			return true
		}
	}
	return true
}

// consume drops the first n bytes of bufs.
func consume(bufs *[][]byte, n int) {
	for len(*bufs) > 0 {
		b := (*bufs)[0]
		if n < len(b) {
			(*bufs)[0] = b[n:]
			return
		}
		n -= len(b)
		(*bufs)[0] = nil
		*bufs = (*bufs)[1:]
	}
}
