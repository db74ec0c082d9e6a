package handlers

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"
)

// serveGuarded serves h behind GuardBodies(timeout) on a real listener
// and returns its address.
func serveGuarded(t *testing.T, h http.HandlerFunc, timeout time.Duration) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: GuardBodies(h, timeout), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

// sendPartial sends a POST promising 100 bytes of body and sending one,
// and returns the answer, which must come within 10 s.
func sendPartial(t *testing.T, addr string) (*http.Response, *bufio.Reader) {
	t.Helper()
	c := dialT(t, addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer while the body is unsent: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	return resp, br
}

// TestGuardBodiesRefusal: an error answer that does not read the body
// goes out at once (net/http alone first waits to read the rest) and
// closes the connection.
func TestGuardBodiesRefusal(t *testing.T) {
	addr := serveGuarded(t, func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no token", http.StatusUnauthorized)
	}, time.Hour)
	resp, br := sendPartial(t, addr)
	if resp.StatusCode != http.StatusUnauthorized || !resp.Close {
		t.Errorf("status %d, close %t; want 401 and Connection: close", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); !isClosed(err) {
		t.Errorf("connection still open after the refusal (read: %v)", err)
	}
}

// TestGuardBodiesTimeout: a body that stops arriving fails the handler's
// read at the timeout.
func TestGuardBodiesTimeout(t *testing.T) {
	addr := serveGuarded(t, func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			http.Error(w, "too slow", http.StatusRequestTimeout)
			return
		}
		http.Error(w, "read: "+errString(err), http.StatusBadRequest)
	}, 100*time.Millisecond)
	resp, br := sendPartial(t, addr)
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Errorf("status %d, close %t; want 408 and Connection: close", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); !isClosed(err) {
		t.Errorf("connection still open after the timeout (read: %v)", err)
	}
}

// TestGuardBodiesKeepAlive: a request whose body arrived keeps its
// connection, errors included, and the next request on it is served
// after the body timeout has passed.
func TestGuardBodiesKeepAlive(t *testing.T) {
	const timeout = 50 * time.Millisecond
	addr := serveGuarded(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if string(b) == "wait" {
			// Outlive the body timeout with the body read: the
			// deadline must not reach the read net/http then does to
			// learn whether the client went away.
			select {
			case <-r.Context().Done():
				http.Error(w, "cancelled", http.StatusServiceUnavailable)
				return
			case <-time.After(4 * timeout):
			}
		}
		http.Error(w, string(b), http.StatusConflict)
	}, timeout)
	c := dialT(t, addr)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for _, body := range []string{"wait", "next"} {
		io.WriteString(c, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"+body)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusConflict || resp.Close {
			t.Errorf("%s: status %d %q, close %t; want 409 on a kept connection", body, resp.StatusCode, got, resp.Close)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "no error"
	}
	return err.Error()
}

// dialT dials addr and closes the connection when the test ends.
func dialT(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// isClosed reports whether err from a read means the peer closed the
// connection (not a timeout, not data).
func isClosed(err error) bool {
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		return false
	}
	return true
}
