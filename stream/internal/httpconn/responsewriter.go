package httpconn

import (
	"errors"
	"net/http"
	"time"
)

// ResponseWriter is a 200 response written through an http.ResponseWriter,
// for HTTP/2 and writers that cannot be taken over. It has Conn's methods
// and concurrency contract.
type ResponseWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// deadline says a write deadline was set, to be cleared at the end.
	deadline bool
}

// Respond sets the status of w to 200 (sent with w's headers on the first
// write) and returns the response written through it.
func Respond(w http.ResponseWriter) *ResponseWriter {
	w.WriteHeader(http.StatusOK)
	return &ResponseWriter{w: w, rc: http.NewResponseController(w)}
}

// Write writes bufs (size bytes in all) and flushes them to the client.
// A writer that cannot flush is written to all the same. It returns the
// first error of w.
func (rw *ResponseWriter) Write(bufs [][]byte, size int) error {
	for _, b := range bufs {
		if _, err := rw.w.Write(b); err != nil {
			return err
		}
	}
	if err := rw.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// SetWriteDeadline sets the write deadline of the connection under w; it
// returns an error wrapping http.ErrNotSupported if w cannot take one.
func (rw *ResponseWriter) SetWriteDeadline(t time.Time) error {
	err := rw.rc.SetWriteDeadline(t)
	if err == nil {
		rw.deadline = true
	}
	return err
}

// End writes last (if not empty), within finishTimeout, and clears the
// write deadline, so that the connection, if kept alive for another
// request, does not carry this response's deadline (net/http resets it
// only when the server has a WriteTimeout). net/http ends the response
// when the handler returns.
func (rw *ResponseWriter) End(last []byte) {
	if len(last) > 0 {
		_ = rw.SetWriteDeadline(time.Now().Add(finishTimeout))
		if _, err := rw.w.Write(last); err == nil {
			_ = rw.rc.Flush()
		}
	}
	if rw.deadline {
		_ = rw.rc.SetWriteDeadline(time.Time{})
	}
}

// Drop gives up on the response after a failed write: it writes nothing
// more and leaves the connection to net/http.
func (rw *ResponseWriter) Drop() {}

// Blocked reports false: Write waits for the client.
func (rw *ResponseWriter) Blocked() (bool, error) { return false, nil }
