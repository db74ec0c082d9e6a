package httpconn

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// readAll reads what the client end of a connection gets until the
// server closes it.
func readAll(t *testing.T, client net.Conn) string {
	t.Helper()
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(client)
	if err != nil {
		t.Fatalf("reading the response: %v after %q", err, b)
	}
	return string(b)
}

// TestConnFraming: each Write is one HTTP/1.1 chunk, the head goes with
// the first, and End sends the last words as a chunk and the last chunk;
// on HTTP/1.0 the body is the bytes alone and ends with the connection.
// Either way net/http's client reads the whole body.
func TestConnFraming(t *testing.T) {
	const (
		head11 = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
		head10 = "HTTP/1.0 200 OK\r\nConnection: close\r\n\r\n"
	)
	for _, tc := range []struct {
		chunked    bool
		head, want string
	}{
		{true, head11, head11 + "d\r\nretry: 1000\n\n\r\n" + "a\r\nabcdefghij\r\n" + "8\r\n: bye\n\n\n\r\n" + "0\r\n\r\n"},
		{false, head10, head10 + "retry: 1000\n\n" + "abcdefghij" + ": bye\n\n\n"},
	} {
		server, client := tcpPair(t)
		c := watched(server, []byte(tc.head), tc.chunked, nil)
		if err := c.Write([][]byte{[]byte("retry: 1000\n\n")}, 13); err != nil {
			t.Fatal(err)
		}
		if err := c.Write([][]byte{[]byte("ab"), []byte("cdefgh"), []byte("ij")}, 10); err != nil {
			t.Fatal(err)
		}
		c.End([]byte(": bye\n\n\n"))
		got := readAll(t, client)
		if got != tc.want {
			t.Fatalf("chunked %v: the client got %q; want %q", tc.chunked, got, tc.want)
		}
		resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(got)), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		if want := "retry: 1000\n\nabcdefghij: bye\n\n\n"; err != nil || string(body) != want {
			t.Fatalf("chunked %v: net/http reads body %q, %v; want %q", tc.chunked, body, err, want)
		}
	}
}

// TestEndSendsUnsentHead: a response ended before its first write still
// gives its client a whole response, not a bare last chunk: empty, or
// with the last words End is given.
func TestEndSendsUnsentHead(t *testing.T) {
	for _, last := range []string{"", "retry: 3000\n\n"} {
		for _, chunked := range []bool{true, false} {
			server, client := tcpPair(t)
			head := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
			if !chunked {
				head = "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
			}
			c := watched(server, []byte(head), chunked, nil)
			c.End([]byte(last))
			client.SetReadDeadline(time.Now().Add(10 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(client), nil)
			if err != nil {
				t.Fatalf("chunked %v: the client cannot read the response: %v", chunked, err)
			}
			body, err := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || err != nil || string(body) != last {
				t.Fatalf("chunked %v: got %d, body %q, %v; want 200 with body %q that ends cleanly", chunked, resp.StatusCode, body, err, last)
			}
		}
	}
}

// TestDropWritesNothing: Drop closes the connection without the head or
// a last chunk, so the client sees a cut-off response, not a clean end.
func TestDropWritesNothing(t *testing.T) {
	server, client := tcpPair(t)
	c := watched(server, []byte("HTTP/1.1 200 OK\r\n\r\n"), true, nil)
	c.Drop()
	c.Drop()
	if got := readAll(t, client); got != "" {
		t.Fatalf("after Drop the client got %q; want nothing", got)
	}
}

// TestConnGone: when the client hangs up, gone is called, while nothing
// is written; Drop then returns once the reader has.
func TestConnGone(t *testing.T) {
	server, client := tcpPair(t)
	gone := make(chan struct{})
	c := watched(server, nil, true, func() { close(gone) })
	fmt.Fprint(client, "ignored bytes a client may send")
	client.Close()
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("gone not called within 10s of the client hanging up")
	}
	c.Drop()
}

// TestConnWriteAllocs: a Write of up to MaxBufs buffers allocates nothing.
func TestConnWriteAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	server, client := tcpPair(t)
	go io.Copy(io.Discard, client)
	c := watched(server, []byte("HTTP/1.1 200 OK\r\n\r\n"), true, nil)
	defer c.Drop()
	frame := []byte("id: 1\nevent: message\ndata: {}\n\n")
	bufs := make([][]byte, MaxBufs)
	for i := range bufs {
		bufs[i] = frame
	}
	if n := testing.AllocsPerRun(100, func() {
		if err := c.Write(bufs, len(frame)*len(bufs)); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a write of %d buffers allocates %v times, want 0", len(bufs), n)
	}
}

// TestTakeOver: over a real server, TakeOver answers HTTP/1.1 with a
// chunked, closing 200 that carries the handler's headers, and HTTP/1.0
// with a body that ends with the connection. An HTTP/2 request cannot be
// taken over; Respond then writes through the ResponseWriter.
func TestTakeOver(t *testing.T) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-Request-Id", "req-1")
		var rw interface {
			Write([][]byte, int) error
			End([]byte)
		}
		if c, err := TakeOver(w, r); err == nil {
			rw = c
		} else {
			rw = Respond(w)
		}
		if err := rw.Write([][]byte{[]byte("data: "), []byte(r.Proto + "\n\n")}, 6+len(r.Proto)+2); err != nil {
			t.Errorf("Write: %v", err)
		}
		rw.End([]byte(": end\n\n"))
	})

	srv := httptest.NewServer(handler)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "data: HTTP/1.1\n\n: end\n\n" || resp.StatusCode != 200 ||
		resp.Header.Get("X-Request-Id") != "req-1" || resp.Header.Get("Date") == "" ||
		len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || !resp.Close {
		t.Fatalf("HTTP/1.1: %d, headers %v, transfer encoding %v, close %v, body %q, %v; want a chunked, closing 200 with the handler's headers",
			resp.StatusCode, resp.Header, resp.TransferEncoding, resp.Close, body, err)
	}

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: x\r\n\r\n")
	head, rest, _ := strings.Cut(readAll(t, conn), "\r\n\r\n")
	if !strings.HasPrefix(head, "HTTP/1.0 200 OK\r\n") || strings.Contains(head, "Transfer-Encoding") || rest != "data: HTTP/1.0\n\n: end\n\n" {
		t.Fatalf("HTTP/1.0: head %q, body %q; want a 200 without chunks", head, rest)
	}

	tlsSrv := httptest.NewUnstartedServer(handler)
	tlsSrv.EnableHTTP2 = true
	tlsSrv.StartTLS()
	defer tlsSrv.Close()
	client := tlsSrv.Client()
	client.Transport.(*http.Transport).TLSClientConfig.NextProtos = []string{"h2"}
	client.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	resp, err = client.Get(tlsSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.ProtoMajor != 2 || string(body) != "data: HTTP/2.0\n\n: end\n\n" || resp.Header.Get("X-Request-Id") != "req-1" {
		t.Fatalf("HTTP/2: %s %d, body %q, %v; want the response through the ResponseWriter", resp.Proto, resp.StatusCode, body, err)
	}
}

// watched is newConn, read by a goroutine of its own that calls gone.
func watched(conn net.Conn, head []byte, chunked bool, gone func()) *Conn {
	c := newConn(conn, head, chunked)
	c.Watch(nil, gone)
	return c
}
