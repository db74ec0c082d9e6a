package e2e

import (
	"bufio"
	"net/http/httputil"
)

// newChunkedReader decodes an HTTP/1.1 chunked body read from br.
func newChunkedReader(br *bufio.Reader) *bufio.Reader {
	return bufio.NewReader(httputil.NewChunkedReader(br))
}
