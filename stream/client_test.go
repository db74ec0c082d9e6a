package stream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func isInvalid(err error) bool { return errors.Is(err, ErrInvalidPosition) }

// parsedEvent is an event as a spec-following parser dispatches it.
type parsedEvent struct {
	ID   string
	Name EventName
	Data string
}

// parser follows the WHATWG event-stream parsing algorithm.
type parser struct {
	lastID, name string
	data         strings.Builder
	hasData      bool
	retry        string
}

// line processes one line (without its terminator) and returns a
// dispatched event, if any.
func (p *parser) line(l string) (parsedEvent, bool) {
	if l == "" {
		if !p.hasData {
			p.name = ""
			return parsedEvent{}, false
		}
		d := p.data.String()
		d = strings.TrimSuffix(d, "\n")
		ev := parsedEvent{ID: p.lastID, Name: EventName(p.name), Data: d}
		if ev.Name == "" {
			ev.Name = "message"
		}
		p.data.Reset()
		p.hasData, p.name = false, ""
		return ev, true
	}
	if l[0] == ':' {
		return parsedEvent{}, false
	}
	field, value, found := strings.Cut(l, ":")
	if found {
		value = strings.TrimPrefix(value, " ")
	}
	switch field {
	case "event":
		p.name = value
	case "data":
		p.data.WriteString(value)
		p.data.WriteByte('\n')
		p.hasData = true
	case "id":
		if !strings.Contains(value, "\x00") {
			p.lastID = value
		}
	case "retry":
		// Only a value of ASCII digits counts.
		if value != "" && strings.Trim(value, "0123456789") == "" {
			p.retry = value
		}
	}
	return parsedEvent{}, false
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
	text = strings.TrimPrefix(text, "\uFEFF")
	p := new(parser)
	var out []parsedEvent
	for len(text) > 0 {
		i := strings.IndexAny(text, "\r\n")
		if i < 0 {
			break // an unterminated line at EOF is not processed
		}
		l := text[:i]
		if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
			i++
		}
		text = text[i+1:]
		if ev, ok := p.line(l); ok {
			out = append(out, ev)
		}
	}
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
		var p parser
		br := bufio.NewReader(resp.Body)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				close(c.events)
				if err == io.EOF {
					err = nil
				}
				c.done <- err
				return
			}
			l = strings.TrimSuffix(strings.TrimSuffix(l, "\n"), "\r")
			if l == ": ping" {
				select {
				case c.pings <- struct{}{}:
				default:
				}
			}
			if ev, ok := p.line(l); ok {
				c.events <- ev
			}
		}
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
