package stream

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Config's zero values.
const (
	// DefaultQueueSize is each subscriber's queue, in events. A room at a
	// busy 100 events/s fills it in 2.5 s of a stalled client, long enough
	// to ride out a GC pause or a TCP hiccup, and it costs 2 KiB of
	// pointers per subscriber.
	DefaultQueueSize = 256
	// DefaultTopicBuffer is how many recent events each topic keeps in
	// memory, so that a reconnect after a short drop replays from memory
	// instead of reading the database.
	DefaultTopicBuffer = 128
	// DefaultMaxTopics bounds the topics with an in-memory buffer; the
	// least recently written is evicted past it (its clients then catch
	// up from the database). 4,096 × 128 events of ~0.5 KiB ≈ 256 MiB at
	// the very worst.
	DefaultMaxTopics = 4096
	// DefaultCatchUps bounds catch-ups reading the database at once, so a
	// reconnect storm cannot exhaust the database's connections.
	DefaultCatchUps = 32
	// DefaultHeartbeat is the `: ping` interval: well under the 55 s idle
	// cut of Heroku's router and the ~60 s of other proxies.
	DefaultHeartbeat = 15 * time.Second
	// DefaultRetry is the reconnect delay a client is told (`retry:`).
	DefaultRetry = time.Second
	// writeTimeout bounds one write to a client; a client that takes
	// longer is cut off (it reconnects and catches up).
	writeTimeout = 15 * time.Second
	// startTimeout bounds reading the log's head when starting.
	startTimeout = 30 * time.Second
	// maxFeedBackoff caps the wait between attempts to reopen the feed.
	maxFeedBackoff = 5 * time.Second
)

// Config tunes a Multiplexer; zero fields take the defaults above.
type Config struct {
	// QueueSize is each subscriber's bounded queue, in events.
	QueueSize int
	// TopicBuffer is how many recent events each topic keeps in memory.
	TopicBuffer int
	// MaxTopics bounds the topics with an in-memory buffer.
	MaxTopics int
	// CatchUps bounds catch-ups reading the Source at once.
	CatchUps int
	// Heartbeat is the interval of `: ping` comments.
	Heartbeat time.Duration
	// Retry is the reconnect delay sent as `retry:`.
	Retry time.Duration
	// Logger receives the multiplexer's logs; nil discards them.
	Logger *slog.Logger
	// OnStreamEnd, if set, is called once per stream when Serve returns.
	OnStreamEnd func(StreamEnd)
	// OnCatchUp, if set, is called with the duration of each catch-up
	// from the Source.
	OnCatchUp func(time.Duration)
}

// StreamEnd describes a finished stream, for logs and metrics.
type StreamEnd struct {
	// RequestID is the response's X-Request-ID header, if set.
	RequestID string
	Topics    []string
	Duration  time.Duration
	Events    int
	// Reason is "client-gone", "shutdown", "slow", "reset", "expired" or
	// "write-failed".
	Reason string
}

// frame is one event encoded once, shared by every subscriber.
type frame struct {
	id    string
	topic string
	wire  []byte
	time  time.Time
}

// ring keeps a topic's most recent frames. It holds every frame of its
// topic with a position after since.
type ring struct {
	topic  string
	frames []*frame // oldest first, at most cap
	since  string
	elem   *list.Element
}

// subscriber is one stream's registration.
type subscriber struct {
	topics []string
	kind   string
	ch     chan *frame
	// reason is set, under the multiplexer's lock, before ch is closed.
	reason string
	closed bool
}

// Multiplexer fans one upstream feed out to many streams. Its methods are
// safe for concurrent use.
type Multiplexer struct {
	src Source
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	last   string // the feed's checkpoint
	floor  string // topics without a ring are complete after floor
	rings  map[string]*ring
	lru    *list.List // of *ring, least recently written at the front
	subs   map[string]map[*subscriber]struct{}
	ready  bool
	closed bool

	started   atomic.Bool
	done      chan struct{}
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once
	catchups  chan struct{}

	openStreams, orderSubs, roomSubs, multiSubs, catchUpsRunning atomic.Int64
	delivered, droppedSlow, catchUpsTotal                        atomic.Uint64
	lastEventNanos                                               atomic.Int64
}

// New returns a Multiplexer over src. It starts nothing: call Start.
func New(src Source, cfg Config) *Multiplexer {
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	if cfg.TopicBuffer <= 0 {
		cfg.TopicBuffer = DefaultTopicBuffer
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
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Multiplexer{
		src:      src,
		cfg:      cfg,
		log:      log,
		rings:    make(map[string]*ring),
		lru:      list.New(),
		subs:     make(map[string]map[*subscriber]struct{}),
		done:     make(chan struct{}),
		catchups: make(chan struct{}, cfg.CatchUps),
	}
}

// Start reads the log's head and starts following the feed from it in a
// goroutine the Multiplexer owns until Close. It returns an error if the
// head cannot be read or Start was called before.
func (m *Multiplexer) Start() error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("stream: multiplexer already started")
	}
	ctx, cancel := context.WithCancel(context.Background())
	hctx, hcancel := context.WithTimeout(ctx, startTimeout)
	head, err := m.src.Head(hctx)
	hcancel()
	if err != nil {
		cancel()
		return err
	}
	m.mu.Lock()
	m.last, m.floor, m.cancel = head, head, cancel
	m.mu.Unlock()
	m.wg.Add(1)
	go m.follow(ctx)
	return nil
}

// Close stops the feed and ends every open stream cleanly, so clients
// reconnect (elsewhere, during a deploy). It waits for the feed goroutine
// and may be called more than once.
func (m *Multiplexer) Close() {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed, m.ready = true, false
		if m.cancel != nil {
			m.cancel()
		}
		m.mu.Unlock()
		close(m.done)
	})
	m.wg.Wait()
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
	wait := 100 * time.Millisecond
	for {
		m.mu.Lock()
		from := m.last
		m.mu.Unlock()
		err := m.src.Follow(ctx, from, func(b Batch) error {
			m.apply(b)
			wait = 100 * time.Millisecond
			return nil
		})
		if ctx.Err() != nil {
			return
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
	clear(m.rings)
	m.lru.Init()
	for _, set := range m.subs {
		for s := range set {
			m.dropLocked(s, "reset")
		}
	}
}

// apply encodes a batch once and hands each event to its topic's ring and
// subscribers.
func (m *Multiplexer) apply(b Batch) {
	frames := make([]*frame, 0, len(b.Events))
	for _, ev := range b.Events {
		wire, err := AppendEvent(make([]byte, 0, len(ev.Data)+len(ev.ID)+len(ev.Name)+32), ev.ID, ev.Name, ev.Data)
		if err != nil {
			m.log.Error("event cannot be encoded; skipped", "topic", ev.Topic, "err", err)
			continue
		}
		frames = append(frames, &frame{id: ev.ID, topic: ev.Topic, wire: wire, time: ev.Time})
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range frames {
		m.bufferLocked(f)
		for s := range m.subs[f.topic] {
			select {
			case s.ch <- f:
			default:
				m.dropLocked(s, "slow")
				m.droppedSlow.Add(1)
			}
		}
	}
	if len(frames) > 0 {
		m.lastEventNanos.Store(frames[len(frames)-1].time.UnixNano())
	}
	if b.Checkpoint != "" && b.Checkpoint > m.last {
		m.last = b.Checkpoint
	} else if n := len(frames); n > 0 && frames[n-1].id > m.last {
		m.last = frames[n-1].id
	}
	m.ready = !m.closed
}

// bufferLocked appends f to its topic's ring, making and evicting rings
// as needed.
func (m *Multiplexer) bufferLocked(f *frame) {
	r := m.rings[f.topic]
	if r == nil {
		r = &ring{topic: f.topic, since: m.floor, frames: make([]*frame, 0, 4)}
		r.elem = m.lru.PushBack(r)
		m.rings[f.topic] = r
		for len(m.rings) > m.cfg.MaxTopics {
			old := m.lru.Remove(m.lru.Front()).(*ring)
			delete(m.rings, old.topic)
			if n := len(old.frames); n > 0 && old.frames[n-1].id > m.floor {
				m.floor = old.frames[n-1].id
			}
		}
	} else {
		m.lru.MoveToBack(r.elem)
	}
	if len(r.frames) == m.cfg.TopicBuffer {
		r.since = r.frames[0].id
		copy(r.frames, r.frames[1:])
		r.frames[len(r.frames)-1] = f
		return
	}
	r.frames = append(r.frames, f)
}

// dropLocked unregisters s and closes its queue (once), recording why.
func (m *Multiplexer) dropLocked(s *subscriber, reason string) {
	if s.closed {
		return
	}
	s.closed, s.reason = true, reason
	for _, t := range s.topics {
		if set := m.subs[t]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(m.subs, t)
			}
		}
	}
	close(s.ch)
}

// subscribe registers a subscriber on topics and returns it with the
// feed's position at registration: every event after that position will
// reach its queue. It returns nil if the multiplexer is closed.
func (m *Multiplexer) subscribe(topics []string) (*subscriber, string) {
	s := &subscriber{topics: topics, ch: make(chan *frame, m.cfg.QueueSize), kind: kindOf(topics)}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ""
	}
	for _, t := range topics {
		set := m.subs[t]
		if set == nil {
			set = make(map[*subscriber]struct{})
			m.subs[t] = set
		}
		set[s] = struct{}{}
	}
	m.subCounter(s.kind).Add(1)
	return s, m.last
}

// unsubscribe removes s if it is still registered.
func (m *Multiplexer) unsubscribe(s *subscriber) {
	m.mu.Lock()
	m.dropLocked(s, "")
	m.mu.Unlock()
	m.subCounter(s.kind).Add(-1)
}

// replay returns the buffered frames of topics with after < id <= until
// in log order, and false if memory does not hold all of them.
func (m *Multiplexer) replay(topics []string, after, until string) ([]*frame, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*frame
	for _, t := range topics {
		r := m.rings[t]
		if r == nil {
			if after < m.floor {
				return nil, false
			}
			continue
		}
		if after < r.since {
			return nil, false
		}
		for _, f := range r.frames {
			if f.id > after && f.id <= until {
				out = append(out, f)
			}
		}
	}
	if len(topics) > 1 {
		slices.SortFunc(out, func(a, b *frame) int {
			switch {
			case a.id < b.id:
				return -1
			case a.id > b.id:
				return 1
			}
			return 0
		})
	}
	return out, true
}

func kindOf(topics []string) string {
	switch {
	case len(topics) > 1:
		return "multi"
	case len(topics) == 1 && len(topics[0]) > 6 && topics[0][:6] == "rooms/":
		return "rooms"
	}
	return "orders"
}

func (m *Multiplexer) subCounter(kind string) *atomic.Int64 {
	switch kind {
	case "multi":
		return &m.multiSubs
	case "rooms":
		return &m.roomSubs
	}
	return &m.orderSubs
}

// Stats is a point-in-time view of a Multiplexer, for metrics.
type Stats struct {
	// OpenStreams counts responses being served.
	OpenStreams int64
	// OrderSubscribers, RoomSubscribers and MultiSubscribers count
	// subscribers by kind of topic: one order, one room, several topics.
	OrderSubscribers, RoomSubscribers, MultiSubscribers int64
	// Delivered counts events written to clients.
	Delivered uint64
	// DroppedSlow counts subscribers disconnected because their queue was full.
	DroppedSlow uint64
	// CatchUpsRunning counts catch-ups reading the Source now.
	CatchUpsRunning int64
	// CatchUps counts catch-ups from the Source since start.
	CatchUps uint64
	// LastEventTime is the commit time of the newest event off the feed
	// (zero before the first).
	LastEventTime time.Time
	// Topics counts topics with an in-memory buffer.
	Topics int
	// Ready reports whether the feed is running.
	Ready bool
}

// Stats returns the Multiplexer's counters.
func (m *Multiplexer) Stats() Stats {
	m.mu.Lock()
	topics, ready := len(m.rings), m.ready
	m.mu.Unlock()
	st := Stats{
		OpenStreams:      m.openStreams.Load(),
		OrderSubscribers: m.orderSubs.Load(),
		RoomSubscribers:  m.roomSubs.Load(),
		MultiSubscribers: m.multiSubs.Load(),
		Delivered:        m.delivered.Load(),
		DroppedSlow:      m.droppedSlow.Load(),
		CatchUpsRunning:  m.catchUpsRunning.Load(),
		CatchUps:         m.catchUpsTotal.Load(),
		Topics:           topics,
		Ready:            ready,
	}
	if n := m.lastEventNanos.Load(); n != 0 {
		st.LastEventTime = time.Unix(0, n)
	}
	return st
}
