package stream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
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
	// Done, if set, is called once when the stream has ended (whatever
	// Serve returned), before the client sees the end of the response.
	Done func()
}

// streamWriter is the state of one response. One goroutine at a time
// writes through it (Serve's, then the stream's own); Close may only cut
// short a write in progress.
//
// A response is written either to the connection itself, taken over from
// net/http before anything is written (HTTP/1.x), or through the
// ResponseWriter (HTTP/2, tests). On the connection the stream needs no
// goroutine of net/http's, nor its buffers: what it writes is a list of
// pieces, most of them frames shared by every subscriber, sent with one
// writev as one HTTP chunk.
type streamWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// conn is the connection once taken over; chunked says whether the
	// body is in HTTP/1.1 chunks (else it ends when the connection does).
	conn    net.Conn
	chunked bool
	head    []byte // the status line and headers, until written
	gw      *gatherWriter
	scratch *scratch

	out     [][]byte // pieces to write, in order; never modified
	size    int      // bytes in out
	own     []byte   // bytes for this stream alone, which out points into
	ownFrom int      // where in own the last piece starts, if ownLast
	ownLast bool     // the last piece is the end of own
	iov     [][]byte // scratch for the writev
	hdr     [18]byte // scratch for a chunk header
	pending int      // events in out
	events  int      // events written
	err     error
	// pushed is when the write deadline was last pushed forward.
	pushed time.Time

	mu       sync.Mutex
	writing  bool // a write to the client is in progress
	aborting bool // the multiplexer is closing
}

// add adds bytes that are not an event; b must not change afterwards.
func (sw *streamWriter) add(b []byte) {
	sw.out = append(sw.out, b)
	sw.size += len(b)
	sw.ownLast = false
}

// addEvent adds one event's frame; b must not change afterwards.
func (sw *streamWriter) addEvent(b []byte) {
	sw.add(b)
	sw.pending++
}

// encode adds an event encoded for this stream alone.
func (sw *streamWriter) encode(id, name string, data []byte) error {
	start, c := len(sw.own), cap(sw.own)
	own, err := AppendEvent(sw.own, id, name, data)
	if err != nil {
		return err
	}
	sw.own = own
	sw.addOwn(start, c)
	return nil
}

// addOwn adds own[start:] as one event: it extends the last piece when
// that ends where start is, in the same array (whose capacity was c).
func (sw *streamWriter) addOwn(start, c int) {
	own := sw.own
	if sw.ownLast && cap(own) == c {
		sw.out[len(sw.out)-1] = own[sw.ownFrom:len(own):len(own)]
	} else {
		sw.out = append(sw.out, own[start:len(own):len(own)])
		sw.ownFrom, sw.ownLast = start, true
	}
	sw.size += len(own) - start
	sw.pending++
}

// full reports whether what is buffered should be written before more is
// added.
func (sw *streamWriter) full() bool { return sw.size >= flushSize || len(sw.out) >= maxPieces }

// release lets go of the buffers the start of the stream used: live
// events and heartbeats are shared frames, and an idle stream should hold
// little.
func (sw *streamWriter) release() {
	if sc := sw.scratch; sc != nil {
		clear(sc.out[:cap(sc.out)])
		clear(sc.iov[:cap(sc.iov)])
		scratchPool.Put(sc)
		sw.scratch = nil
	}
	sw.own, sw.out, sw.iov = nil, nil, nil
}

// scratch is room for the pieces of a catch-up's writes, lent to a
// stream until it is live.
type scratch struct{ out, iov [][]byte }

var scratchPool = sync.Pool{New: func() any {
	return &scratch{out: make([][]byte, 0, maxPieces), iov: make([][]byte, 0, maxPieces+3)}
}}

// flush writes what is buffered to the client, pushing the write deadline
// forward first (at most once a second: it costs a timer update). A
// ResponseWriter that cannot flush or take deadlines is written to all
// the same. It returns the number of events written.
func (sw *streamWriter) flush() (int, error) {
	if sw.err != nil {
		return 0, sw.err
	}
	if len(sw.out) == 0 {
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
		if err := sw.setWriteDeadline(now.Add(writeTimeout)); err == nil {
			sw.pushed = now
		}
	}
	sw.mu.Unlock()
	err := sw.write()
	sw.mu.Lock()
	sw.writing = false
	sw.mu.Unlock()
	clear(sw.out)
	sw.out, sw.own, sw.size, sw.ownLast = sw.out[:0], sw.own[:0], 0, false
	if err != nil {
		sw.err = err
		return 0, err
	}
	n := sw.pending
	sw.events += n
	sw.pending = 0
	return n, nil
}

func (sw *streamWriter) write() error {
	if sw.conn == nil {
		for _, b := range sw.out {
			if _, err := sw.w.Write(b); err != nil {
				return err
			}
		}
		if err := sw.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		return nil
	}
	iov := sw.iov[:0]
	if sw.head != nil {
		iov = append(iov, sw.head)
		sw.head = nil
	}
	if sw.chunked {
		hdr := strconv.AppendUint(sw.hdr[:0], uint64(sw.size), 16)
		iov = append(iov, append(hdr, '\r', '\n'))
	}
	iov = append(iov, sw.out...)
	if sw.chunked {
		iov = append(iov, crlf)
	}
	err := sw.gw.write(iov)
	clear(iov)
	sw.iov = iov[:0]
	return err
}

func (sw *streamWriter) setWriteDeadline(t time.Time) error {
	if sw.conn != nil {
		return sw.conn.SetWriteDeadline(t)
	}
	return sw.rc.SetWriteDeadline(t)
}

// abort cuts short a write in progress (to a client that does not read)
// and makes later writes fail, so the stream ends promptly on Close. It
// is called from Close's goroutine, under the multiplexer's lock, while
// the stream is registered.
func (sw *streamWriter) abort() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.aborting = true
	if sw.writing {
		_ = sw.setWriteDeadline(time.Now())
	}
}

// finish ends the response, last (if not empty) being the final bytes of
// its body, written if the stream can still write. On a connection taken
// over it writes them and the last chunk and closes the connection.
// Through a ResponseWriter it writes them and clears the write deadline,
// so that the connection, if kept alive for another request, does not
// carry this stream's deadline (net/http resets it only when the server
// has a WriteTimeout).
func (sw *streamWriter) finish(last []byte) {
	healthy := sw.err == nil || sw.err == errAborted
	if sw.conn == nil {
		if healthy && len(last) > 0 {
			if err := sw.rc.SetWriteDeadline(time.Now().Add(finishTimeout)); err == nil {
				sw.pushed = time.Now()
			}
			if _, err := sw.w.Write(last); err == nil {
				_ = sw.rc.Flush()
			}
		}
		if !sw.pushed.IsZero() && healthy {
			_ = sw.rc.SetWriteDeadline(time.Time{})
		}
		return
	}
	if healthy {
		// The head is still unsent when Close came before the first
		// write: the client then gets a whole response, with last alone.
		end := sw.head
		if len(last) > 0 && sw.chunked {
			end = strconv.AppendUint(end, uint64(len(last)), 16)
			end = append(append(append(end, crlf...), last...), crlf...)
		} else {
			end = append(end, last...)
		}
		if sw.chunked {
			end = append(end, lastChunk...)
		}
		if len(end) > 0 {
			_ = sw.conn.SetWriteDeadline(time.Now().Add(finishTimeout))
			_, _ = sw.conn.Write(end)
		}
		sw.head = nil
	}
	_ = sw.conn.Close()
}

// finishTimeout bounds writing the end of a response: a client that does
// not take a few hundred bytes within it is not reading, and Close waits
// for it.
const finishTimeout = time.Second

var (
	errWrite   = errors.New("write to client failed")
	errAborted = errors.New("stream aborted by Close")

	crlf      = []byte("\r\n")
	lastChunk = []byte("0\r\n\r\n")
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

// session is one stream from its headers to its end.
type session struct {
	m         *Multiplexer
	sw        *streamWriter
	opts      StreamOptions
	requestID string
	start     time.Time
	serving   bool // registered with addStream
	sub       *subscriber
	// ctx ends with the client, or with Close; every Source call of the
	// stream runs under it.
	ctx       context.Context
	cancel    context.CancelFunc
	stopAfter func() bool
	expired   *time.Timer
	reason    string
}

// Serve writes the SSE response for opts.Topics to w: headers and a
// `retry:` line at once; then a snapshot (fresh connection), or the events
// after opts.LastEventID (from memory or the Source), or a `reset` per
// topic and a snapshot when that id cannot be resumed; then live events
// and `: ping` heartbeats. Repeated topics count once.
//
// The stream ends when the client goes, the Multiplexer closes, the
// subscriber falls too far behind, or the token expires; the response
// then ends cleanly so the client reconnects (after Close, with a last
// `retry:` drawn from the shutdown window). On HTTP/1.x Serve takes the
// connection over from net/http, writes the headers itself and returns
// nil as soon as the stream is live; the stream then runs on its own, and
// opts.Done tells when it has ended. Otherwise (HTTP/2, a ResponseWriter
// that cannot be taken over) Serve returns when the stream ends.
//
// Before writing anything Serve returns ErrNoTopics or ErrNotStarted;
// after the headers are written it returns an error only when the Source
// fails in a way that is not the client's (the caller should log it and
// write nothing more). Serve is safe for concurrent use; it must be the
// only writer of w, and w and r must not be used once it returns.
func (m *Multiplexer) Serve(w http.ResponseWriter, r *http.Request, opts StreamOptions) (err error) {
	topics := uniq(opts.Topics)
	if len(topics) == 0 {
		if opts.Done != nil {
			opts.Done()
		}
		return ErrNoTopics
	}
	opts.Topics = topics
	s := &session{m: m, opts: opts, start: time.Now(), reason: "client-gone",
		sw: &streamWriter{w: w, rc: http.NewResponseController(w)}}
	// Room for a catch-up's pieces, given back once the stream is live.
	sc := scratchPool.Get().(*scratch)
	s.sw.scratch, s.sw.out, s.sw.iov = sc, sc.out[:0], sc.iov[:0]
	s.serving, err = m.addStream(s.sw)
	if err != nil {
		if opts.Done != nil {
			opts.Done()
		}
		return err
	}
	live := false
	defer func() {
		if !live {
			s.end()
		}
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	s.requestID = h.Get("X-Request-Id")
	// A stream of a closed Multiplexer only gets its headers.
	if r.ProtoMajor == 1 && s.serving {
		if conn, _, herr := s.sw.rc.Hijack(); herr == nil {
			s.takeOver(conn, r, h)
		}
	}
	if s.sw.conn == nil {
		w.WriteHeader(http.StatusOK)
	}
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancel(r.Context())
		s.stopAfter = context.AfterFunc(m.ctx, s.cancel)
	}
	s.sw.add(AppendRetry(nil, m.cfg.Retry))
	m.openStreams.Add(1)

	if err := m.send(s.sw); err != nil {
		s.reason = s.writeFailed()
		return nil
	}
	if !s.serving {
		s.reason = "shutdown"
		return nil
	}
	sub, head := m.subscribe(topics)
	if sub == nil {
		s.reason = "shutdown"
		return nil
	}
	s.sub = sub
	if !opts.Expires.IsZero() {
		s.expired = time.NewTimer(time.Until(opts.Expires))
	}

	after, err := m.begin(s.ctx, s.sw, opts, head)
	if err != nil {
		switch {
		case s.ctx.Err() != nil:
			s.reason = s.ended()
			return nil
		case errors.Is(err, errWrite):
			s.reason = s.writeFailed()
			return nil
		}
		s.reason = "source-failed"
		m.log.Warn("stream could not catch up", "topics", topics, "err", err)
		return err
	}
	if err := m.send(s.sw); err != nil {
		s.reason = s.writeFailed()
		return nil
	}
	s.sw.release()
	if s.sw.conn == nil {
		s.live(after)
		return nil
	}
	live = true
	go func() {
		defer s.end()
		defer func() {
			// As net/http would for a handler: log, end the stream,
			// keep serving the others.
			if p := recover(); p != nil {
				s.reason = "panic"
				m.log.Error("stream panicked", "panic", p, "stack", string(debug.Stack()))
			}
		}()
		s.live(after)
	}()
	return nil
}

// takeOver moves the response onto the connection net/http hands over
// before anything was written, with h as its headers (sent with the first
// write), and starts reading the connection to learn when the client
// goes. The body is HTTP/1.1 chunked or, for HTTP/1.0, delimited by the
// close; the connection ends with the stream.
func (s *session) takeOver(conn net.Conn, r *http.Request, h http.Header) {
	chunked := r.ProtoAtLeast(1, 1)
	proto := "HTTP/1.0"
	if chunked {
		proto = "HTTP/1.1"
		h.Set("Transfer-Encoding", "chunked")
	}
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	head := bytes.NewBuffer(make([]byte, 0, 512))
	head.WriteString(proto + " 200 OK\r\n")
	_ = h.Write(head)
	head.WriteString("\r\n")
	s.sw.head = head.Bytes()
	m := s.m
	s.sw.conn, s.sw.chunked, s.sw.gw = conn, chunked, newGatherWriter(conn)
	// Nothing is written through the ResponseWriter any more; holding it
	// would keep net/http's buffers for this connection alive.
	s.sw.w, s.sw.rc = nil, nil
	s.ctx, s.cancel = context.WithCancel(m.ctx)
	s.stopAfter = func() bool { return true }
	m.serving.Add(1)
	go func() {
		defer m.serving.Done()
		defer s.cancel()
		// A client sends nothing more on this connection; whatever it
		// sends is read and dropped until it hangs up.
		var b [64]byte
		for {
			if _, err := conn.Read(b[:]); err != nil {
				return
			}
		}
	}()
}

// writeFailed names why the stream ends now that a write failed: Close
// makes writes fail on purpose.
func (s *session) writeFailed() string {
	if errors.Is(s.sw.err, errAborted) {
		return "shutdown"
	}
	return "write-failed"
}

// ended names why the stream ends now that its context is done.
func (s *session) ended() string {
	if s.m.ctx.Err() != nil {
		return "shutdown"
	}
	return "client-gone"
}

// end releases what the stream holds, in the order its observers expect:
// the subscriber and the counters, then the hooks, then the response.
func (s *session) end() {
	m := s.m
	if s.expired != nil {
		s.expired.Stop()
	}
	if s.sub != nil {
		m.unsubscribe(s.sub)
	}
	if s.ctx != nil {
		m.openStreams.Add(-1)
		if m.cfg.OnStreamEnd != nil {
			m.cfg.OnStreamEnd(StreamEnd{RequestID: s.requestID, Topics: s.opts.Topics, Duration: time.Since(s.start), Events: s.sw.events, Reason: s.reason})
		}
	}
	if s.opts.Done != nil {
		s.opts.Done()
	}
	s.sw.finish(s.lastWords())
	if s.ctx != nil {
		s.stopAfter()
		s.cancel()
	}
	if s.serving {
		m.removeStream(s.sw)
	}
}

// lastWords returns what the stream sends just before it ends: when
// Close ends it, a `retry:` drawn uniformly from the shutdown window, so
// that the clients of a stopping process come back spread over the
// window, not all at once; after any other ending, nothing.
func (s *session) lastWords() []byte {
	if s.reason != "shutdown" {
		return nil
	}
	lo, hi := s.m.cfg.ShutdownRetryMin, s.m.cfg.ShutdownRetryMax
	return AppendRetry(nil, lo+rand.N(hi-lo+1))
}

// live writes the subscriber's events and heartbeats until the stream
// ends, starting after position after.
func (s *session) live(after string) {
	m, sw, sub := s.m, s.sw, s.sub
	var expired <-chan time.Time
	if s.expired != nil {
		expired = s.expired.C
	}
	heartbeat := time.NewTicker(m.cfg.Heartbeat)
	defer heartbeat.Stop()
	// spare is the queue's other slice: taking the pending frames swaps
	// the two, so a delivery allocates nothing. Both, and the slices the
	// writes use, are let go of when a whole heartbeat passes without an
	// event, so an idle stream holds no burst's worth of pointers.
	var spare []*frame
	woken := false
	for {
		select {
		case <-s.ctx.Done():
			s.reason = s.ended()
			return
		case <-expired:
			s.reason = "expired"
			for _, t := range s.opts.Topics {
				sw.add(expiredFrame(t))
			}
			m.send(sw)
			return
		case <-heartbeat.C:
			if !woken {
				// Nothing is buffered here: every pass ends with a send.
				spare = nil
				sub.shrink()
				sw.out, sw.iov = nil, nil
			}
			woken = false
			sw.add(pingFrame)
		case <-sub.wake:
			woken = true
			frames, done := sub.take(spare)
			for _, f := range frames {
				after = write(sw, f, after)
				if sw.full() {
					if err := m.send(sw); err != nil {
						s.reason = s.writeFailed()
						return
					}
				}
			}
			clear(frames)
			spare = frames[:0]
			if done {
				s.reason = m.reasonOf(sub)
				m.send(sw)
				return
			}
		}
		if err := m.send(sw); err != nil {
			s.reason = s.writeFailed()
			return
		}
	}
}

// flushSize is how much a stream buffers before writing to the client
// while draining its queue or catching up: a few TCP segments' worth, so
// a burst costs few syscalls and a client sees progress early. maxPieces
// bounds the pieces of one write (the kernel takes at most 1,024).
const (
	flushSize = 64 << 10
	maxPieces = 256
)

// pingFrame is the heartbeat.
var pingFrame = AppendComment(nil, "ping")

// noticeData is the data of a `reset` or `expired` event of one topic:
// like every event's, it carries the topic.
func noticeData(topic, reason string) []byte {
	data, _ := json.Marshal(struct {
		Topic  string `json:"topic"`
		Reason string `json:"reason"`
	}{topic, reason})
	return data
}

// expiredFrame is the `expired` event of one topic.
func expiredFrame(topic string) []byte {
	b, _ := AppendEvent(nil, "", "expired", noticeData(topic, "token expired"))
	return b
}

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
		if err := sw.encode(pos, "snapshot", ev.Data); err != nil {
			return "", err
		}
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
			if sw.full() {
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
		if err := sw.encode(ev.ID, ev.Name, ev.Data); err != nil {
			// The feed skips such an event too: no client ever gets it.
			m.log.Error("event cannot be encoded; skipped", "topic", ev.Topic, "err", err)
			return nil
		}
		after = ev.ID
		if sw.full() {
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
		_ = sw.encode("", "reset", noticeData(t, reason))
	}
}
