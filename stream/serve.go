package stream

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"
)

// StreamOptions say what one stream carries.
type StreamOptions struct {
	// Topics are the topics to carry, already validated and authorized.
	Topics []string
	// LastEventID is the position to resume after; empty for a fresh
	// connection (which gets a snapshot first).
	LastEventID string
	// Expires, if not zero, is when the client's token expires: the stream
	// then sends `event: expired` and ends.
	Expires time.Time
}

// streamWriter is the state of one response. Serve's goroutine alone
// writes through it; Close may only cut short a write in progress.
type streamWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	buf     []byte
	pending int // events in buf
	events  int // events written
	err     error
	// pushed is when the write deadline was last pushed forward.
	pushed time.Time

	mu       sync.Mutex
	writing  bool // a write to the client is in progress
	aborting bool // the multiplexer is closing
}

func (sw *streamWriter) add(b []byte) { sw.buf = append(sw.buf, b...) }

// addEvent adds one event's frame.
func (sw *streamWriter) addEvent(b []byte) {
	sw.buf = append(sw.buf, b...)
	sw.pending++
}

// flush writes what is buffered and flushes it to the client, pushing the
// write deadline forward first (at most once a second: it costs a timer
// update). A writer that cannot flush or take deadlines is written to
// all the same. It returns the number of events written.
func (sw *streamWriter) flush() (int, error) {
	if sw.err != nil {
		return 0, sw.err
	}
	if len(sw.buf) == 0 {
		return 0, nil
	}
	sw.mu.Lock()
	if sw.aborting {
		sw.mu.Unlock()
		sw.err = errAborted
		return 0, sw.err
	}
	sw.writing = true
	if now := time.Now(); now.Sub(sw.pushed) >= time.Second {
		if err := sw.rc.SetWriteDeadline(now.Add(writeTimeout)); err == nil {
			sw.pushed = now
		}
	}
	sw.mu.Unlock()
	_, err := sw.w.Write(sw.buf)
	if err == nil {
		if ferr := sw.rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
			err = ferr
		}
	}
	sw.mu.Lock()
	sw.writing = false
	sw.mu.Unlock()
	if err != nil {
		sw.err = err
		return 0, err
	}
	n := sw.pending
	sw.events += n
	sw.buf, sw.pending = sw.buf[:0], 0
	return n, nil
}

// abort cuts short a write in progress (to a client that does not read)
// and makes later writes fail, so Serve returns promptly on Close. It is
// called from Close's goroutine, under the multiplexer's lock, while the
// stream is registered.
func (sw *streamWriter) abort() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.aborting = true
	if sw.writing {
		_ = sw.rc.SetWriteDeadline(time.Now())
	}
}

// finish clears the write deadline, so that the connection, if kept alive
// for another request, does not carry this stream's deadline (net/http
// resets it only when the server has a WriteTimeout).
func (sw *streamWriter) finish() {
	if !sw.pushed.IsZero() && (sw.err == nil || sw.err == errAborted) {
		_ = sw.rc.SetWriteDeadline(time.Time{})
	}
}

var (
	errWrite   = errors.New("write to client failed")
	errAborted = errors.New("stream aborted by Close")
)

// send flushes sw and counts what was delivered.
func (m *Multiplexer) send(sw *streamWriter) error {
	n, err := sw.flush()
	if n > 0 {
		m.delivered.Add(uint64(n))
	}
	return err
}

// addStream registers sw as being served. It returns false if the
// multiplexer is closed, and ErrNotStarted before Start succeeded.
func (m *Multiplexer) addStream(sw *streamWriter) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return false, nil
	case !m.started:
		return false, ErrNotStarted
	}
	m.streams[sw] = struct{}{}
	m.serving.Add(1)
	return true, nil
}

func (m *Multiplexer) removeStream(sw *streamWriter) {
	m.mu.Lock()
	delete(m.streams, sw)
	m.mu.Unlock()
	m.serving.Done()
}

// Serve writes the SSE response for opts.Topics to w: headers and a
// `retry:` line at once; then a snapshot (fresh connection), or the events
// after opts.LastEventID (from memory or the Source), or a `reset` per
// topic and a snapshot when that id cannot be resumed; then live events
// and `: ping` heartbeats. Repeated topics count once.
//
// It returns when the client goes, the Multiplexer closes, the subscriber
// falls too far behind, or the token expires; the response then ends
// cleanly so the client reconnects, and Serve returns nil. Before writing
// anything it returns ErrNoTopics or ErrNotStarted; after the headers are
// written it returns an error only when the Source fails in a way that is
// not the client's (the caller should log it and write nothing more).
// Serve is safe for concurrent use; it must be the only writer of w.
func (m *Multiplexer) Serve(w http.ResponseWriter, r *http.Request, opts StreamOptions) (err error) {
	topics := uniq(opts.Topics)
	if len(topics) == 0 {
		return ErrNoTopics
	}
	opts.Topics = topics
	sw := &streamWriter{w: w, rc: http.NewResponseController(w)}
	serving, err := m.addStream(sw)
	if err != nil {
		return err
	}
	if serving {
		defer m.removeStream(sw)
	}
	// Every Source call of this stream ends with the request or with Close.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(m.ctx, cancel)()

	start := time.Now()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	sw.add(AppendRetry(nil, m.cfg.Retry))
	defer sw.finish()

	m.openStreams.Add(1)
	reason := "client-gone"
	defer func() {
		m.openStreams.Add(-1)
		if m.cfg.OnStreamEnd != nil {
			m.cfg.OnStreamEnd(StreamEnd{RequestID: w.Header().Get("X-Request-Id"), Topics: topics, Duration: time.Since(start), Events: sw.events, Reason: reason})
		}
	}()
	// ended names why the stream ends now that ctx is done.
	ended := func() string {
		if m.ctx.Err() != nil {
			return "shutdown"
		}
		return "client-gone"
	}

	if err := m.send(sw); err != nil {
		reason = "write-failed"
		return nil
	}
	if !serving {
		reason = "shutdown"
		return nil
	}
	sub, head := m.subscribe(topics)
	if sub == nil {
		reason = "shutdown"
		return nil
	}
	defer m.unsubscribe(sub)

	var expired <-chan time.Time
	if !opts.Expires.IsZero() {
		t := time.NewTimer(time.Until(opts.Expires))
		defer t.Stop()
		expired = t.C
	}

	after, err := m.begin(ctx, sw, opts, head)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			reason = ended()
			return nil
		case errors.Is(err, errWrite):
			reason = "write-failed"
			return nil
		}
		reason = "source-failed"
		m.log.Warn("stream could not catch up", "topics", topics, "err", err)
		return err
	}
	if err := m.send(sw); err != nil {
		reason = "write-failed"
		return nil
	}

	heartbeat := time.NewTicker(m.cfg.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			reason = ended()
			return nil
		case <-expired:
			reason = "expired"
			sw.add(expiredFrame)
			m.send(sw)
			return nil
		case <-heartbeat.C:
			sw.add(pingFrame)
		case f, ok := <-sub.ch:
			if !ok {
				reason = m.reasonOf(sub)
				m.send(sw)
				return nil
			}
			after = write(sw, f, after)
			// Drain what else is queued, then flush once.
		drain:
			for len(sw.buf) < flushSize {
				select {
				case f, ok := <-sub.ch:
					if !ok {
						reason = m.reasonOf(sub)
						m.send(sw)
						return nil
					}
					after = write(sw, f, after)
				default:
					break drain
				}
			}
		}
		if err := m.send(sw); err != nil {
			reason = "write-failed"
			if errors.Is(err, errAborted) {
				reason = "shutdown"
			}
			return nil
		}
	}
}

// flushSize is how much a stream buffers before writing to the client
// while draining its queue or catching up: a few TCP segments' worth, so
// a burst costs few syscalls and a client sees progress early.
const flushSize = 64 << 10

// Frames Serve writes besides events.
var (
	pingFrame    = AppendComment(nil, "ping")
	expiredFrame = []byte("event: expired\ndata: {\"reason\":\"token expired\"}\n\n")
)

// uniq returns topics without repeats, in their first order.
func uniq(topics []string) []string {
	for i := range topics {
		if slices.Contains(topics[:i], topics[i]) {
			out := slices.Clone(topics[:i])
			for _, t := range topics[i:] {
				if !slices.Contains(out, t) {
					out = append(out, t)
				}
			}
			return out
		}
	}
	return topics
}

// write adds f to the response unless the client has it already (its
// position is not after the last one sent), and returns the new last.
func write(sw *streamWriter, f *frame, after string) string {
	if f.id <= after {
		return after
	}
	sw.addEvent(f.wire)
	return f.id
}

func (m *Multiplexer) reasonOf(s *subscriber) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.reason == "" {
		return "shutdown"
	}
	return s.reason
}

// begin sends what comes before live events and returns the position the
// client then holds: every queued event at or before it is skipped.
// head is the feed's position when the subscriber was registered; every
// event after it reaches the subscriber's queue.
func (m *Multiplexer) begin(ctx context.Context, sw *streamWriter, opts StreamOptions, head string) (string, error) {
	p := opts.LastEventID
	if p != "" {
		if err := m.src.CheckPosition(p); err != nil {
			m.reset(sw, opts.Topics, "invalid-id")
			p = ""
		}
	}
	if p > head {
		// The client is ahead of this process's feed: it came from a
		// process further along, or its id was never made here (another
		// cluster, or made by hand) although it looks right. Every event
		// after head reaches the queue, where those up to p are skipped,
		// once the feed gets to p; if it does not soon, p is not ours.
		if err := m.awaitFeed(ctx, p); err != nil {
			if ctx.Err() != nil {
				return "", err
			}
			m.reset(sw, opts.Topics, "invalid-id")
			p = ""
		}
	}
	for attempt := 0; ; attempt++ {
		if p == "" {
			pos, err := m.snapshot(ctx, sw, opts.Topics)
			if err != nil {
				return "", err
			}
			p = pos
		}
		// A snapshot may be older than head (the database answered from
		// an earlier point than the feed has reached): fill the gap too.
		err := m.catchUp(ctx, sw, opts.Topics, p, head)
		var reason string
		switch {
		case err == nil:
			return max(p, head), nil
		case errors.Is(err, ErrHistoryLost):
			reason = "history-lost"
		case errors.Is(err, ErrInvalidPosition):
			reason = "invalid-id"
		}
		if reason == "" || attempt > 0 {
			return "", err
		}
		m.reset(sw, opts.Topics, reason)
		p = ""
	}
}

// snapshot sends one snapshot event per topic, each with the snapshot's
// position as its id, and returns that position.
func (m *Multiplexer) snapshot(ctx context.Context, sw *streamWriter, topics []string) (string, error) {
	evs, pos, err := m.src.Snapshot(ctx, topics)
	if err != nil {
		return "", err
	}
	if pos == "" {
		return "", errors.New("snapshot without a position")
	}
	for _, ev := range evs {
		wire, err := AppendEvent(sw.buf, pos, "snapshot", ev.Data)
		if err != nil {
			return "", err
		}
		sw.buf = wire
		sw.pending++
	}
	return pos, nil
}

// catchUp sends the events of topics with after < position <= head, from
// memory when it holds them all, else from the Source.
func (m *Multiplexer) catchUp(ctx context.Context, sw *streamWriter, topics []string, after, head string) error {
	if after >= head {
		return nil
	}
	if frames, ok := m.replay(topics, after, head); ok {
		for _, f := range frames {
			sw.addEvent(f.wire)
			if len(sw.buf) >= flushSize {
				if err := m.send(sw); err != nil {
					return errWrite
				}
			}
		}
		return nil
	}
	select {
	case m.catchups <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-m.catchups }()
	m.catchUpsRunning.Add(1)
	m.catchUpsTotal.Add(1)
	start := time.Now()
	defer func() {
		m.catchUpsRunning.Add(-1)
		if m.cfg.OnCatchUp != nil {
			m.cfg.OnCatchUp(time.Since(start))
		}
	}()
	var werr error
	err := m.src.CatchUp(ctx, topics, after, head, func(ev Event) error {
		if ev.ID <= after || ev.ID > head {
			return nil
		}
		wire, err := AppendEvent(sw.buf, ev.ID, ev.Name, ev.Data)
		if err != nil {
			// The feed skips such an event too: no client ever gets it.
			m.log.Error("event cannot be encoded; skipped", "topic", ev.Topic, "err", err)
			return nil
		}
		sw.buf = wire
		sw.pending++
		after = ev.ID
		if len(sw.buf) >= flushSize {
			if err := m.send(sw); err != nil {
				werr = errWrite
				return werr
			}
		}
		return nil
	})
	if werr != nil {
		return werr
	}
	return err
}

// reset sends one `reset` event per topic.
func (m *Multiplexer) reset(sw *streamWriter, topics []string, reason string) {
	for _, t := range topics {
		data, _ := json.Marshal(struct {
			Topic  string `json:"topic"`
			Reason string `json:"reason"`
		}{t, reason})
		wire, _ := AppendEvent(nil, "", "reset", data)
		sw.addEvent(wire)
	}
}
