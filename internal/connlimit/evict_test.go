package connlimit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// testServer is an http.Server on a Listener, wired as changecast's is.
// Its handler answers "ok", except /block (and /healthz?block), which
// hold the request until release is closed, telling entered when they
// start, and /hijack, which takes the connection over and keeps it.
type testServer struct {
	l       *Listener
	addr    string
	entered chan string
	release chan struct{}
}

func startServer(t *testing.T, max, reserve int, probation, grace time.Duration) *testServer {
	t.Helper()
	return startServerWith(t, max, reserve, probation, grace, grace, time.Hour)
}

// startServerWith is startServer with its idle grace and write timeout
// too. Its handler also answers /big with bigSize bytes, and (over
// HTTP/2) /small with a few bytes once the handler has returned.
func startServerWith(t *testing.T, max, reserve int, probation, grace, idleGrace, writeTimeout time.Duration) *testServer {
	t.Helper()
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{
		l:       NewListener(tcp, max, reserve, probation, grace, idleGrace),
		addr:    tcp.Addr().String(),
		entered: make(chan string, 16),
		release: make(chan struct{}),
	}
	var mu sync.Mutex
	var taken []net.Conn
	srv := &http.Server{
		Handler: Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/block" || r.URL.RawQuery == "block":
				s.entered <- r.URL.Path
				<-s.release
			case r.URL.Path == "/hijack":
				c, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Errorf("hijack: %v", err)
					return
				}
				brw.WriteString("taken\n")
				brw.Flush()
				mu.Lock()
				taken = append(taken, c)
				mu.Unlock()
				return
			case r.URL.Path == "/big":
				s.entered <- r.URL.Path
				chunk := make([]byte, 64<<10)
				for n := 0; n < bigSize; n += len(chunk) {
					if _, err := w.Write(chunk); err != nil {
						return
					}
				}
				return
			}
			io.WriteString(w, "ok")
		}), writeTimeout),
		ConnContext: ConnContext,
		ConnState:   ConnState,
	}
	served := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.ServeHTTP(w, r)
		if r.URL.Path == "/small" {
			s.entered <- "/small returned"
		}
	})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv.Protocols = &protocols
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(s.l) }()
	t.Cleanup(func() {
		closeOnce(s.release)
		srv.Close()
		<-done
		mu.Lock()
		for _, c := range taken {
			c.Close()
		}
		mu.Unlock()
	})
	return s
}

// wantTally checks how many connections l has evicted and refused.
func wantTally(t *testing.T, l *Listener, evicted, refused uint64) {
	t.Helper()
	if l.Evicted() != evicted || l.Refused() != refused {
		t.Errorf("Evicted() = %d, Refused() = %d, want %d and %d", l.Evicted(), l.Refused(), evicted, refused)
	}
}

var closeMu sync.Mutex

func closeOnce(ch chan struct{}) {
	closeMu.Lock()
	defer closeMu.Unlock()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// client is one raw connection to a testServer.
type client struct {
	net.Conn
	br *bufio.Reader
}

func (s *testServer) dial(t *testing.T) *client {
	t.Helper()
	return &client{Conn: dialT(t, s.addr)}
}

// get sends a request for path on c (keep-alive).
func (c *client) get(t *testing.T, path string) {
	t.Helper()
	if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// answer reads the answer to a request on c within 10 s.
func (c *client) answer(t *testing.T) *http.Response {
	t.Helper()
	if c.br == nil {
		c.br = bufio.NewReader(c)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// wantClosed fails unless the server closes c within 10 s.
func (c *client) wantClosed(t *testing.T, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !isClosed(err) {
		t.Errorf("%s: read %v, want the connection closed by the server", what, err)
	}
}

// wantOpen fails if the server closes c, or sends it anything, within d.
func (c *client) wantOpen(t *testing.T, what string, d time.Duration) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	var ne net.Error
	if _, err := c.Read(make([]byte, 1)); err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("%s: read %v, want the connection open and quiet", what, err)
	}
	c.SetReadDeadline(time.Time{})
}

func (s *testServer) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-s.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("blocking request not served within 10s")
	}
}

// TestEvictSilentNotServing: when every place is held, a newcomer takes
// the place of a connection that never sent a request, not that of one
// serving a request, even an older one.
func TestEvictSilentNotServing(t *testing.T) {
	s := startServer(t, 2, 0, time.Hour, 20*time.Millisecond)
	serving := s.dial(t)
	serving.get(t, "/block")
	s.waitEntered(t)
	silent := s.dial(t)
	silent.wantOpen(t, "silent connection before the flood", 50*time.Millisecond)

	newcomer := s.dial(t)
	newcomer.get(t, "/healthz")
	if resp := newcomer.answer(t); resp.StatusCode != http.StatusOK {
		t.Errorf("newcomer: status %d, want 200", resp.StatusCode)
	}
	silent.wantClosed(t, "silent connection")
	closeOnce(s.release)
	if resp := serving.answer(t); resp.StatusCode != http.StatusOK {
		t.Errorf("serving connection: status %d, want 200", resp.StatusCode)
	}
	wantTally(t, s.l, 1, 0)
}

// TestEvictSilentBeforeIdle: a connection that never sent a request
// loses its place before an idle keep-alive one, even a longer idle one;
// then the longest idle one goes.
func TestEvictSilentBeforeIdle(t *testing.T) {
	s := startServer(t, 2, 0, time.Hour, 20*time.Millisecond)
	idle := s.dial(t)
	idle.get(t, "/healthz")
	if resp := idle.answer(t); resp.Close {
		t.Fatal("keep-alive answer closes the connection")
	}
	silent := s.dial(t)
	silent.wantOpen(t, "silent connection before the newcomer", 50*time.Millisecond)

	first := s.dial(t)
	first.get(t, "/healthz")
	first.answer(t)
	silent.wantClosed(t, "silent connection")
	idle.wantOpen(t, "idle connection after the first newcomer", 50*time.Millisecond)

	second := s.dial(t)
	second.get(t, "/healthz")
	second.answer(t)
	idle.wantClosed(t, "longest idle connection")
	first.get(t, "/healthz")
	if resp := first.answer(t); resp.StatusCode != http.StatusOK {
		t.Errorf("newer idle connection: status %d, want 200 on it", resp.StatusCode)
	}
	if got := s.l.Evicted(); got != 2 {
		t.Errorf("Evicted() = %d, want 2", got)
	}
}

// TestGraceHoldsPlace: a connection keeps its place for the grace: a
// newcomer waits (unanswered, not refused) and gets the place as soon as
// it comes free.
func TestGraceHoldsPlace(t *testing.T) {
	s := startServer(t, 1, 0, time.Hour, time.Hour)
	holder := s.dial(t)
	newcomer := s.dial(t)
	newcomer.get(t, "/healthz")
	newcomer.wantOpen(t, "newcomer within the grace", 200*time.Millisecond)
	holder.wantOpen(t, "holder within its grace", 50*time.Millisecond)
	holder.Close()
	if resp := newcomer.answer(t); resp.StatusCode != http.StatusOK {
		t.Errorf("newcomer once the place is free: status %d, want 200", resp.StatusCode)
	}
	wantTally(t, s.l, 0, 0)
}

// TestReserveHolds: with every ordinary place serving a request, the
// reserve answers health checks only, closing after each answer, and a
// silent connection there loses its place to a newer one.
func TestReserveHolds(t *testing.T) {
	s := startServer(t, 1, 1, time.Hour, 20*time.Millisecond)
	serving := s.dial(t)
	serving.get(t, "/block")
	s.waitEntered(t)
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/healthz", http.StatusOK},
		{"/readyz", http.StatusOK},
		{"/api/orders", http.StatusServiceUnavailable},
		{"/metrics", http.StatusServiceUnavailable},
	} {
		c := s.dial(t)
		c.get(t, tc.path)
		resp := c.answer(t)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.path, resp.StatusCode, tc.want)
		}
		if !resp.Close {
			t.Errorf("%s: answer keeps the connection open, want Connection: close", tc.path)
		}
		c.wantClosed(t, tc.path+" after the answer")
	}
	silent := s.dial(t)
	silent.wantOpen(t, "silent reserve connection", 50*time.Millisecond)
	health := s.dial(t)
	health.get(t, "/healthz")
	if resp := health.answer(t); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz with the reserve held by a silent connection: status %d, want 200", resp.StatusCode)
	}
	silent.wantClosed(t, "silent reserve connection")
}

// TestRefusedWhenAllServe: with every place, reserve included, serving a
// request, a newcomer is closed at once and counted.
func TestRefusedWhenAllServe(t *testing.T) {
	s := startServer(t, 1, 1, time.Hour, 20*time.Millisecond)
	ordinary := s.dial(t)
	ordinary.get(t, "/block")
	s.waitEntered(t)
	reserve := s.dial(t)
	reserve.get(t, "/healthz?block")
	s.waitEntered(t)
	s.dial(t).wantClosed(t, "connection past every busy place")
	if got := s.l.Refused(); got != 1 {
		t.Errorf("Refused() = %d, want 1", got)
	}
	closeOnce(s.release)
	ordinary.answer(t)
	reserve.answer(t)
	if got := s.l.Evicted(); got != 0 {
		t.Errorf("Evicted() = %d, want 0", got)
	}
}

// TestTakenConnKeepsPlace: a connection its handler took over (as an
// HTTP/1.1 stream does) keeps its place after the handler returns.
func TestTakenConnKeepsPlace(t *testing.T) {
	s := startServer(t, 1, 0, time.Hour, 20*time.Millisecond)
	stream := s.dial(t)
	stream.get(t, "/hijack")
	stream.SetReadDeadline(time.Now().Add(10 * time.Second))
	stream.br = bufio.NewReader(stream)
	if line, err := stream.br.ReadString('\n'); err != nil || line != "taken\n" {
		t.Fatalf("hijacked connection: %q %v", line, err)
	}
	s.dial(t).wantClosed(t, "connection past a taken-over one")
	stream.wantOpen(t, "taken-over connection", 100*time.Millisecond)
	wantTally(t, s.l, 0, 1)
	if got := s.l.Open(); got != 1 {
		t.Errorf("Open() = %d, want 1", got)
	}
}

// TestHTTP2ConnPlace: an HTTP/2 connection holds one place whatever it
// carries; it keeps it while any of its streams is served, and gives it
// up, once idle past the grace, to a newcomer.
func TestHTTP2ConnPlace(t *testing.T) {
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := NewListener(tcp, 1, 0, time.Hour, 20*time.Millisecond, 20*time.Millisecond)
	entered, release := make(chan struct{}, 4), make(chan struct{})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols: &protocols,
		Handler: Serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/block" {
				entered <- struct{}{}
				<-release
			}
			io.WriteString(w, r.Proto)
		}), time.Hour),
		ConnContext: ConnContext,
		ConnState:   ConnState,
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(l) }()
	defer func() { closeOnce(release); srv.Close(); <-done }()

	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{Protocols: &h2}, Timeout: 10 * time.Second}
	base := "http://" + tcp.Addr().String()
	results := make(chan error, 2)
	for range 2 {
		go func() {
			resp, err := hc.Get(base + "/block")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.ProtoMajor != 2 {
					err = errors.New("answered over " + resp.Proto)
				}
			}
			results <- err
		}()
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("HTTP/2 request not served within 10s")
		}
	}
	if got := l.Open(); got != 1 {
		t.Errorf("Open() with two HTTP/2 streams = %d, want 1 connection", got)
	}
	c := &client{Conn: dialT(t, tcp.Addr().String())}
	c.wantClosed(t, "newcomer while the HTTP/2 connection serves")
	closeOnce(release)
	for range 2 {
		if err := <-results; err != nil {
			t.Fatalf("HTTP/2 request: %v", err)
		}
	}
	newcomer := &client{Conn: dialT(t, tcp.Addr().String())}
	newcomer.get(t, "/")
	if resp := newcomer.answer(t); resp.StatusCode != http.StatusOK {
		t.Errorf("newcomer after the HTTP/2 streams ended: status %d, want 200", resp.StatusCode)
	}
	wantTally(t, l, 1, 1)
}

// TestCloseWhileWaiting: an Accept waiting for a place to come free
// returns once the Listener is closed, and the newcomer is closed.
func TestCloseWhileWaiting(t *testing.T) {
	l, _ := acceptOne(t)
	newcomer := &client{Conn: dialT(t, l.Addr().String())}
	accepted := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	newcomer.wantOpen(t, "newcomer while the holder's grace lasts", 100*time.Millisecond)
	l.Close()
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Accept still waiting 10s after Close")
	}
	newcomer.wantClosed(t, "newcomer once the listener is closed")
}
