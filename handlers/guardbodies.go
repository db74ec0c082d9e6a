package handlers

import (
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// GuardBodies keeps request bodies from holding connections: a body must
// arrive within timeout (a read deadline on the connection, which
// net/http clears once the body has been read to its end; a read past it
// fails with an error wrapping os.ErrDeadlineExceeded, which decodeJSON
// answers with 408), and an error answer (4xx or 5xx) to a request whose
// body has not been read to its end closes the connection, without
// net/http first waiting to read and drop up to 256 KiB of the rest.
// Requests without a body (streams among them) pass untouched, so no
// deadline ever reaches a stream's connection. It wraps next, the
// outermost handler of an http.Server (it needs the connection's
// deadlines through http.ResponseController), and is as safe for
// concurrent use as next is.
func GuardBodies(next http.Handler, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(time.Now().Add(timeout))
		b := &watchedBody{ReadCloser: r.Body}
		r2 := *r
		r2.Body = b
		next.ServeHTTP(&bodyGuardWriter{ResponseWriter: w, body: b, rc: rc}, &r2)
	})
}

// watchedBody is a request body that knows whether it was read to its
// end. (At the end net/http itself lifts the read deadline GuardBodies
// set, to watch for the client going away.)
type watchedBody struct {
	io.ReadCloser
	done atomic.Bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.done.Store(true)
	}
	return n, err
}

// bodyGuardWriter closes the connection after an error answer to a
// request whose body is unread.
type bodyGuardWriter struct {
	http.ResponseWriter
	body *watchedBody
	rc   *http.ResponseController
}

// WriteHeader sends the status; for an error with the body unread, it
// asks for the connection to close and ends any wait for the body, so
// the answer goes out at once.
func (w *bodyGuardWriter) WriteHeader(code int) {
	if code >= http.StatusBadRequest && !w.body.done.Load() {
		w.Header().Set("Connection", "close")
		_ = w.rc.SetReadDeadline(time.Now())
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap gives http.ResponseController (flushing, hijacking, deadlines)
// the writer underneath.
func (w *bodyGuardWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
