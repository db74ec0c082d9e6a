//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package stream

import "net"

// writeBuffers writes every byte of bufs to c. It modifies bufs.
func writeBuffers(c net.Conn, bufs [][]byte) error {
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(c)
	return err
}
