package stream

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
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

// stream is the state of one response, owned by Serve's goroutine.
type streamWriter struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	buf    []byte
	events int
	err    error
}

func (sw *streamWriter) add(b []byte) { sw.buf = append(sw.buf, b...) }

// flush writes what is buffered and flushes it to the client, with a
// write deadline pushed forward for this write.
func (sw *streamWriter) flush() error {
	if sw.err != nil {
		return sw.err
	}
	if len(sw.buf) == 0 {
		return nil
	}
	_ = sw.rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := sw.w.Write(sw.buf); err != nil {
		sw.err = err
		return err
	}
	sw.buf = sw.buf[:0]
	if err := sw.rc.Flush(); err != nil {
		sw.err = err
		return err
	}
	return nil
}

// Serve writes the SSE response for opts.Topics to w: headers and a
// `retry:` line at once; then a snapshot (fresh connection), or the events
// after opts.LastEventID (from memory or the Source), or a `reset` and a
// snapshot when that id cannot be resumed; then live events and `: ping`
// heartbeats. It returns when the client goes, the Multiplexer closes, the
// subscriber falls too far behind, or the token expires; the response then
// ends cleanly so the client reconnects. It returns a non-nil error only
// when the Source fails in a way that is not the client's.
func (m *Multiplexer) Serve(w http.ResponseWriter, r *http.Request, opts StreamOptions) (err error) {
	ctx := r.Context()
	start := time.Now()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	w.WriteHeader(http.StatusOK)
	sw := &streamWriter{w: w, rc: http.NewResponseController(w)}
	sw.add(AppendRetry(nil, m.cfg.Retry))

	m.openStreams.Add(1)
	reason := "client-gone"
	defer func() {
		m.openStreams.Add(-1)
		if m.cfg.OnStreamEnd != nil {
			m.cfg.OnStreamEnd(StreamEnd{RequestID: w.Header().Get("X-Request-Id"), Topics: opts.Topics, Duration: time.Since(start), Events: sw.events, Reason: reason})
		}
	}()

	if err := sw.flush(); err != nil {
		reason = "write-failed"
		return nil
	}
	sub, head := m.subscribe(opts.Topics)
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

	after, err := m.begin(ctx, sw, sub, opts, head)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, errWrite):
			reason = "write-failed"
			return nil
		}
		reason = "source-failed"
		m.log.Warn("stream could not catch up", "topics", opts.Topics, "err", err)
		return err
	}
	if err := sw.flush(); err != nil {
		reason = "write-failed"
		return nil
	}

	heartbeat := time.NewTicker(m.cfg.Heartbeat)
	defer heartbeat.Stop()
	ping := AppendComment(nil, "ping")
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.done:
			reason = "shutdown"
			return nil
		case <-expired:
			reason = "expired"
			sw.add([]byte("event: expired\ndata: {\"reason\":\"token expired\"}\n\n"))
			sw.flush()
			return nil
		case <-heartbeat.C:
			sw.add(ping)
		case f, ok := <-sub.ch:
			if !ok {
				reason = m.reasonOf(sub)
				sw.flush()
				return nil
			}
			after = m.write(sw, f, after)
			// Drain what else is queued, then flush once.
		drain:
			for len(sw.buf) < 64<<10 {
				select {
				case f, ok := <-sub.ch:
					if !ok {
						reason = m.reasonOf(sub)
						sw.flush()
						return nil
					}
					after = m.write(sw, f, after)
				default:
					break drain
				}
			}
		}
		if err := sw.flush(); err != nil {
			reason = "write-failed"
			return nil
		}
	}
}

// write adds f to the response unless the client has it already (its
// position is not after the last one sent), and returns the new last.
func (m *Multiplexer) write(sw *streamWriter, f *frame, after string) string {
	if f.id <= after {
		return after
	}
	sw.add(f.wire)
	sw.events++
	m.delivered.Add(1)
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

var errWrite = errors.New("write to client failed")

// begin sends what comes before live events and returns the position the
// client then holds: every queued event at or before it is skipped.
// head is the feed's position when sub was registered; every event after
// it reaches sub's queue.
func (m *Multiplexer) begin(ctx context.Context, sw *streamWriter, sub *subscriber, opts StreamOptions, head string) (string, error) {
	p := opts.LastEventID
	if p == "" {
		return m.snapshot(ctx, sw, opts.Topics, head)
	}
	if err := m.src.CheckPosition(p); err != nil {
		m.reset(sw, opts.Topics, "invalid-id")
		return m.snapshot(ctx, sw, opts.Topics, head)
	}
	err := m.catchUp(ctx, sw, opts.Topics, p, head)
	switch {
	case err == nil:
		return max(p, head), nil
	case errors.Is(err, ErrHistoryLost):
		m.reset(sw, opts.Topics, "history-lost")
		return m.snapshot(ctx, sw, opts.Topics, head)
	case errors.Is(err, ErrInvalidPosition):
		m.reset(sw, opts.Topics, "invalid-id")
		return m.snapshot(ctx, sw, opts.Topics, head)
	}
	return "", err
}

// snapshot sends one snapshot event per topic and then whatever happened
// between the snapshot's position and head, should the snapshot be older.
func (m *Multiplexer) snapshot(ctx context.Context, sw *streamWriter, topics []string, head string) (string, error) {
	evs, pos, err := m.src.Snapshot(ctx, topics)
	if err != nil {
		return "", err
	}
	for _, ev := range evs {
		wire, err := AppendEvent(nil, pos, "snapshot", ev.Data)
		if err != nil {
			return "", err
		}
		sw.add(wire)
		sw.events++
	}
	if err := m.catchUp(ctx, sw, topics, pos, head); err != nil {
		return "", err
	}
	return max(pos, head), nil
}

// catchUp sends the events of topics with after < position <= head, from
// memory when it holds them all, else from the Source.
func (m *Multiplexer) catchUp(ctx context.Context, sw *streamWriter, topics []string, after, head string) error {
	if after >= head {
		return nil
	}
	if frames, ok := m.replay(topics, after, head); ok {
		for _, f := range frames {
			sw.add(f.wire)
			sw.events++
			m.delivered.Add(1)
			if len(sw.buf) >= 64<<10 {
				if err := sw.flush(); err != nil {
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
	case <-m.done:
		return context.Canceled
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
			return err
		}
		sw.buf = wire
		sw.events++
		m.delivered.Add(1)
		after = ev.ID
		if len(sw.buf) >= 64<<10 {
			if err := sw.flush(); err != nil {
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
		sw.add(wire)
		sw.events++
	}
}
