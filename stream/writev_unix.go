//go:build linux || darwin || freebsd || netbsd || openbsd

package stream

import (
	"net"
	"sync"
	"syscall"
	"unsafe"
)

// maxIovecs is the most buffers one writev takes (IOV_MAX on these
// systems).
const maxIovecs = 1024

var iovecPool = sync.Pool{New: func() any {
	s := make([]syscall.Iovec, 0, maxPieces+3)
	return &s
}}

// writeBuffers writes every byte of bufs to c, gathering them with
// writev as net.Buffers does, but with scratch iovecs from a pool: net
// keeps each connection's iovecs at their largest size for the life of
// the connection, which a catch-up of a few hundred pieces would leave
// on every stream. It modifies bufs.
func writeBuffers(c net.Conn, bufs [][]byte) error {
	sc, ok := c.(syscall.Conn)
	if !ok {
		nb := net.Buffers(bufs)
		_, err := nb.WriteTo(c)
		return err
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	p := iovecPool.Get().(*[]syscall.Iovec)
	defer iovecPool.Put(p)
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for len(bufs) > 0 {
			iov := (*p)[:0]
			for _, b := range bufs {
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
			if cap(iov) <= maxPieces+3 {
				*p = iov
			}
			if len(iov) == 0 {
				return true
			}
			n, _, errno := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
			clear(iov) // the pool must not keep the buffers alive
			switch errno {
			case 0:
				consume(&bufs, int(n))
			case syscall.EINTR:
			case syscall.EAGAIN:
				return false // wait until the socket can take more
			default:
				werr = errno
				return true
			}
		}
		return true
	})
	if werr != nil {
		return &net.OpError{Op: "writev", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: werr}
	}
	return err
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
