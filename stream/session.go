package stream

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"changecast/protocol"
	"changecast/stream/internal/httpconn"
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
	// User, if not empty, is who opens the stream: they are counted
	// present on its presence topics (see Config.Presence) while it is
	// open. Empty is anonymous: not counted.
	User string
	// Notices are events sent on every connection right after the
	// `retry:` line, before any snapshot, reset or resumed event, in the
	// order given and without an `id:` line (their ID is ignored), so
	// they never move the client's position. A notice whose Name cannot
	// be sent (see AppendEvent) is left out.
	Notices []Event
	// Recheck, if set, is asked every RecheckEvery while the stream is
	// live whether its topics are still allowed: it gets the topics the
	// stream still carries (of RecheckTopics, if given) and returns one event (a refusal, say) for
	// each topic to withdraw, whose Topic names it. A withdrawn topic's
	// events stop, its event is sent without an `id:` line after what
	// the client already has of that topic, and the other topics stream
	// on; when none is left the stream ends (EndWithdrawn). It runs on a
	// goroutine of the stream's own, under a context that ends with the
	// stream, so it may block (ask another service); returned events of
	// topics the stream does not carry are ignored.
	Recheck func(ctx context.Context, topics []string) []Event
	// RecheckEvery is the interval of Recheck; not positive: no recheck.
	RecheckEvery time.Duration
	// RecheckTopics, if not empty, are the topics Recheck may take back:
	// it is asked about those of them the stream still carries, and no
	// more once none is left. Empty: all of Topics.
	RecheckTopics []string
	// Done, if set, is called once when the stream has ended (whatever
	// Serve returned), before the client sees the end of the response.
	// Serve may return before the stream ends: Done, not Serve's return,
	// marks the end.
	Done func()
}

// mode is how a session's response is written and what runs the stream
// once it is live. respond chooses it once; nothing else branches on the
// writer.
type mode uint8

const (
	// modeClosed: the Multiplexer was closed when the stream came; it
	// gets its headers and a `retry:` line, and ends.
	modeClosed mode = iota
	// modeHandler: written through the http.ResponseWriter (HTTP/2, or a
	// writer that cannot be taken over), live on Serve's goroutine.
	modeHandler
	// modeOwn: the connection taken over, live on a goroutine of its own
	// (no poller on this platform, or none could be made).
	modeOwn
	// modePool: the connection taken over, live on the Multiplexer's pool
	// of writers, its hang-up noticed by the poller.
	modePool
)

// session is one stream from its headers to its end.
type session struct {
	m         *Multiplexer
	sw        *streamWriter
	opts      StreamOptions
	requestID string
	start     time.Time
	mode      mode
	// conn is the connection taken over, in modePool: the pool writes to
	// it without waiting for the client.
	conn *httpconn.Conn
	sub  *subscriber
	head string // the feed's position when sub was registered
	// synced is the injected sequence the presence sync events reflect:
	// the injected frames up to it are not written.
	synced uint64
	// ctx ends with the client, or with Close; every Source call of the
	// stream runs under it.
	ctx       context.Context
	cancel    context.CancelFunc
	stopAfter func() bool
	reason    EndReason

	// Live state: step runs on one goroutine at a time, the stream's own
	// or, on the Multiplexer's pool, one worker after another.
	after string   // the client's position
	spare []*frame // the queue's other slice
	woken bool     // events came since the last heartbeat
	over  bool     // step has ended the stream
	// unsent counts events written to the connection's backlog, not yet
	// taken by the socket (see send and settle).
	unsent int
	// onPool says the stream is live on the pool (modePool, after
	// goLive): notify wakes task. Before that, and in the other modes,
	// notify signals wake, which the stream's goroutine waits on.
	onPool atomic.Bool
	pool   *httpconn.Pool
	task   httpconn.Task
	wake   chan struct{}
	// The timers set pingDue, expiredDue and agedDue, then notify; step
	// sets beat again after each ping.
	beat, expiry, aged           *time.Timer
	pingDue, expiredDue, agedDue atomic.Bool

	// Withdrawal (StreamOptions.Recheck, withdraw.go): the checker's
	// goroutine leaves topics and hands their events over in withdrawn,
	// then sets withdrawDue; step writes them and adds their topics to
	// gone, whose frames it no longer writes.
	stopCheck   func() // stops the checker and waits for it
	withdrawMu  sync.Mutex
	withdrawn   []Event
	withdrawDue atomic.Bool
	gone        []string // step's own
}

// Serve writes the SSE response for opts.Topics to w: headers, a
// `retry:` line and opts.Notices at once; then a snapshot (fresh
// connection), or the events after opts.LastEventID (from memory or the
// Source), or a `reset` per topic and a snapshot when that id cannot be
// resumed; then live events and `: ping` heartbeats. Repeated topics
// count once.
//
// The stream ends when the client goes, the Multiplexer closes, the
// subscriber falls too far behind, the token expires, or opts.Recheck
// withdraws every topic; the response
// then ends cleanly so the client reconnects (after Close, with a last
// `retry:` drawn from the shutdown window).
//
// Serve returns when the stream ends or, if it took the connection over
// from net/http (HTTP/1.x, when w allows it), as soon as the stream is
// live, whichever comes first; in every case opts.Done is called once,
// when the stream has ended. (Taken over, the stream runs on the
// Multiplexer's pool of writers, or on its own goroutine where there is no
// poller; Close waits for it either way.)
//
// Before writing anything Serve returns ErrNoTopics or ErrNotStarted;
// after the headers are written it returns an error only when the Source
// fails in a way that is not the client's (the caller should log it and
// write nothing more). Serve is safe for concurrent use; it must be the
// only writer of w, and w and r must not be used once it returns.
func (m *Multiplexer) Serve(w http.ResponseWriter, r *http.Request, opts StreamOptions) error {
	topics := uniq(opts.Topics)
	if len(topics) == 0 {
		if opts.Done != nil {
			opts.Done()
		}
		return ErrNoTopics
	}
	opts.Topics = topics
	// wake is made here, before anything can notify the session; a
	// stream that goes live on the pool does not use it.
	s := &session{m: m, opts: opts, start: time.Now(), reason: EndClientGone, sw: newStreamWriter(), wake: make(chan struct{}, 1)}
	serving, err := m.addStream(s)
	if err != nil {
		if opts.Done != nil {
			opts.Done()
		}
		return err
	}
	s.respond(w, r, serving)
	// Until the stream is live, ending it (a client gone, a write or the
	// Source failing, a panic) is Serve's.
	live := false
	defer func() {
		if !live {
			s.end()
		}
	}()
	if !s.open() {
		return nil
	}
	after, ok, err := s.resume()
	if !ok {
		return err
	}
	s.sw.release()
	s.after = after
	s.beat = s.wakeAfter(m.cfg.Heartbeat, &s.pingDue)
	s.startCheck()
	live = true
	switch s.mode {
	case modeHandler:
		s.run()
	case modeOwn:
		go s.run()
	case modePool:
		s.goLive()
	}
	return nil
}

// respond sets the headers and chooses, once, the session's mode: on the
// connection taken over (HTTP/1.x, and only a stream the Multiplexer
// serves: one of a closed Multiplexer gets just its headers), on the pool
// when there is one, else through w. The stream counts as open from here
// until end.
func (s *session) respond(w http.ResponseWriter, r *http.Request, serving bool) {
	m := s.m
	h := w.Header()
	protocol.SetStreamHeaders(h)
	h.Del("Content-Length")
	h.Del("Transfer-Encoding")
	s.requestID = h.Get("X-Request-Id")
	if serving {
		// The connection outlives the request's context: the stream
		// learns that the client went from the connection itself.
		ctx, cancel := context.WithCancel(m.ctx)
		gone := func() {
			cancel()
			s.notify()
		}
		if c, err := httpconn.TakeOver(w, r); err == nil {
			pool, poller := m.livePool()
			c.Watch(poller, gone)
			s.mode = modeOwn
			if c.Watched() {
				s.mode, s.pool, s.conn = modePool, pool, c
			}
			s.sw.rw = c
			s.ctx, s.cancel, s.stopAfter = ctx, cancel, func() bool { return true }
			m.openStreams.Add(1)
			return
		}
		cancel()
	}
	if serving {
		s.mode = modeHandler
	}
	s.sw.rw = httpconn.Respond(w)
	s.ctx, s.cancel = context.WithCancel(r.Context())
	s.stopAfter = context.AfterFunc(m.ctx, s.cancel)
	m.openStreams.Add(1)
}

// open sends the `retry:` line and the notices, and registers the subscriber. It returns
// false, with the reason set, if the stream ends already.
func (s *session) open() bool {
	m := s.m
	s.sw.add(AppendRetry(nil, m.cfg.Retry))
	for _, n := range s.opts.Notices {
		_ = s.sw.encode("", n.Name, n.Data) // ErrBadField: left out, as documented
	}
	if err := s.send(); err != nil {
		s.reason = s.writeFailed()
		return false
	}
	if s.mode == modeClosed {
		s.reason = EndShutdown
		return false
	}
	s.sub, s.head = m.subscribeAs(s.opts.Topics, s.opts.User, s.notify)
	if s.sub == nil {
		s.reason = EndShutdown
		return false
	}
	if !s.opts.Expires.IsZero() {
		s.expiry = s.wakeAfter(time.Until(s.opts.Expires), &s.expiredDue)
	}
	if d := m.cfg.MaxAge; d > 0 {
		s.aged = s.wakeAfter(d-rand.N(d/4+1), &s.agedDue)
	}
	return true
}

// resume sends what comes before live events (see begin) and returns the
// position the client then holds, and whether the stream goes live. When
// it does not, the reason is set, and err is the Source's error if that
// ended the stream.
func (s *session) resume() (after string, ok bool, err error) {
	m := s.m
	after, err = s.begin()
	if err != nil {
		switch {
		case s.ctx.Err() != nil:
			s.reason = s.ended()
			return "", false, nil
		case errors.Is(err, errWrite):
			s.reason = s.writeFailed()
			return "", false, nil
		}
		s.reason = EndSourceFailed
		m.log.Warn("stream could not catch up", "topics", s.opts.Topics, "err", err)
		return "", false, err
	}
	syncs, seq := m.presence.sync(s.opts.Topics)
	for _, data := range syncs {
		_ = s.sw.encode("", protocol.EventPresence, data)
	}
	s.synced = seq
	if err := s.send(); err != nil {
		s.reason = s.writeFailed()
		return "", false, nil
	}
	return after, true, nil
}

// writeFailed names why the stream ends now that a write failed: Close
// makes writes fail on purpose.
func (s *session) writeFailed() EndReason {
	if errors.Is(s.sw.err, errAborted) {
		return EndShutdown
	}
	return EndWriteFailed
}

// ended names why the stream ends now that its context is done.
func (s *session) ended() EndReason {
	if s.m.ctx.Err() != nil {
		return EndShutdown
	}
	return EndClientGone
}

// end releases what the stream holds, in the order its observers expect:
// the subscriber and the counters, then the hooks, then the response.
func (s *session) end() {
	m := s.m
	if s.stopCheck != nil {
		s.stopCheck()
	}
	if s.beat != nil {
		s.beat.Stop()
	}
	if s.expiry != nil {
		s.expiry.Stop()
	}
	if s.aged != nil {
		s.aged.Stop()
	}
	if s.sub != nil {
		m.unsubscribe(s.sub)
	}
	m.openStreams.Add(-1)
	if m.cfg.OnStreamEnd != nil {
		m.cfg.OnStreamEnd(StreamEnd{RequestID: s.requestID, Topics: s.opts.Topics, Duration: time.Since(s.start), Events: s.sw.events, Reason: s.reason})
	}
	if s.opts.Done != nil {
		s.opts.Done()
	}
	s.sw.finish(s.lastWords())
	// finish waited for the backlog (within the write deadline).
	s.settle()
	if s.unsent > 0 {
		s.m.backlogged.Add(-int64(s.unsent))
	}
	s.stopAfter()
	s.cancel()
	if s.mode != modeClosed {
		m.removeStream(s)
	}
}

// lastWords returns what the stream sends just before it ends: when
// Close ends it, a `retry:` drawn uniformly from the shutdown window, so
// that the clients of a stopping process come back spread over the
// window, not all at once; after any other ending, nothing.
func (s *session) lastWords() []byte {
	if s.reason != EndShutdown {
		return nil
	}
	lo, hi := s.m.cfg.ShutdownRetryMin, s.m.cfg.ShutdownRetryMax
	return AppendRetry(nil, lo+rand.N(hi-lo+1))
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

// addStream registers s as being served. It returns false if the
// multiplexer is closed, and ErrNotStarted before Start succeeded.
func (m *Multiplexer) addStream(s *session) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return false, nil
	case !m.started:
		return false, ErrNotStarted
	}
	m.streams[s] = struct{}{}
	m.serving.Add(1)
	return true, nil
}

func (m *Multiplexer) removeStream(s *session) {
	m.mu.Lock()
	delete(m.streams, s)
	m.mu.Unlock()
	m.serving.Done()
}
