package connlimit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// acceptAll accepts from l until it is closed, handing each connection
// to the returned channel; the channel closes when l does.
func acceptAll(t *testing.T, l net.Listener) <-chan net.Conn {
	t.Helper()
	ch := make(chan net.Conn, 64)
	go func() {
		defer close(ch)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		for c := range ch {
			c.Close()
		}
	})
	return ch
}

func nextConn(t *testing.T, ch <-chan net.Conn) net.Conn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no connection accepted within 10s")
		return nil
	}
}

func dialT(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestLimitListener: past max and the reserve a connection is closed on
// arrival and counted; closing one frees its place; a reserve connection
// is marked as such.
func TestLimitListener(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(tcp, 2, 1, time.Hour)
	accepted := acceptAll(t, l)
	addr := tcp.Addr().String()

	var server []net.Conn
	for range 3 {
		dialT(t, addr)
		server = append(server, nextConn(t, accepted))
	}
	if _, ok := server[2].(*reserveConn); !ok {
		t.Errorf("third connection is %T, want a reserve connection", server[2])
	}
	for _, c := range server[:2] {
		if _, ok := c.(*reserveConn); ok {
			t.Errorf("connection within max is a reserve connection")
		}
	}
	if got := l.Open(); got != 3 {
		t.Errorf("Open() = %d, want 3", got)
	}

	refused := dialT(t, addr)
	refused.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := refused.Read(make([]byte, 1)); !isClosed(err) {
		t.Errorf("fourth connection: read %v, want closed by the server", err)
	}
	if got := l.Refused(); got != 1 {
		t.Errorf("Refused() = %d, want 1", got)
	}

	// Closing twice frees one place.
	server[0].Close()
	server[0].Close()
	if got := l.Open(); got != 2 {
		t.Errorf("Open() after a close = %d, want 2", got)
	}
	dialT(t, addr)
	if c := nextConn(t, accepted); func() bool { _, ok := c.(*reserveConn); return ok }() {
		t.Errorf("connection after a close is a reserve connection, want an ordinary one")
	}
	if got := l.Refused(); got != 1 {
		t.Errorf("Refused() = %d, want still 1", got)
	}
}

// TestReserveConnProbation: a reserve connection's reads end at its
// probation even when a later deadline, or none, is asked for.
func TestReserveConnProbation(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(tcp, 0, 1, 50*time.Millisecond)
	accepted := acceptAll(t, l)
	dialT(t, tcp.Addr().String())
	c := nextConn(t, accepted)
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Errorf("read on a silent reserve connection: %v, want a timeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("read on a silent reserve connection still waiting after 10s; want it ended at the probation")
	}
}

// TestLimitedConnSyscallConn: the stream writer can still reach the
// socket (writev) through the wrapper.
func TestLimitedConnSyscallConn(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(tcp, 1, 0, time.Second)
	accepted := acceptAll(t, l)
	dialT(t, tcp.Addr().String())
	c := nextConn(t, accepted)
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("%T is not a syscall.Conn", c)
	}
	if _, err := sc.SyscallConn(); err != nil {
		t.Errorf("SyscallConn: %v", err)
	}
}

// TestServeReserve: on a reserve connection only the health checks are
// served, and every answer closes the connection.
func TestServeReserve(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(tcp, 0, 4, time.Minute) // every connection in the reserve
	srv := &http.Server{
		Handler: ServeReserve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "served")
		})),
		ConnContext: MarkReserve,
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	t.Cleanup(func() { srv.Close(); <-done })

	for _, tc := range []struct {
		path string
		want int
	}{
		{"/healthz", http.StatusOK},
		{"/readyz", http.StatusOK},
		{"/api/orders", http.StatusServiceUnavailable},
		{"/metrics", http.StatusServiceUnavailable},
	} {
		c := dialT(t, tcp.Addr().String())
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET "+tc.path+" HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
		if !resp.Close {
			t.Errorf("%s: answer keeps the connection open, want Connection: close", tc.path)
		}
		if _, err := br.ReadByte(); !isClosed(err) {
			t.Errorf("%s: connection still open after the answer (read: %v)", tc.path, err)
		}
	}
}

func TestDefaultMaxConnections(t *testing.T) {
	for _, tc := range []struct {
		limit uint64
		want  int
	}{
		{0, unknownFileLimitConns},
		{1024, 1024 - FDHeadroom},
		{1 << 20, 1<<20 - FDHeadroom},
		{256, 128},
		{1, 1},
	} {
		if got := DefaultMax(tc.limit); got != tc.want {
			t.Errorf("DefaultMax(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
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
