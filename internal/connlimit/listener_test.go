package connlimit

import (
	"errors"
	"net"
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

// acceptOne listens with a Listener of one place and no reserve, whose
// graces last an hour, and accepts one connection into that place; both
// are closed at cleanup.
func acceptOne(t *testing.T) (*Listener, net.Conn) {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(tcp, 1, 0, time.Hour, time.Hour, time.Hour)
	t.Cleanup(func() { l.Close() })
	dialT(t, tcp.Addr().String())
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return l, nc
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

// TestReserveConnProbation: a reserve connection's reads end at its
// probation even when a later deadline, or none, is asked for.
func TestReserveConnProbation(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(tcp, 0, 1, 50*time.Millisecond, time.Hour, time.Hour)
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
	l := NewListener(tcp, 1, 0, time.Second, time.Hour, time.Hour)
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
