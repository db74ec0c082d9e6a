package stream

import (
	"bytes"
	"changecast/protocol"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// recorder is a ResponseWriter that can flush, safe to read while Serve
// writes.
type recorder struct {
	mu      sync.Mutex
	header  http.Header
	status  int
	body    bytes.Buffer
	flushes int
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(s int) {
	r.mu.Lock()
	r.status = s
	r.mu.Unlock()
}
func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status == 0 {
		r.status = 200
	}
	return r.body.Write(p)
}
func (r *recorder) Flush() {
	r.mu.Lock()
	r.flushes++
	r.mu.Unlock()
}
func (r *recorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.body.String()
}

// started returns a Multiplexer over src, started; the caller closes it.
func started(t *testing.T, src Source, cfg Config) *Multiplexer {
	t.Helper()
	m := New(src, cfg)
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestHeartbeatAndExpiry checks, on a fake clock, that a stream sends
// `retry:` and its snapshot at once, a `: ping` every heartbeat, its
// events as they come, and `expired` at the token's expiry, then ends.
func TestHeartbeatAndExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		m := started(t, src, Config{Heartbeat: 15 * time.Second, Retry: 2 * time.Second})
		defer m.Close()
		synctest.Wait()

		w := newRecorder()
		r := httptest.NewRequest("GET", "/", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Serve(w, r, StreamOptions{Topics: []string{"rooms/a"}, Expires: time.Now().Add(40 * time.Second)})
		}()
		synctest.Wait()
		got := w.text()
		if !strings.HasPrefix(got, "retry: 2000\n\n") || !strings.Contains(got, "event: snapshot") || strings.Contains(got, "ping") {
			t.Fatalf("at start the stream holds %q; want retry, then a snapshot, no ping", got)
		}
		if h := w.Header(); h.Get("Content-Type") != "text/event-stream" || h.Get("Cache-Control") != "no-cache, no-transform" || h.Get("X-Accel-Buffering") != "no" {
			t.Fatalf("headers %v", h)
		}

		time.Sleep(15*time.Second - time.Nanosecond)
		synctest.Wait()
		if n := strings.Count(w.text(), ": ping\n\n"); n != 0 {
			t.Fatalf("%d pings before the first heartbeat", n)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if n := strings.Count(w.text(), ": ping\n\n"); n != 1 {
			t.Fatalf("%d pings after one heartbeat interval, want 1", n)
		}
		ev := src.add("rooms/a", "hello")
		synctest.Wait()
		if !strings.Contains(w.text(), "id: "+ev.ID+"\n") {
			t.Fatalf("live event not written: %q", w.text())
		}
		time.Sleep(15 * time.Second)
		synctest.Wait()
		if n := strings.Count(w.text(), ": ping\n\n"); n != 2 {
			t.Fatalf("%d pings after two intervals, want 2", n)
		}
		select {
		case <-done:
			t.Fatal("stream ended before the token expired")
		default:
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("stream still open after the token expired")
		}
		if !strings.HasSuffix(w.text(), "event: expired\ndata: {\"topic\":\"rooms/a\",\"reason\":\"token expired\"}\n\n") {
			t.Fatalf("stream does not end with expired: %q", w.text())
		}
	})
}

// TestServeEndsWhenClientGoes: Serve returns when the request's context
// ends, and the stream's subscriber is counted, under the class
// Config.Classify gives its topics, only until then.
func TestServeEndsWhenClientGoes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		classify := func(topics []string) string { return "class of " + strings.Join(topics, ",") }
		m := started(t, src, Config{Classify: classify})
		defer m.Close()
		ctx, cancel := context.WithCancel(context.Background())
		r := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Serve(newRecorder(), r, StreamOptions{Topics: []string{"orders/1"}})
		}()
		synctest.Wait()
		if got := m.Stats(); got.OpenStreams != 1 || got.Subscribers != 1 || len(got.SubscribersByClass) != 1 || got.SubscribersByClass["class of orders/1"] != 1 {
			t.Fatalf("stats with one stream open: %+v", got)
		}
		cancel()
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("Serve still running after the client went")
		}
		if got := m.Stats(); got.OpenStreams != 0 || got.Subscribers != 0 || len(got.SubscribersByClass) != 0 {
			t.Fatalf("stats after the stream ended: %+v", got)
		}
	})
}

// plainWriter is a ResponseWriter that can neither flush nor take
// deadlines.
type plainWriter struct {
	mu     sync.Mutex
	header http.Header
	body   bytes.Buffer
}

func (p *plainWriter) Header() http.Header { return p.header }
func (p *plainWriter) WriteHeader(int)     {}
func (p *plainWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.body.Write(b)
}
func (p *plainWriter) text() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.body.String()
}

// deadlineRecorder is a recorder that also takes write deadlines.
type deadlineRecorder struct {
	*recorder
	deadlines []time.Time
}

func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.deadlines = append(d.deadlines, t)
	return nil
}

// serveInBubble runs Serve on w for topics in a goroutine and returns a
// function that ends the request and waits for Serve's result.
func serveInBubble(m *Multiplexer, w http.ResponseWriter, opts StreamOptions) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
	res := make(chan error, 1)
	go func() { res <- m.Serve(w, r, opts) }()
	return func() error {
		cancel()
		return <-res
	}
}

// TestServeWithoutFlusher: a writer that cannot flush or take deadlines
// still gets the whole stream, and Serve does not panic.
func TestServeWithoutFlusher(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		m := started(t, src, Config{})
		defer m.Close()
		w := &plainWriter{header: http.Header{}}
		stop := serveInBubble(m, w, StreamOptions{Topics: []string{"rooms/a"}})
		synctest.Wait()
		ev := src.add("rooms/a", "hello")
		synctest.Wait()
		if err := stop(); err != nil {
			t.Fatalf("Serve = %v, want nil", err)
		}
		evs := parseAll(w.text())
		if len(evs) != 2 || evs[0].Name != protocol.EventSnapshot || evs[1].ID != ev.ID {
			t.Fatalf("got %q; want a snapshot and event %s", evs, ev.ID)
		}
	})
}

// TestServeClearsWriteDeadline: writes push a deadline forward, and the
// deadline is cleared when the stream ends, so a kept-alive connection
// does not carry it into its next request.
func TestServeClearsWriteDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := started(t, newFakeSource(), Config{})
		defer m.Close()
		w := &deadlineRecorder{recorder: newRecorder()}
		stop := serveInBubble(m, w, StreamOptions{Topics: []string{"orders/1"}})
		synctest.Wait()
		w.mu.Lock()
		n := len(w.deadlines)
		var first time.Time
		if n > 0 {
			first = w.deadlines[0]
		}
		w.mu.Unlock()
		if n == 0 || !first.Equal(time.Now().Add(writeTimeout)) {
			t.Fatalf("deadlines while streaming %v; want now+%v first", w.deadlines, writeTimeout)
		}
		stop()
		if last := w.deadlines[len(w.deadlines)-1]; !last.IsZero() {
			t.Fatalf("deadline after the stream ended = %v, want none", last)
		}
	})
}

// TestServeRefusesBeforeWriting: without topics, or before Start, Serve
// writes nothing and returns the error, so the caller can answer it.
func TestServeRefusesBeforeWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(newFakeSource(), Config{})
		defer m.Close()
		for _, tc := range []struct {
			topics []string
			start  bool
			want   error
		}{
			{[]string{"rooms/a"}, false, ErrNotStarted},
			{nil, true, ErrNoTopics},
		} {
			if tc.start {
				if err := m.Start(); err != nil {
					t.Fatal(err)
				}
			}
			w := newRecorder()
			err := m.Serve(w, httptest.NewRequest("GET", "/", nil), StreamOptions{Topics: tc.topics})
			if err != tc.want || w.status != 0 || w.text() != "" {
				t.Errorf("Serve(%q) started=%v = %v, status %d, body %q; want %v and nothing written", tc.topics, tc.start, err, w.status, w.text(), tc.want)
			}
		}
	})
}

// TestStartAndClose: Start once; Close is idempotent, works before Start,
// and Start after Close fails without starting anything.
func TestStartAndClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(newFakeSource(), Config{})
		if m.Ready() {
			t.Error("Ready before Start")
		}
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if !m.Ready() {
			t.Error("not Ready once the feed delivered its first batch")
		}
		if err := m.Start(); err == nil {
			t.Error("second Start succeeded")
		}
		m.Close()
		m.Close()
		if m.Ready() {
			t.Error("Ready after Close")
		}

		n := New(newFakeSource(), Config{})
		n.Close()
		if err := n.Start(); err == nil {
			t.Error("Start after Close succeeded")
		}
	})
}

// TestResumeAheadOfFeedWaits checks, on a fake clock, a client whose id
// is ahead of this process's feed: when the feed gets there within
// aheadWait the client gets exactly what follows its id, and when it does
// not (an id this deployment never made, which looks right) the client
// is reset and gets a snapshot, then live events.
func TestResumeAheadOfFeedWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		for range 3 {
			src.add("rooms/a", "old")
		}
		m := started(t, src, Config{})
		defer m.Close()
		synctest.Wait()

		release := src.hold()
		ev4, ev5 := src.add("rooms/a", "four"), src.add("rooms/a", "five")
		w := newRecorder()
		stop := serveInBubble(m, w, StreamOptions{Topics: []string{"rooms/a"}, LastEventID: ev5.ID})
		time.Sleep(aheadWait - time.Second)
		synctest.Wait()
		if got := w.text(); got != "retry: 1000\n\n" {
			t.Fatalf("while the feed is behind the client the stream holds %q; want only retry", got)
		}
		release()
		synctest.Wait()
		ev6 := src.add("rooms/a", "six")
		time.Sleep(2 * aheadWait)
		synctest.Wait()
		got := w.text()
		if strings.Contains(got, "reset") || strings.Contains(got, ev4.ID) || strings.Contains(got, "id: "+ev5.ID) || !strings.Contains(got, "id: "+ev6.ID+"\n") {
			t.Fatalf("after the feed caught up with the client the stream holds %q; want only %s", got, ev6.ID)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}

		src.mu.Lock()
		src.foreign = true
		src.mu.Unlock()
		foreign := fakePos(99)
		w = newRecorder()
		stop = serveInBubble(m, w, StreamOptions{Topics: []string{"rooms/a"}, LastEventID: foreign})
		time.Sleep(aheadWait - time.Nanosecond)
		synctest.Wait()
		if got := w.text(); got != "retry: 1000\n\n" {
			t.Fatalf("before the wait is over the stream holds %q; want only retry", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		got = w.text()
		if !strings.Contains(got, "event: reset\ndata: {\"topic\":\"rooms/a\",\"reason\":\"invalid-id\"}") || !strings.Contains(got, "event: snapshot") {
			t.Fatalf("an id the feed never reaches gave %q; want reset then snapshot", got)
		}
		ev7 := src.add("rooms/a", "seven")
		synctest.Wait()
		if got := w.text(); !strings.HasSuffix(got, "id: "+ev7.ID+"\nevent: message\ndata: "+string(ev7.Data)+"\n\n") {
			t.Fatalf("after the reset the stream holds %q; want the live event %s last", got, ev7.ID)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// slowHeadSource is a Source whose Head answers only when its context
// ends, like a database that does not answer.
type slowHeadSource struct{ *fakeSource }

func (s slowHeadSource) Head(ctx context.Context) (string, error) {
	<-ctx.Done()
	return "", ctx.Err()
}

// TestCloseStopsStart: Close while Start waits for the log's head makes
// Start return at once, with an error, instead of after its timeout.
func TestCloseStopsStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := New(slowHeadSource{newFakeSource()}, Config{})
		res := make(chan error, 1)
		go func() { res <- m.Start() }()
		time.Sleep(time.Second)
		synctest.Wait()
		select {
		case err := <-res:
			t.Fatalf("Start returned %v while the head was not read", err)
		default:
		}
		m.Close()
		synctest.Wait()
		select {
		case err := <-res:
			if err == nil {
				t.Fatal("Start succeeded after Close")
			}
		default:
			t.Fatal("Start still waiting after Close")
		}
	})
}

// TestExpiredPerTopic: at expiry a stream of several topics sends one
// `expired` per topic, each carrying its topic, then ends.
func TestExpiredPerTopic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := started(t, newFakeSource(), Config{})
		defer m.Close()
		w := newRecorder()
		r := httptest.NewRequest("GET", "/", nil)
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Serve(w, r, StreamOptions{Topics: []string{"rooms/a", "orders/b"}, Expires: time.Now().Add(time.Minute)})
		}()
		time.Sleep(time.Minute)
		synctest.Wait()
		<-done
		_, evs := parseStream(w.text())
		var got []string
		for _, ev := range evs {
			if ev.Name == protocol.EventExpired {
				got = append(got, ev.Data)
			}
		}
		want := []string{`{"topic":"rooms/a","reason":"token expired"}`, `{"topic":"orders/b","reason":"token expired"}`}
		if !slices.Equal(got, want) || evs[len(evs)-1].Name != protocol.EventExpired {
			t.Fatalf("expired events %q (stream %q); want %q last", got, w.text(), want)
		}
	})
}

// TestQueueSwapAllocatesNothing: taking a burst of frames and handing the
// emptied slice back, as a stream does, allocates nothing once warm,
// whatever the burst's size.
func TestQueueSwapAllocatesNothing(t *testing.T) {
	s := &subscriber{}
	f := &frame{id: "x"}
	var spare []*frame
	round := func() {
		for range 100 {
			s.push(f, 256)
		}
		frames, _ := s.take(spare)
		if len(frames) != 100 {
			t.Fatalf("took %d frames, want 100", len(frames))
		}
		clear(frames)
		spare = frames[:0]
	}
	round()
	round()
	if n := testing.AllocsPerRun(100, round); n != 0 {
		t.Errorf("a burst of 100 allocates %v times, want 0", n)
	}
}

// TestIdleStreamLetsGoOfQueue: after bursts, a stream that gets nothing
// for a whole heartbeat lets go of its queue's arrays.
func TestIdleStreamLetsGoOfQueue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		m := started(t, src, Config{Heartbeat: 15 * time.Second})
		defer m.Close()
		w := newRecorder()
		stop := serveInBubble(m, w, StreamOptions{Topics: []string{"rooms/a"}})
		defer stop()
		synctest.Wait()
		// Two bursts: the queue then holds the array the first one grew.
		for range 2 {
			release := src.hold()
			for range 100 {
				src.add("rooms/a", "burst")
			}
			release()
			synctest.Wait()
		}
		var sub *subscriber
		m.mu.Lock()
		for s := range m.subs["rooms/a"] {
			sub = s
		}
		m.mu.Unlock()
		queueCap := func() int {
			sub.mu.Lock()
			defer sub.mu.Unlock()
			return cap(sub.q)
		}
		if c := queueCap(); c == 0 {
			t.Fatal("after two bursts the queue has no array; want the last burst's kept for the next")
		}
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if c := queueCap(); c != 0 {
			t.Fatalf("after two idle heartbeats the queue's array holds %d; want it let go", c)
		}
		if n := strings.Count(w.text(), "event: message"); n != 200 {
			t.Fatalf("%d events written, want the bursts' 200", n)
		}
	})
}

// TestMaxAge: with Config.MaxAge a stream ends cleanly, with reason
// EndMaxAge, between 3/4 MaxAge and MaxAge after it opened, having written
// every event queued before; its client resumes from its last id with
// nothing lost or twice. Without MaxAge a stream stays open.
func TestMaxAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		var ends []StreamEnd
		var mu sync.Mutex
		m := started(t, src, Config{MaxAge: time.Hour, OnStreamEnd: func(e StreamEnd) { mu.Lock(); ends = append(ends, e); mu.Unlock() }})
		defer m.Close()
		opened := time.Now()
		w := newRecorder()
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Serve(w, httptest.NewRequest("GET", "/", nil), StreamOptions{Topics: []string{"rooms/a"}})
		}()
		synctest.Wait()
		first := src.add("rooms/a", "one")
		time.Sleep(30 * time.Minute)
		second := src.add("rooms/a", "two")
		synctest.Wait()
		select {
		case <-done:
			t.Fatalf("the stream ended after %s, before 3/4 of MaxAge", time.Since(opened))
		default:
		}
		select {
		case <-done:
		case <-time.After(2 * time.Hour):
			t.Fatal("the stream was still open after twice its MaxAge")
		}
		age := time.Since(opened)
		if age < 45*time.Minute || age > time.Hour {
			t.Fatalf("the stream ended after %s; want between 45m and 1h", age)
		}
		mu.Lock()
		if len(ends) != 1 || ends[0].Reason != EndMaxAge {
			t.Fatalf("stream ends %+v; want one, of reason %s", ends, EndMaxAge)
		}
		mu.Unlock()
		p, evs := parseStream(w.text())
		if len(evs) < 3 || evs[1].ID != first.ID || evs[2].ID != second.ID || p.lastID != second.ID {
			t.Fatalf("the aged stream sent %q; want the snapshot, %s and %s", w.text(), first.ID, second.ID)
		}
		// The client resumes from its last id.
		third := src.add("rooms/a", "three")
		w2 := newRecorder()
		stop := serveInBubble(m, w2, StreamOptions{Topics: []string{"rooms/a"}, LastEventID: p.lastID})
		synctest.Wait()
		if _, evs := parseStream(w2.text()); len(evs) != 1 || evs[0].ID != third.ID {
			t.Fatalf("resumed after %s: %q; want only %s", p.lastID, w2.text(), third.ID)
		}
		stop()
	})
	synctest.Test(t, func(t *testing.T) {
		m := started(t, newFakeSource(), Config{})
		defer m.Close()
		w := newRecorder()
		stop := serveInBubble(m, w, StreamOptions{Topics: []string{"rooms/a"}})
		time.Sleep(24 * time.Hour)
		synctest.Wait()
		if m.Stats().OpenStreams != 1 {
			t.Fatal("without MaxAge a stream ended by itself")
		}
		stop()
	})
}
