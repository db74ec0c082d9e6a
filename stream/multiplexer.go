package stream

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"changecast/internal/latency"
	"changecast/stream/internal/httpconn"
)

// Defaults for Config's zero values.
const (
	// DefaultQueueSize bounds each subscriber's queue, in events. A room
	// at a busy 100 events/s fills it in 2.5 s of a stalled client, long
	// enough to ride out a GC pause or a TCP hiccup. The queue holds only
	// what is pending: an idle subscriber's costs a few pointers.
	DefaultQueueSize = 256
	// DefaultTopicBuffer is the most recent events one topic keeps in
	// memory, so that a reconnect after a drop replays from memory instead
	// of reading the database: 1,024 messages are many minutes of a lively
	// room, and a reconnect storm after a deploy replays from memory.
	DefaultTopicBuffer = 1024
	// DefaultMaxTopics bounds the topics with an in-memory buffer; the
	// least recently written is evicted past it (its clients then catch
	// up from the database).
	DefaultMaxTopics = 4096
	// DefaultBufferBytes bounds the encoded events all topics keep in
	// memory together: past it the oldest events of the least recently
	// written topic go first. 64 MiB hold 1,024 events of ~0.5 KiB for
	// 128 busy rooms, an eighth of a small (512 MiB) container.
	DefaultBufferBytes = 64 << 20
	// DefaultCatchUps bounds catch-ups reading the database at once. Each
	// holds a database connection while it runs (MongoDB's pool defaults
	// to 100), so 32 leaves most of the pool to REST calls and the feed
	// while a reconnect storm after a deploy still drains quickly. A
	// catch-up gives its slot back while its client is written to.
	DefaultCatchUps = 32
	// DefaultHeartbeat is the `: ping` interval: well under the 55 s idle
	// cut of Heroku's router and the ~60 s of other proxies.
	DefaultHeartbeat = 15 * time.Second
	// DefaultRetry is the reconnect delay a client is told (`retry:`). A
	// stream ends on purpose (deploy, slow client, expiry of a proxy's
	// request limit) and resumes exactly, so the delay only adds latency;
	// one second still spreads a reconnect storm over the clients' timers.
	DefaultRetry = time.Second
	// DefaultShutdownRetryMin and DefaultShutdownRetryMax bound the
	// reconnect delay a stream is told just before Close ends it, drawn
	// at random per stream: a restart of a process with 10,000 streams
	// then brings them back at about 250 a 100 ms instead of all within
	// one, and no client waits more than a few seconds more than usual.
	DefaultShutdownRetryMin = time.Second
	DefaultShutdownRetryMax = 5 * time.Second
	// writeTimeout bounds one write to a client; a client that takes
	// longer is cut off (it reconnects and catches up). It matches the
	// heartbeat: a healthy client accepts a write well within it.
	writeTimeout = 15 * time.Second
	// aheadWait is how long a stream whose id is ahead of the feed waits
	// for the feed to reach it before treating the id as invalid: many
	// times the lag between processes following one database, short
	// enough that a client with a foreign id is soon reset.
	aheadWait = 5 * time.Second
	// startTimeout bounds reading the log's head when starting.
	startTimeout = 30 * time.Second
	// minFeedBackoff and maxFeedBackoff bound the wait between attempts
	// to reopen the feed: quick after a blip, at most a few seconds of
	// staleness once the database is back.
	minFeedBackoff = 100 * time.Millisecond
	maxFeedBackoff = 5 * time.Second
)

// Errors Serve returns before it writes anything.
var (
	// ErrNoTopics means Serve was called without a topic.
	ErrNoTopics = errors.New("stream: no topics")
	// ErrNotStarted means Serve was called before Start succeeded.
	ErrNotStarted = errors.New("stream: multiplexer not started")
)

// Config tunes a Multiplexer; zero fields take the defaults above.
type Config struct {
	// QueueSize is each subscriber's bounded queue, in events.
	QueueSize int
	// TopicBuffer is how many recent events each topic keeps in memory.
	TopicBuffer int
	// MaxTopics bounds the topics with an in-memory buffer.
	MaxTopics int
	// BufferBytes bounds the bytes of encoded events all topics keep.
	BufferBytes int
	// CatchUps bounds catch-ups reading the Source at once; a catch-up
	// holds no slot while it writes to its client.
	CatchUps int
	// Heartbeat is the interval of `: ping` comments.
	Heartbeat time.Duration
	// Retry is the reconnect delay sent as `retry:`.
	Retry time.Duration
	// ShutdownRetryMin and ShutdownRetryMax bound the reconnect delay
	// sent as a last `retry:` to each stream that Close ends, drawn
	// uniformly per stream (in whole milliseconds), so that clients of a
	// stopping process come back spread over the window, not at once.
	// Other endings (a slow client dropped, an expired token, a reset)
	// keep Retry: they do not come all together, and a dropped client
	// should catch up soon. A Max below Min counts as Min.
	ShutdownRetryMin, ShutdownRetryMax time.Duration
	// Classify, if set, names the class a stream's subscriber is counted
	// under in Stats.SubscribersByClass, from its topics (distinct, at
	// least one). It is called once per stream, and must be safe for
	// concurrent use. Without it every subscriber is in class "".
	Classify func(topics []string) string
	// Logger receives the multiplexer's logs; nil discards them.
	Logger *slog.Logger
	// OnStreamEnd, if set, is called once per stream when the stream
	// ends (which may be after Serve returned; see Serve).
	OnStreamEnd func(StreamEnd)
	// OnCatchUp, if set, is called with the duration of each catch-up
	// from the Source.
	OnCatchUp func(time.Duration)
	// MaxAge, if not zero, bounds how long a stream stays open: each
	// stream ends cleanly after a duration drawn uniformly from
	// [3/4 MaxAge, MaxAge] (so streams opened together do not all end
	// together), once what it has queued is written, and its client
	// reconnects after the usual `retry:` and resumes from its last id.
	// A proxy being reloaded, or a process added behind a load balancer,
	// then gets every stream's client back within MaxAge. Zero: no limit.
	MaxAge time.Duration
	// Presence, if set, says which topics track who is on them: the
	// streams of such a topic get protocol.EventPresence events, and a stream's
	// StreamOptions.User is counted on it. It must be safe for concurrent
	// use. Without it no topic tracks presence.
	Presence func(topic string) bool
}

// StreamEnd describes a finished stream, for logs and metrics.
type StreamEnd struct {
	// RequestID is the response's X-Request-ID header, if set.
	RequestID string
	Topics    []string
	Duration  time.Duration
	Events    int
	// Reason says why the stream ended.
	Reason EndReason
}

// frame is one event encoded once, shared by every subscriber and by
// the ring of each of its topics.
type frame struct {
	id    string
	topic string
	also  []string // further topics, as Event.Also
	wire  []byte
	time  time.Time
	// rings counts the rings holding the frame, under the multiplexer's
	// lock: its bytes count in the budget once, while it is above zero.
	rings int
	// seq orders the id-less frames an injector queues (inject, for
	// presence), by the injector's own count; 0 for the log's events.
	seq uint64
	// stamps are the times the change passed each stage, with stage
	// timing on (see package latency); else nil.
	stamps *latency.Stamps
}

// Multiplexer fans one upstream feed out to many streams. Its methods are
// safe for concurrent use.
type Multiplexer struct {
	src Source
	cfg Config
	log *slog.Logger

	// ctx lives until Close; the feed and every Source call of a stream
	// run under it.
	ctx    context.Context
	cancel context.CancelFunc

	// presence is who is on each presence topic: apart from the
	// fan-out, under its own lock (see presence.go).
	presence *presence

	// mu guards the fields below, and a subscriber's registration
	// (subscriber.closed, .reason, .pushed).
	//
	// Lock order: mu, then a subscriber's mu (push, under mu) and, through
	// the subscriber's notify, the pool's (httpconn.Pool.Wake); mu, then a
	// streamWriter's mu (Close aborts writes under mu). presence.mu comes
	// before mu (presence injects its frames under its own lock) and is
	// never taken under it.
	//
	// Goroutines: Start starts the feed (follow); Serve runs a stream on
	// Serve's goroutine (modeHandler), on one of its own (modeOwn), or on
	// the pool's workers (modePool), where a stream that ends is ended on a
	// goroutine of its own (go s.end(), which may wait for the client).
	// Timers run their functions on goroutines of their own: a stream's
	// heartbeat and expiry only notify it; presence's grace timers take
	// presence.mu, then mu. A stream with a Recheck has a checker
	// goroutine (withdraw.go), which end stops and waits for: it takes mu
	// alone (leave), then presence.mu, then notifies the stream.
	mu       sync.Mutex
	last     string // the feed's checkpoint
	floor    string // topics without a ring are complete after floor
	rings    map[string]*ring
	lru      *list.List // of *ring, least recently written at the front
	bufBytes int        // bytes of the frames all rings hold
	subs     map[string]map[*subscriber]struct{}
	classes  map[string]int64      // subscribers by Config.Classify's class
	streams  map[*session]struct{} // responses being served
	// advanced, when not nil, is closed the next time last moves.
	advanced chan struct{}
	ready    bool
	starting bool // Start was called
	started  bool // Start read the head; last and floor are set
	closed   bool

	// pool runs the live streams whose connection was taken over, and
	// poller notices their clients hang up: from the first such stream
	// (see livePool) to Close.
	pool      *httpconn.Pool
	poller    *httpconn.Poller
	poolTried bool

	wg        sync.WaitGroup // the feed goroutine
	serving   sync.WaitGroup // Serve calls
	closeOnce sync.Once
	catchups  chan struct{}

	openStreams, catchUpsRunning          atomic.Int64
	delivered, droppedSlow, catchUpsTotal atomic.Uint64
	lastEventNanos                        atomic.Int64
	// backlogged counts the events written to connections whose socket
	// has not taken them yet (see session.send).
	backlogged atomic.Int64

	// failpoint, set only by tests before Start, is called at the points
	// named by the fp constants, where a goroutine switch changes the
	// outcome; nil in production, where each point costs a nil check.
	failpoint func(at string, topics []string)
}

// Failpoints: where tests may hold a goroutine to force a race window open.
const (
	fpApply     = "apply"     // the feed has a batch it has not applied
	fpSubscribe = "subscribe" // before a subscriber's head is read and it is registered
	fpBegin     = "begin"     // registered; before the snapshot or catch-up
	fpReplay    = "replay"    // before memory is read for a catch-up
	fpHandover  = "handover"  // caught up; before the stream goes live
)

// hit calls the failpoint, if a test set one.
func (m *Multiplexer) hit(at string, topics []string) {
	if m.failpoint != nil {
		m.failpoint(at, topics)
	}
}

// New returns a Multiplexer over src. It starts nothing: call Start.
func New(src Source, cfg Config) *Multiplexer {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.TopicBuffer <= 0 {
		cfg.TopicBuffer = DefaultTopicBuffer
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = DefaultBufferBytes
	}
	if cfg.MaxTopics <= 0 {
		cfg.MaxTopics = DefaultMaxTopics
	}
	if cfg.CatchUps <= 0 {
		cfg.CatchUps = DefaultCatchUps
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Retry <= 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.ShutdownRetryMin <= 0 {
		cfg.ShutdownRetryMin = DefaultShutdownRetryMin
	}
	if cfg.ShutdownRetryMax <= 0 {
		cfg.ShutdownRetryMax = DefaultShutdownRetryMax
	}
	cfg.ShutdownRetryMax = max(cfg.ShutdownRetryMax, cfg.ShutdownRetryMin)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The multiplexer's lifetime is the root of its own work: it ends
	// with Close, not with any caller's request.
	ctx, cancel := context.WithCancel(context.Background())
	m := &Multiplexer{
		src:      src,
		cfg:      cfg,
		log:      log,
		ctx:      ctx,
		cancel:   cancel,
		rings:    make(map[string]*ring),
		lru:      list.New(),
		subs:     make(map[string]map[*subscriber]struct{}),
		classes:  make(map[string]int64),
		streams:  make(map[*session]struct{}),
		catchups: make(chan struct{}, cfg.CatchUps),
	}
	m.presence = newPresence(cfg.Presence, m.inject)
	return m
}

// Start reads the log's head and starts following the feed from it in a
// goroutine the Multiplexer owns until Close. It returns an error if the
// head cannot be read, if Start was called before, or after Close.
func (m *Multiplexer) Start() error {
	m.mu.Lock()
	switch {
	case m.closed:
		m.mu.Unlock()
		return errors.New("stream: multiplexer closed")
	case m.starting:
		m.mu.Unlock()
		return errors.New("stream: multiplexer already started")
	}
	m.starting = true
	m.mu.Unlock()

	hctx, hcancel := context.WithTimeout(m.ctx, startTimeout)
	head, err := m.src.Head(hctx)
	hcancel()

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errors.New("stream: multiplexer closed")
	}
	if err != nil {
		m.starting = false // Start may be tried again
		return fmt.Errorf("stream: read the log's head: %w", err)
	}
	m.last, m.floor, m.started = head, head, true
	m.wg.Add(1)
	go m.follow(m.ctx)
	return nil
}

// Close stops the feed and ends every open stream cleanly, so clients
// reconnect (elsewhere, during a deploy), each after a delay drawn from
// [ShutdownRetryMin, ShutdownRetryMax] that its stream's last line tells
// it, unless its client was not reading: each Serve returns nil and its
// Source calls are cancelled; a write blocked on a client that does not
// read is cut short. Close waits for the feed goroutine and for every
// Serve call to return, so the Source is not used once it returns. It may
// be called more than once, and before Start; it must not be called from
// within Serve.
func (m *Multiplexer) Close() {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed, m.ready = true, false
		m.mu.Unlock()
		m.presence.close()
		m.cancel()
		m.mu.Lock()
		for s := range m.streams {
			s.sw.abort()
			s.notify()
		}
		m.mu.Unlock()
	})
	m.wg.Wait()
	m.serving.Wait()
	m.mu.Lock()
	pool, poller := m.pool, m.poller
	m.mu.Unlock()
	if pool != nil {
		// Both may be closed more than once.
		pool.Close()
		poller.Close()
	}
}

// livePool returns the pool and poller for streams whose connection is
// taken over, starting them the first time; nil, nil where the platform
// has none (such streams run on goroutines of their own) or once the
// Multiplexer is closed.
func (m *Multiplexer) livePool() (*httpconn.Pool, *httpconn.Poller) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.poolTried && !m.closed {
		m.poolTried = true
		p, err := httpconn.NewPoller()
		switch {
		case err == nil:
			m.poller, m.pool = p, httpconn.NewPool(runtime.GOMAXPROCS(0))
		case !errors.Is(err, errors.ErrUnsupported):
			m.log.Warn("streams run on goroutines of their own: no poller", "err", err)
		}
	}
	return m.pool, m.poller
}

// Ready reports whether the feed is established and running.
func (m *Multiplexer) Ready() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ready
}

// follow runs the feed until ctx ends, reopening it with backoff after a
// failure from the last checkpoint, or from a fresh head if the feed's own
// history is lost.
func (m *Multiplexer) follow(ctx context.Context) {
	defer m.wg.Done()
	wait := minFeedBackoff
	for {
		m.mu.Lock()
		from := m.last
		m.mu.Unlock()
		began := time.Now()
		err := m.src.Follow(ctx, from, func(b Batch) error {
			m.hit(fpApply, nil)
			m.apply(b)
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > maxFeedBackoff {
			// It ran for a while: this is a new failure, not the same
			// one again.
			wait = minFeedBackoff
		}
		m.mu.Lock()
		m.ready = false
		m.mu.Unlock()
		if errors.Is(err, ErrHistoryLost) || errors.Is(err, ErrInvalidPosition) {
			m.log.Error("change feed lost its history; restarting it from now and resetting every stream", "from", from, "err", err)
			if head, herr := m.src.Head(ctx); herr == nil {
				m.restartAt(head)
				continue
			} else {
				err = herr
			}
		}
		m.log.Warn("change feed failed; reopening", "err", err, "wait", wait.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxFeedBackoff)
	}
}

// restartAt forgets every buffered event, moves the feed to head and ends
// every stream so its client reconnects and is reset.
func (m *Multiplexer) restartAt(head string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last, m.floor = head, head
	m.advancedLocked()
	clear(m.rings)
	m.lru.Init()
	m.bufBytes = 0
	for _, set := range m.subs {
		for s := range set {
			m.dropLocked(s, EndReset)
		}
	}
}

// apply encodes a batch once and hands each event to its topic's ring and
// subscribers. An event at or before the feed's position (a repeat after a
// reconnect of the feed) is skipped, so positions only grow.
func (m *Multiplexer) apply(b Batch) {
	timed := latency.On()
	var applied int64
	if timed {
		applied = latency.Now()
	}
	// One allocation for the batch's frames, one per event for its bytes.
	all := make([]frame, 0, len(b.Events))
	for _, ev := range b.Events {
		if ev.ID == "" || ev.Topic == "" {
			m.log.Error("event without position or topic; skipped", "topic", ev.Topic, "pos", ev.ID)
			continue
		}
		wire, err := AppendEvent(make([]byte, 0, len(ev.Data)+len(ev.ID)+len(ev.Name)+32), ev.ID, string(ev.Name), ev.Data)
		if err != nil {
			m.log.Error("event cannot be encoded; skipped", "topic", ev.Topic, "err", err)
			continue
		}
		all = append(all, frame{id: ev.ID, topic: ev.Topic, also: alsoTopics(ev), wire: wire, time: ev.Time})
		if timed {
			all[len(all)-1].stamps = latency.Take(ev.ID, applied)
		}
	}
	if timed {
		// Deferred before the unlock, so run after it: the timing is
		// recorded outside the fan-out's lock.
		defer fannedOut(all)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range all {
		f := &all[i]
		if m.compare(f.id, m.last) <= 0 {
			m.log.Warn("feed repeated a position; skipped", "topic", f.topic, "pos", f.id, "feed", m.last)
			continue
		}
		m.last = f.id
		if !f.time.IsZero() {
			m.lastEventNanos.Store(f.time.UnixNano())
		}
		m.bufferLocked(f)
		if f.stamps != nil {
			f.stamps.FanOut = latency.Now()
		}
		m.fanOutLocked(f, f.topic)
		for _, t := range f.also {
			m.fanOutLocked(f, t)
		}
		if f.stamps != nil {
			f.stamps.FannedOut = latency.Now()
		}
	}
	if m.compare(b.Checkpoint, m.last) > 0 {
		m.last = b.Checkpoint
	}
	m.ready = !m.closed
	m.advancedLocked()
}

// fannedOut records the stages of the frames fanned out (see package
// latency).
func fannedOut(frames []frame) {
	for i := range frames {
		if st := frames[i].stamps; st != nil && st.FannedOut != 0 {
			latency.FannedOut(st)
		}
	}
}

// fanOutLocked pushes f to the subscribers of topic, one of f's topics,
// skipping a subscriber that got f through another of its topics.
func (m *Multiplexer) fanOutLocked(f *frame, topic string) {
	for s := range m.subs[topic] {
		if s.pushed == f {
			continue
		}
		s.pushed = f
		if !s.push(f, m.cfg.QueueSize) {
			m.dropLocked(s, EndSlow)
			m.droppedSlow.Add(1)
		}
	}
}

// alsoTopics returns ev.Also without Topic, empty topics and repeats,
// so each of a frame's topics is listed once.
func alsoTopics(ev Event) []string {
	var out []string
	for _, t := range ev.Also {
		if t != "" && t != ev.Topic && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// advancedLocked wakes whoever waits for the feed to move.
func (m *Multiplexer) advancedLocked() {
	if m.advanced != nil {
		close(m.advanced)
		m.advanced = nil
	}
}
