package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"changecast/protocol"
	"changecast/store"
	"changecast/store/bolt"
	"changecast/store/streamsource"
	"changecast/stream"
	"changecast/stream/sseparse"
)

// testSecret signs the tests' tokens.
var testSecret = []byte("test-secret-for-changecast-handlers")

// waitTimeout is how long a test waits for something that should happen
// at once: generous, since the machine is shared; never a speed assert.
const waitTimeout = 15 * time.Second

// env is a running server over a real embedded store and multiplexer.
type env struct {
	url   string
	store *bolt.Store
	mux   *stream.Multiplexer
	logs  *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newEnv starts a server with auth on (testSecret) unless a change of
// the Config says otherwise, and stops it when the test ends: streams
// first, then the server, then the store.
func newEnv(tb testing.TB, change ...func(*Config)) *env {
	tb.Helper()
	return newEnvWrapped(tb, nil, change...)
}

// newEnvWrapped is newEnv with the server's handler wrapped by wrap (if
// not nil), outermost, as the binary wraps it in connlimit.Serve; the
// server then speaks HTTP/2 without TLS too, as the binary does.
func newEnvWrapped(tb testing.TB, wrap func(http.Handler) http.Handler, change ...func(*Config)) *env {
	tb.Helper()
	b, err := bolt.Open(tb.TempDir(), bolt.Options{})
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("close store: %v", err)
		}
	})
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	mux := stream.New(streamsource.New(b), stream.Config{Logger: logger, Presence: PresenceTopic})
	if err := mux.Start(); err != nil {
		tb.Fatalf("start multiplexer: %v", err)
	}
	cfg := Config{Store: b, Streams: mux, Logger: logger, Secret: testSecret}
	for _, f := range change {
		f(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		mux.Close()
		tb.Fatalf("New: %v", err)
	}
	h := checkSpec(tb, cfg, e)
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewUnstartedServer(h)
	if wrap != nil {
		// HTTP/2 without TLS too, as the binary serves it.
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv.Config.Protocols = &p
	}
	srv.Start()
	tb.Cleanup(srv.Close)
	tb.Cleanup(mux.Close)
	waitReady(tb, mux)
	return &env{url: srv.URL, store: b, mux: mux, logs: logs}
}

// dev makes newEnv start in dev mode.
func dev(c *Config) { c.Dev = true; c.Secret = nil }

func waitReady(tb testing.TB, mux *stream.Multiplexer) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !mux.Ready() {
		if time.Now().After(deadline) {
			tb.Fatal("multiplexer not ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// token returns a token for sub with role and rooms, valid for an hour.
func token(tb testing.TB, sub, role string, rooms ...string) string {
	tb.Helper()
	tok, err := IssueToken(testSecret, sub, role, rooms, time.Hour, time.Now())
	if err != nil {
		tb.Fatalf("IssueToken: %v", err)
	}
	return tok
}

// response is what a request got.
type response struct {
	status int
	header http.Header
	body   []byte
}

// errText returns the "error" of a JSON error body, or "" if there is none.
func (r response) errText() string {
	var e errorBody
	_ = json.Unmarshal(r.body, &e)
	return e.Error
}

// decode unmarshals the body into v.
func (r response) decode(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		tb.Fatalf("decode %s: %v", r.body, err)
	}
}

// req is one request: Token sets a Bearer token; JSON sets the
// Content-Type unless Header names one.
type req struct {
	method, path string
	body         string
	token        string
	header       map[string]string
}

func (e *env) do(tb testing.TB, r req) response {
	tb.Helper()
	res, err := e.try(r)
	if err != nil {
		tb.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	return res
}

// expect makes request r and reports (without stopping: it may run in
// any goroutine) unless it answers want.
func (e *env) expect(tb testing.TB, r req, want int) {
	tb.Helper()
	res, err := e.try(r)
	if err != nil {
		tb.Errorf("%s %s: %v", r.method, r.path, err)
	} else if res.status != want {
		tb.Errorf("%s %s: got %d %s, want %d", r.method, r.path, res.status, res.body, want)
	}
}

// try makes request r.
func (e *env) try(r req) (response, error) {
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr, err := http.NewRequest(r.method, e.url+r.path, body)
	if err != nil {
		return response{}, err
	}
	if r.body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.token)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	return roundTrip(hr)
}

// restClient makes the tests' plain requests: a stream answered where a
// refusal was expected would otherwise hang the test instead of failing it.
var restClient = &http.Client{Timeout: waitTimeout}

func roundTrip(hr *http.Request) (response, error) {
	res, err := restClient.Do(hr)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: res.StatusCode, header: res.Header, body: b}, nil
}

func send(tb testing.TB, hr *http.Request) response {
	tb.Helper()
	res, err := roundTrip(hr)
	if err != nil {
		tb.Fatalf("%s %s: %v", hr.Method, hr.URL.Path, err)
	}
	return res
}

// mustStatus fails unless r has status want.
func mustStatus(tb testing.TB, r response, want int) {
	tb.Helper()
	if r.status != want {
		tb.Fatalf("got status %d, want %d (body %s)", r.status, want, r.body)
	}
}

// createOrder creates an order for customer as staff.
func (e *env) createOrder(tb testing.TB, customer string) store.Order {
	tb.Helper()
	r := e.do(tb, req{method: "POST", path: "/api/orders", token: token(tb, "kitchen", RoleStaff, "*"),
		body: `{"customer":"` + customer + `","items":[{"sku":"pizza","qty":1}]}`})
	mustStatus(tb, r, http.StatusCreated)
	var o store.Order
	r.decode(tb, &o)
	return o
}

// head returns the store's newest log position.
func (e *env) head(tb testing.TB) string {
	tb.Helper()
	pos, err := e.store.Head(context.Background())
	if err != nil {
		tb.Fatalf("head: %v", err)
	}
	return pos
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	ID, Event, Data string
}

// sseStream reads a stream's events in a goroutine it owns; Close stops
// and waits for it. Presence events (id-less, beside the log) go to
// presence, the others to events.
type sseStream struct {
	header   http.Header
	events   chan sseEvent
	presence chan sseEvent
	cancel   context.CancelFunc
	done     chan struct{}
}

// openStream opens an SSE stream at path and fails unless it answers 200
// text/event-stream. It is closed when the test ends.
func (e *env) openStream(tb testing.TB, path string, header map[string]string) *sseStream {
	tb.Helper()
	s, res := e.tryStream(tb, path, header)
	if s == nil {
		tb.Fatalf("GET %s: got status %d, want 200 (body %s)", path, res.status, res.body)
	}
	return s
}

// tryStream opens a stream, or returns nil and the answer if it is not a
// 200 event stream.
func (e *env) tryStream(tb testing.TB, path string, header map[string]string) (*sseStream, response) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	hr, err := http.NewRequestWithContext(ctx, "GET", e.url+path, nil)
	if err != nil {
		cancel()
		tb.Fatalf("new request: %v", err)
	}
	for k, v := range header {
		hr.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(hr)
	if err != nil {
		cancel()
		tb.Fatalf("GET %s: %v", path, err)
	}
	if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		return nil, response{status: res.StatusCode, header: res.Header, body: b}
	}
	s := &sseStream{header: res.Header, events: make(chan sseEvent, 1024), presence: make(chan sseEvent, 1024), cancel: cancel, done: make(chan struct{})}
	go s.read(ctx, res.Body)
	tb.Cleanup(s.Close)
	return s, response{status: res.StatusCode, header: res.Header}
}

// read parses the stream (package sseparse) until it ends or is closed.
func (s *sseStream) read(ctx context.Context, body io.ReadCloser) {
	defer close(s.done)
	defer close(s.events)
	defer body.Close()
	dec := sseparse.Decoder{OnEvent: func(ev *sseparse.Event) bool {
		ch := s.events
		if string(ev.Name) == "presence" {
			ch = s.presence
		}
		select {
		case ch <- sseEvent{ID: string(ev.ID), Event: string(ev.Name), Data: string(ev.Data)}:
			return true
		case <-ctx.Done():
			return false
		}
	}}
	dec.Decode(body)
}

// Close ends the stream and waits for its reader.
func (s *sseStream) Close() {
	s.cancel()
	<-s.done
}

// next returns the next event, failing after waitTimeout or if the stream
// ends.
func (s *sseStream) next(tb testing.TB) sseEvent {
	tb.Helper()
	select {
	case ev, ok := <-s.events:
		if !ok {
			tb.Fatal("stream ended; wanted another event")
		}
		return ev
	case <-time.After(waitTimeout):
		tb.Fatal("no event within the timeout")
	}
	return sseEvent{}
}

// ended waits for the stream to end, failing after waitTimeout; it
// returns the events that came before the end.
func (s *sseStream) ended(tb testing.TB) []sseEvent {
	tb.Helper()
	var got []sseEvent
	timeout := time.After(waitTimeout)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				return got
			}
			got = append(got, ev)
		case <-timeout:
			tb.Fatal("stream did not end within the timeout")
		}
	}
}

func (ev sseEvent) payload(tb testing.TB) protocol.Payload {
	tb.Helper()
	var p protocol.Payload
	if err := json.Unmarshal([]byte(ev.Data), &p); err != nil {
		tb.Fatalf("event %q data %q: %v", ev.Event, ev.Data, err)
	}
	return p
}
