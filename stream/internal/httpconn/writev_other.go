//go:build !linux

package httpconn

import "net"

// gatherWriter writes buffers to a connection.
type gatherWriter struct{ conn net.Conn }

func newGatherWriter(c net.Conn) *gatherWriter { return &gatherWriter{conn: c} }

// write writes every byte of bufs, or fails. It modifies bufs.
func (g *gatherWriter) write(bufs [][]byte) error {
	nb := net.Buffers(bufs)
	_, err := nb.WriteTo(g.conn)
	return err
}

// tryWrite writes every byte of bufs, or fails; nothing is left.
func (g *gatherWriter) tryWrite(bufs [][]byte) ([][]byte, error) { return nil, g.write(bufs) }
