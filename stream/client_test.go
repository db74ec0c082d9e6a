package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"changecast/protocol"
	"changecast/stream/sseparse"
)

func isInvalid(err error) bool { return errors.Is(err, ErrInvalidPosition) }

// parsedEvent is an event as a spec-following parser dispatches it.
type parsedEvent struct {
	ID   string
	Name protocol.EventName
	Data string
}

// parser follows the WHATWG event-stream parsing algorithm (package
// sseparse) and keeps what a client ends up with.
type parser struct {
	dec    sseparse.Decoder
	lastID string
	retry  string // the latest valid retry value, in milliseconds
	pings  func() // called for each `: ping` comment
}

// newParser returns a parser that passes each event to emit, named
// "message" if it has no name, as EventSource does.
func newParser(emit func(parsedEvent)) *parser {
	p := new(parser)
	p.dec.OnEvent = func(ev *sseparse.Event) bool {
		e := parsedEvent{ID: string(ev.ID), Name: protocol.EventName(ev.Name), Data: string(ev.Data)}
		if e.Name == "" {
			e.Name = "message"
		}
		emit(e)
		return true
	}
	p.dec.OnRetry = func(d time.Duration) { p.retry = strconv.FormatInt(d.Milliseconds(), 10) }
	p.dec.OnComment = func(text []byte) {
		if string(text) == " ping" && p.pings != nil {
			p.pings()
		}
	}
	return p
}

// parseAll splits text into lines on CRLF, LF or CR and parses them, as
// a client does with a whole stream (one leading BOM is ignored). It works
// on bytes: the encoder is byte-transparent, so decoding UTF-8 first would
// change both sides of a comparison alike.
func parseAll(text string) []parsedEvent {
	_, out := parseStream(text)
	return out
}

// parseStream is parseAll that also returns the parser's final state.
func parseStream(text string) (*parser, []parsedEvent) {
	var out []parsedEvent
	p := newParser(func(e parsedEvent) { out = append(out, e) })
	p.dec.Feed([]byte(text)) // an unterminated line at EOF is not processed
	p.lastID = string(p.dec.LastEventID())
	return p, out
}

// sseConn is a test client reading one stream over real HTTP.
type sseConn struct {
	resp   *http.Response
	events chan parsedEvent
	done   chan error
	cancel context.CancelFunc
	pings  chan struct{}
}

// dial opens url with an optional Last-Event-ID header.
func dial(tb testing.TB, u, lastID string) *sseConn {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", u, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		tb.Fatalf("GET %s: %d %q; want 200 text/event-stream", u, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	c := &sseConn{resp: resp, events: make(chan parsedEvent, 1<<16), done: make(chan error, 1), cancel: cancel, pings: make(chan struct{}, 1024)}
	go func() {
		p := newParser(func(e parsedEvent) { c.events <- e })
		p.pings = func() {
			select {
			case c.pings <- struct{}{}:
			default:
			}
		}
		err := p.dec.Decode(resp.Body)
		close(c.events)
		c.done <- err
	}()
	tb.Cleanup(c.close)
	return c
}

func (c *sseConn) close() {
	c.cancel()
	c.resp.Body.Close()
}

// next returns the next event, failing after a generous timeout.
func (c *sseConn) next(tb testing.TB) parsedEvent {
	tb.Helper()
	select {
	case ev, ok := <-c.events:
		if !ok {
			tb.Fatalf("stream ended; wanted another event")
		}
		return ev
	case <-time.After(10 * time.Second):
		tb.Fatalf("no event within 10s")
	}
	return parsedEvent{}
}

// nextN returns the next n events.
func (c *sseConn) nextN(tb testing.TB, n int) []parsedEvent {
	tb.Helper()
	out := make([]parsedEvent, 0, n)
	for range n {
		out = append(out, c.next(tb))
	}
	return out
}

// ended waits for the server to end the stream and returns the events
// that came before the end.
func (c *sseConn) ended(tb testing.TB) []parsedEvent {
	tb.Helper()
	var out []parsedEvent
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				if err := <-c.done; err != nil {
					tb.Fatalf("stream ended with %v, want a clean end", err)
				}
				return out
			}
			out = append(out, ev)
		case <-timeout:
			tb.Fatalf("stream did not end within 20s")
			return out
		}
	}
}

// testServer serves m's streams: /?topic=a&topic=b&lastEventId=x.
func testServer(tb testing.TB, m *Multiplexer) *httptest.Server {
	tb.Helper()
	srv := httptest.NewServer(streamHandler(m))
	tb.Cleanup(srv.Close)
	return srv
}

// smallBufferServer is testServer with each connection's send buffer
// shrunk to a few KiB, so a client that stops reading blocks the server's
// writes soon.
func smallBufferServer(tb testing.TB, m *Multiplexer) *httptest.Server {
	tb.Helper()
	srv := httptest.NewUnstartedServer(streamHandler(m))
	srv.Listener = smallBufferListener{srv.Listener}
	srv.Start()
	tb.Cleanup(srv.Close)
	return srv
}

type smallBufferListener struct{ net.Listener }

func (l smallBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4 << 10)
	}
	return c, err
}

// rawStream opens a stream on a plain TCP connection with a small receive
// buffer, for a client that stops reading, and returns the connection
// once the server has the request.
func rawStream(tb testing.TB, srv *httptest.Server, query string) net.Conn {
	tb.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	conn.(*net.TCPConn).SetReadBuffer(4 << 10)
	if _, err := fmt.Fprintf(conn, "GET /?%s HTTP/1.1\r\nHost: x\r\n\r\n", query); err != nil {
		tb.Fatal(err)
	}
	return conn
}

// streamHandler serves m's streams: /?topic=a&topic=b&lastEventId=x&expires=1m.
func streamHandler(m *Multiplexer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		last := r.Header.Get("Last-Event-ID")
		if last == "" {
			last = r.URL.Query().Get("lastEventId")
		}
		var exp time.Time
		if e := r.URL.Query().Get("expires"); e != "" {
			d, _ := time.ParseDuration(e)
			exp = time.Now().Add(d)
		}
		m.Serve(w, r, StreamOptions{Topics: r.URL.Query()["topic"], LastEventID: last, Expires: exp})
	})
}

func topicsURL(base string, topics ...string) string {
	v := url.Values{"topic": topics}
	return base + "/?" + v.Encode()
}

// startMux starts a multiplexer over src with cfg and closes it at cleanup.
func startMux(tb testing.TB, src Source, cfg Config) *Multiplexer {
	tb.Helper()
	m := New(src, cfg)
	if err := m.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(m.Close)
	waitFor(tb, "feed ready", m.Ready)
	return m
}

func waitFor(tb testing.TB, what string, ok func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
	}
}
