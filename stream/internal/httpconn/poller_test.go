//go:build linux

package httpconn

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// newPoller starts a Poller closed at the end of the test.
func newPoller(t *testing.T) *Poller {
	t.Helper()
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// TestPollerNoticesHangUp: a Poller, not a goroutine per connection,
// reads and drops what clients send and calls gone when one hangs up;
// Drop stops the watch.
func TestPollerNoticesHangUp(t *testing.T) {
	p := newPoller(t)
	server, client := tcpPair(t)
	gone := make(chan struct{})
	c := newConn(server, nil, true)
	c.Watch(p, func() { close(gone) })
	if !c.Watched() || p.Watching() != 1 {
		t.Fatalf("Watched %v, Watching %d; want the poller to watch the connection", c.Watched(), p.Watching())
	}
	// Bytes a client sends are no hang-up.
	fmt.Fprint(client, strings.Repeat("ignored bytes ", 1000))
	select {
	case <-gone:
		t.Fatal("gone called while the client is still there")
	case <-time.After(100 * time.Millisecond):
	}
	client.Close()
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("gone not called within 10s of the client hanging up")
	}
	c.Drop()
	if n := p.Watching(); n != 0 {
		t.Fatalf("after Drop the poller watches %d connections, want 0", n)
	}
}

// TestPollerDropBeforeHangUp: a response dropped first is forgotten: its
// client hanging up later calls nothing.
func TestPollerDropBeforeHangUp(t *testing.T) {
	p := newPoller(t)
	server, client := tcpPair(t)
	c := newConn(server, nil, true)
	c.Watch(p, func() { t.Error("gone called after Drop") })
	c.Drop()
	client.Close()
	// Another connection's hang-up is seen, so the poller has looked.
	server2, client2 := tcpPair(t)
	gone := make(chan struct{})
	c2 := newConn(server2, nil, true)
	c2.Watch(p, func() { close(gone) })
	client2.Close()
	<-gone
	c2.Drop()
}

// nonblockingPair returns a non-blocking, poller-watched HTTP/1.1
// response whose client does not read until the test says so; ready
// receives a value each time the backlog has been written.
func nonblockingPair(t *testing.T) (c *Conn, client net.Conn, ready chan struct{}) {
	p := newPoller(t)
	server, client := tcpPair(t)
	client.(*net.TCPConn).SetReadBuffer(16 << 10)
	c = newConn(server, []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), true)
	c.Watch(p, nil)
	ready = make(chan struct{}, 1000)
	c.SetNonblocking(func() { ready <- struct{}{} })
	return c, client, ready
}

// TestNonblockingWriteKeepsBacklog: Writes to a client that does not
// read return at once; what the socket cannot take is kept and written
// once the client reads, in order, each Write its own chunk (the chunk
// sizes, made in the Conn's scratch, survive later Writes); End waits for
// the backlog before the last chunk.
func TestNonblockingWriteKeepsBacklog(t *testing.T) {
	c, client, ready := nonblockingPair(t)
	var want bytes.Buffer
	blocked := false
	for i := 0; i < 400; i++ {
		piece := bytes.Repeat([]byte{byte('a' + i%26)}, 1000+i) // a new chunk size each time
		if err := c.Write([][]byte{piece, []byte("\n")}, len(piece)+1); err != nil {
			t.Fatalf("Write %d: %v", i, err)
		}
		want.Write(piece)
		want.WriteByte('\n')
		if b, err := c.Blocked(); err != nil {
			t.Fatal(err)
		} else if b {
			blocked = true
		}
	}
	if !blocked {
		t.Fatal("400 KB to a client that does not read never left a backlog")
	}
	got := make(chan []byte)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(client), nil)
		if err != nil {
			t.Error(err)
			close(got)
			return
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Error(err)
		}
		got <- b
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("ready not called within 10s of the client reading")
	}
	c.End([]byte("end\n"))
	want.WriteString("end\n")
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("the client got %d bytes, not the %d written, in order", len(b), want.Len())
	}
}

// TestNonblockingDeadline: a backlog the client does not take by the
// write deadline fails the response: ready is called, Blocked and the
// next Write report the error, and End drops the connection.
func TestNonblockingDeadline(t *testing.T) {
	c, client, ready := nonblockingPair(t)
	c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	piece := bytes.Repeat([]byte("x"), 64<<10)
	for i := 0; ; i++ {
		if err := c.Write([][]byte{piece}, len(piece)); err != nil {
			t.Fatal(err)
		}
		if b, _ := c.Blocked(); b {
			break
		}
		if i > 1000 {
			t.Fatal("64 MB to a client that does not read never left a backlog")
		}
	}
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("ready not called within 10s of the write deadline")
	}
	if _, err := c.Blocked(); err == nil {
		t.Fatal("Blocked reports no error after the deadline passed")
	}
	if err := c.Write([][]byte{piece}, len(piece)); err == nil {
		t.Fatal("Write after a failed backlog succeeded")
	}
	c.End([]byte("end\n"))
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, client); err != nil {
		t.Fatalf("the connection was not closed: %v", err)
	}
}

// TestPollerStopsVisibly: when the poller stops (here: closed) while it
// watches a connection, that connection is reported hung up rather than
// left unwatched, and a connection watched afterwards gets a goroutine of
// its own, which still notices its client hang up.
func TestPollerStopsVisibly(t *testing.T) {
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	server, _ := tcpPair(t)
	gone := make(chan struct{})
	c := newConn(server, nil, true)
	c.Watch(p, func() { close(gone) })
	p.Close()
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("a connection watched by a stopped poller was not reported hung up")
	}
	c.Drop()

	server2, client2 := tcpPair(t)
	gone2 := make(chan struct{})
	c2 := newConn(server2, nil, true)
	c2.Watch(p, func() { close(gone2) })
	if c2.Watched() {
		t.Fatal("a stopped poller took a connection")
	}
	client2.Close()
	select {
	case <-gone2:
	case <-time.After(10 * time.Second):
		t.Fatal("gone not called within 10s of the client hanging up")
	}
	c2.Drop()
}
