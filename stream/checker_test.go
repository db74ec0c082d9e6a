package stream_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"log/slog"

	"changecast/protocol"
	"changecast/store"
	"changecast/store/bolt"
	"changecast/store/streamsource"
	"changecast/stream"
	"changecast/stream/sseparse"
)

// The exactly-once checker: a multiplexer over a real store (bolt in a
// temporary directory, through store/streamsource), concurrent writers, and
// subscribers over real HTTP that join fresh, resume from any earlier id,
// from lost history or from garbage, disconnect, stall and get dropped,
// on topics the small buffers keep evicting. Every connection is checked
// against the store's log, read by the checker's own follower: it gets
// exactly the log's events on its topics after its resume point, in
// order, each once; or one `reset` per topic, then a snapshot equal to the
// log's state at the snapshot's id, then exactly the events after it.
// Besides the random traffic, each seed forces every race window open
// once through the multiplexer's failpoints (see the scenario functions).

var (
	checkerSeeds = flag.Int("checker.seeds", 0, "seeds the exactly-once checker runs (default $CHECKER_SEEDS, else 6)")
	checkerSeed  = flag.Uint64("checker.seed", 0, "run the exactly-once checker with this seed only")
)

// Checker sizes: small, so that memory is exceeded, topics are evicted,
// queues fill and the log is pruned within a few hundred writes.
const (
	ckQueue       = 16
	ckTopicBuffer = 8
	ckMaxTopics   = 3
	ckBufferBytes = 8 << 10
	ckRetain      = 400 // log entries the store keeps
	ckWrites      = 300 // random writes per seed
	ckWriters     = 2
	ckSubscribers = 6
	ckRooms       = 3
	// ckSocketBuffer is each stream's socket buffer on either end: small,
	// so that a client that stops reading soon blocks the server's writes
	// and its queue fills, yet large enough that TCP does not crawl.
	ckSocketBuffer = 32 << 10
	// ckWait bounds every wait for a condition: generous for a loaded
	// 2-core machine under -race.
	ckWait = 15 * time.Second
)

func TestExactlyOnceChecker(t *testing.T) {
	if testing.Short() {
		t.Skip("the checker runs a store and many streams")
	}
	n := *checkerSeeds
	if n <= 0 {
		n, _ = strconv.Atoi(os.Getenv("CHECKER_SEEDS"))
	}
	if n <= 0 {
		n = 6 // about 5 s each under -race on 2 cores
	}
	base := rand.Uint64() >> 1
	if *checkerSeed != 0 {
		base, n = *checkerSeed, 1
	}
	for i := range n {
		seed := base + uint64(i)
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			defer func() {
				if t.Failed() {
					t.Logf("replay the choices with -run 'TestExactlyOnceChecker' -checker.seed=%d", seed)
				}
			}()
			runChecker(t, seed)
		})
	}
}

// change is one entry of the store's log as the checker's follower read it.
type change struct {
	pos   string
	topic string
	order *store.Order
	msg   *store.Message
}

// oracle is the store's log, read from its start by the checker itself.
type oracle struct {
	mu       sync.Mutex
	log      []change
	byMsg    map[string]string // message id → position
	moved    chan struct{}     // closed and replaced when the log grows
	err      error
	topics   []string // topics with at least one change, in first order
	hasTopic map[string]bool
}

func (o *oracle) follow(ctx context.Context, st store.Backend, from string) {
	err := st.Follow(ctx, from, func(b store.Batch) error {
		o.mu.Lock()
		defer o.mu.Unlock()
		for _, c := range b.Changes {
			o.log = append(o.log, change{pos: c.Pos, topic: c.Topic, order: c.Order, msg: c.Message})
			if c.Message != nil {
				o.byMsg[c.Message.ID] = c.Pos
			}
			if !o.hasTopic[c.Topic] {
				o.hasTopic[c.Topic] = true
				o.topics = append(o.topics, c.Topic)
			}
		}
		close(o.moved)
		o.moved = make(chan struct{})
		return nil
	})
	o.mu.Lock()
	if ctx.Err() == nil {
		o.err = err
	}
	close(o.moved)
	o.moved = make(chan struct{})
	o.mu.Unlock()
}

// posOf waits for the message to be in the log and returns its position.
func (o *oracle) posOf(tb testing.TB, msgID string) string {
	tb.Helper()
	deadline := time.After(ckWait)
	for {
		o.mu.Lock()
		pos, ok := o.byMsg[msgID]
		moved, err := o.moved, o.err
		o.mu.Unlock()
		if ok {
			return pos
		}
		if err != nil {
			tb.Fatalf("the checker's follower failed: %v", err)
		}
		select {
		case <-moved:
		case <-deadline:
			tb.Fatalf("message %s not in the log after %v", msgID, ckWait)
		}
	}
}

// waitHead waits until the follower has read the log up to pos.
func (o *oracle) waitHead(tb testing.TB, pos string) {
	tb.Helper()
	deadline := time.After(ckWait)
	for {
		o.mu.Lock()
		ok := len(o.log) > 0 && o.log[len(o.log)-1].pos >= pos
		moved, err := o.moved, o.err
		o.mu.Unlock()
		if ok {
			return
		}
		if err != nil {
			tb.Fatalf("the checker's follower failed: %v", err)
		}
		select {
		case <-moved:
		case <-deadline:
			tb.Fatalf("the checker's follower did not reach %s in %v", pos, ckWait)
		}
	}
}

// after returns the log's changes on topics with a position after pos.
func (o *oracle) after(topics []string, pos string) []change {
	o.mu.Lock()
	defer o.mu.Unlock()
	i, _ := slices.BinarySearchFunc(o.log, pos, func(c change, p string) int { return strings.Compare(c.pos, p) })
	var out []change
	for _, c := range o.log[i:] {
		if c.pos > pos && slices.Contains(topics, c.topic) {
			out = append(out, c)
		}
	}
	return out
}

// randomPos returns the position of a random change among the newest
// `within` of the log (all of it if within is 0), or "" for an empty log.
func (o *oracle) randomPos(rng *rand.Rand, within int) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.log) == 0 {
		return ""
	}
	lo := 0
	if within > 0 && len(o.log) > within {
		lo = len(o.log) - within
	}
	return o.log[lo+rng.IntN(len(o.log)-lo)].pos
}

func (o *oracle) head() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.log) == 0 {
		return ""
	}
	return o.log[len(o.log)-1].pos
}

// lastOn returns the position of the newest change on topics.
func (o *oracle) lastOn(topics []string) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := len(o.log) - 1; i >= 0; i-- {
		if slices.Contains(topics, o.log[i].topic) {
			return o.log[i].pos
		}
	}
	return ""
}

func (o *oracle) size() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.log)
}

func (o *oracle) knownTopics() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.topics)
}

// stateAt checks a snapshot event's data against the log's state of topic
// after every change up to pos.
func (o *oracle) stateAt(topic, pos string, data []byte) error {
	o.mu.Lock()
	var last *store.Order
	var msgs []string
	for _, c := range o.log {
		if c.pos > pos {
			break
		}
		if c.topic != topic {
			continue
		}
		if c.order != nil {
			last = c.order
		}
		if c.msg != nil {
			msgs = append(msgs, c.msg.ID)
		}
	}
	o.mu.Unlock()
	var snap protocol.Payload
	if err := json.Unmarshal(data, &snap); err != nil {
		return fmt.Errorf("snapshot %s: %v", data, err)
	}
	if snap.Topic != topic {
		return fmt.Errorf("snapshot of %s at %s names topic %q", topic, pos, snap.Topic)
	}
	if strings.HasPrefix(topic, store.OrderTopicPrefix) {
		switch {
		case last == nil && snap.Order != nil:
			return fmt.Errorf("snapshot of %s at %s holds %+v; the log has no change there yet", topic, pos, *snap.Order)
		case last != nil && (snap.Order == nil || snap.Order.Version != last.Version || snap.Order.Status != last.Status):
			return fmt.Errorf("snapshot of %s at %s holds %+v; the log says version %d, %s", topic, pos, snap.Order, last.Version, last.Status)
		}
		return nil
	}
	msgs = msgs[max(0, len(msgs)-store.SnapshotMessages):]
	got := make([]string, len(snap.Messages))
	for i, m := range snap.Messages {
		got[i] = m.ID
	}
	if !slices.Equal(got, msgs) {
		return fmt.Errorf("snapshot of %s at %s holds messages %v; the log says %v", topic, pos, got, msgs)
	}
	return nil
}

// event is one event a connection received.
type event struct {
	id, name string
	data     []byte
}

// conn is one SSE connection and what it received.
type conn struct {
	w      *world
	topics []string
	lastID string // the Last-Event-ID it sent
	kind   string // how the checker chose lastID
	// until, if set, is a position every expected event up to which the
	// connection must have received.
	until string
	// mustDrop says the server must have ended the stream (a stalled
	// subscriber whose queue overflowed).
	mustDrop bool

	events []event
	eof    bool  // the server ended the response cleanly
	err    error // the request failed
	body   io.ReadCloser
	cancel context.CancelFunc
	dec    sseparse.Decoder
	buf    []byte
	done   bool
}

// armed is what a stream does at a failpoint, once.
type armed struct {
	fn   func()
	done chan struct{} // closed when fn has returned
	took bool          // a stream took it
}

// world is one seed's store, multiplexer, server and clients.
type world struct {
	t      *testing.T
	st     *bolt.Store
	m      *stream.Multiplexer
	srv    *httptest.Server
	client *http.Client
	o      *oracle
	deploy string // the store's deployment prefix of positions

	// writers holds the random writers: each write takes it for reading;
	// a forced scenario takes it for writing, so that only its own writes
	// reach the log while it runs.
	writers sync.RWMutex

	mu    sync.Mutex
	arms  map[string]*armed // failpoint+" "+topic → what to do there, once
	gate  chan struct{}     // when not nil, the feed waits at FailApply until it is closed
	conns []*conn
}

func runChecker(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0))
	st, err := bolt.Open(t.TempDir(), bolt.Options{RetainCount: ckRetain, PruneInterval: 20 * time.Millisecond, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w := &world{t: t, st: st, arms: make(map[string]*armed),
		o: &oracle{byMsg: make(map[string]string), moved: make(chan struct{}), hasTopic: make(map[string]bool)}}
	ctx, cancel := context.WithCancel(context.Background())
	start, err := st.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w.deploy = start[:strings.IndexByte(start, '-')]
	followed := make(chan struct{})
	go func() { defer close(followed); w.o.follow(ctx, st, start) }()
	defer func() { cancel(); <-followed }()

	w.m = stream.New(streamsource.New(st), stream.Config{QueueSize: ckQueue, TopicBuffer: ckTopicBuffer, MaxTopics: ckMaxTopics, BufferBytes: ckBufferBytes})
	stream.SetFailpoint(w.m, w.failpoint)
	if err := w.m.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.m.Close()
	defer w.openGate() // never leave the feed held
	w.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.m.Serve(rw, r, stream.StreamOptions{Topics: r.URL.Query()["topic"], LastEventID: r.Header.Get("Last-Event-ID")})
	}))
	// Small socket buffers on both ends: a client that stops reading
	// soon blocks the server's writes, and its queue fills.
	w.srv.Listener = smallBuffers{w.srv.Listener}
	w.srv.Start()
	defer w.srv.Close()
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(ckSocketBuffer)
		}
		return c, err
	}}
	defer tr.CloseIdleConnections()
	w.client = &http.Client{Transport: tr}

	// Random traffic: writers and subscribers, until the writers are done
	// and the forced scenarios have run.
	var writes, subs sync.WaitGroup
	stopSubs := make(chan struct{})
	for i := range ckWriters {
		writes.Add(1)
		wr := rand.New(rand.NewPCG(seed, uint64(1+i)))
		go func() { defer writes.Done(); w.writeRandom(wr, i, ckWrites/ckWriters) }()
	}
	last := make([]string, ckSubscribers)
	for i := range ckSubscribers {
		subs.Add(1)
		sr := rand.New(rand.NewPCG(seed, uint64(100+i)))
		go func() { defer subs.Done(); last[i] = w.subscribeRandom(sr, stopSubs) }()
	}

	scenarios := []struct {
		name string
		run  func(room string)
	}{
		{"subscribe-window", w.forceSubscribeWindow},
		{"replay-past-head", w.forceReplayPastHead},
		{"ahead-of-feed", w.forceAheadOfFeed},
		{"handover-window", w.forceHandoverWindow},
		{"catch-up-at-head", w.forceCatchUpAtHead},
		{"evicted-topic", w.forceEvictedTopic},
		{"stalled-subscriber", w.forceStall},
	}
	rng.Shuffle(len(scenarios), func(i, j int) { scenarios[i], scenarios[j] = scenarios[j], scenarios[i] })
	for i, sc := range scenarios {
		sc.run(fmt.Sprintf("f%d", i))
		if t.Failed() {
			t.Logf("forced scenario %s failed", sc.name)
			break
		}
	}
	writes.Wait()
	close(stopSubs)
	subs.Wait()

	// Each subscriber comes back once more, after the writes, and must
	// get everything up to the log's head.
	head, err := st.Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.o.waitHead(t, head)
	topics := w.o.knownTopics()
	for i := range ckSubscribers {
		c := w.connect(pickTopics(rng, topics), last[i], "final")
		c.until = head
		if target := w.o.lastOn(c.topics); c.lastID >= target && strings.HasPrefix(c.lastID, w.deploy+"-") {
			c.readFor(50 * time.Millisecond) // nothing to come
		} else {
			c.readUntilPos(target)
		}
		c.close()
	}
	w.checkAll()
}

// smallBuffers shrinks each accepted connection's send buffer.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(ckSocketBuffer)
	}
	return c, err
}

func (w *world) failpoint(at string, topics []string) {
	if at == stream.FailApply {
		w.mu.Lock()
		g := w.gate
		w.mu.Unlock()
		if g != nil {
			<-g
		}
		return
	}
	w.mu.Lock()
	var a *armed
	for _, topic := range topics {
		if x := w.arms[at+" "+topic]; x != nil && !x.took {
			x.took, a = true, x
			break
		}
	}
	w.mu.Unlock()
	if a != nil {
		defer close(a.done)
		a.fn()
	}
}

// arm makes the next stream on topic that reaches failpoint at run fn there.
func (w *world) arm(at, topic string, fn func()) {
	w.mu.Lock()
	w.arms[at+" "+topic] = &armed{fn: fn, done: make(chan struct{})}
	w.mu.Unlock()
}

// fired waits until a stream on topic has been through failpoint at.
func (w *world) fired(at, topic string) {
	w.t.Helper()
	w.mu.Lock()
	a := w.arms[at+" "+topic]
	w.mu.Unlock()
	select {
	case <-a.done:
	case <-time.After(ckWait):
		w.t.Fatalf("no stream on %s reached failpoint %s in %v", topic, at, ckWait)
	}
}

func (w *world) closeGate() {
	w.mu.Lock()
	w.gate = make(chan struct{})
	w.mu.Unlock()
}

func (w *world) openGate() {
	w.mu.Lock()
	if w.gate != nil {
		close(w.gate)
		w.gate = nil
	}
	w.mu.Unlock()
}

// post writes a message to room and returns its position in the log.
func (w *world) post(room string, text string) string {
	w.t.Helper()
	msg, err := w.st.PostMessage(context.Background(), room, "checker", text)
	if err != nil {
		w.t.Fatalf("post to %s: %v", room, err)
	}
	return w.o.posOf(w.t, msg.ID)
}

// waitFeed waits until the multiplexer's feed has applied pos.
func (w *world) waitFeed(pos string) {
	w.t.Helper()
	for deadline := time.Now().Add(ckWait); stream.FeedPosition(w.m) < pos; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			w.t.Fatalf("the feed did not reach %s in %v (at %s)", pos, ckWait, stream.FeedPosition(w.m))
		}
	}
}

func (w *world) writeRandom(rng *rand.Rand, id, n int) {
	ctx := context.Background()
	type ord struct {
		id     string
		status string
	}
	var orders []ord
	next := map[string][]string{
		store.StatusPlaced:         {store.StatusPreparing, store.StatusCancelled},
		store.StatusPreparing:      {store.StatusOutForDelivery, store.StatusCancelled},
		store.StatusOutForDelivery: {store.StatusDelivered},
	}
	for i := range n {
		w.writers.RLock()
		var err error
		switch r := rng.IntN(10); {
		case r < 6:
			text := fmt.Sprintf("w%d-%d %s", id, i, strings.Repeat("x", rng.IntN(300)))
			_, err = w.st.PostMessage(ctx, fmt.Sprintf("r%d", rng.IntN(ckRooms)), fmt.Sprint("w", id), text)
		case r < 7 || len(orders) == 0:
			var o store.Order
			o, err = w.st.CreateOrder(ctx, fmt.Sprint("w", id), []store.Item{{SKU: "sku", Qty: 1 + rng.IntN(5)}})
			orders = append(orders, ord{o.ID, o.Status})
		default:
			k := rng.IntN(len(orders))
			o := &orders[k]
			if to := next[o.status]; len(to) > 0 {
				var got store.Order
				got, err = w.st.UpdateOrderStatus(ctx, o.id, to[rng.IntN(len(to))], 0)
				o.status = got.Status
			}
		}
		w.writers.RUnlock()
		if err != nil {
			w.t.Errorf("writer %d: %v", id, err)
			return
		}
	}
}

// pickTopics returns one or two distinct topics of the random traffic.
func pickTopics(rng *rand.Rand, known []string) []string {
	var pool []string
	for _, t := range known {
		if key := strings.TrimPrefix(t, store.RoomTopicPrefix); key == t || key[0] == 'r' {
			pool = append(pool, t) // orders and the writers' rooms, not the scenarios'
		}
	}
	if len(pool) == 0 {
		return []string{store.RoomTopic("r0")}
	}
	a := pool[rng.IntN(len(pool))]
	if rng.IntN(3) == 0 {
		if b := pool[rng.IntN(len(pool))]; b != a {
			return []string{a, b}
		}
	}
	return []string{a}
}

// subscribeRandom connects, reads, stalls and disconnects at random until
// stop, and returns the last id it received.
func (w *world) subscribeRandom(rng *rand.Rand, stop <-chan struct{}) string {
	var topics []string
	last := ""
	for {
		select {
		case <-stop:
			return last
		default:
		}
		if topics == nil || rng.IntN(4) == 0 {
			topics = pickTopics(rng, w.o.knownTopics())
			last = ""
		}
		lastID, kind := last, "continue"
		switch r := rng.IntN(10); {
		case r < 3:
		case r < 4:
			lastID, kind = "", "fresh"
		case r < 6:
			lastID, kind = w.o.randomPos(rng, 3*ckTopicBuffer), "recent"
		case r < 8:
			lastID, kind = w.o.randomPos(rng, 0), "old"
		case r < 9:
			lastID, kind = w.deploy+"-0000000000000001", "lost"
		default:
			if rng.IntN(2) == 0 {
				lastID, kind = "garbage-"+strconv.Itoa(rng.IntN(100)), "garbage"
			} else {
				lastID, kind = "ffffffff"+strings.TrimPrefix(w.o.head(), w.deploy), "foreign"
				if w.deploy == "ffffffff" || w.o.head() == "" {
					lastID = "garbage"
				}
			}
		}
		c := w.connect(topics, lastID, kind)
		if c.err != nil {
			return last
		}
		if rng.IntN(4) == 0 {
			// Stall: take the first events, then stop reading for a while,
			// so the queue may fill; then read what is left.
			c.readFor(time.Duration(5+rng.IntN(20)) * time.Millisecond)
			if !c.done {
				time.Sleep(time.Duration(20+rng.IntN(150)) * time.Millisecond) // a slow client, not synchronisation
			}
		}
		c.readFor(time.Duration(10+rng.IntN(150)) * time.Millisecond)
		c.close()
		if id := c.lastSeen(); id != "" {
			last = id
		}
	}
}

// connect opens a stream and records it for the final check.
func (w *world) connect(topics []string, lastID, kind string) *conn {
	c := &conn{w: w, topics: topics, lastID: lastID, kind: kind, buf: make([]byte, 4<<10)}
	c.dec.OnEvent = func(e *sseparse.Event) bool {
		id := ""
		if e.HasID {
			id = string(e.ID)
		}
		c.events = append(c.events, event{id: id, name: string(e.Name), data: slices.Clone(e.Data)})
		return true
	}
	w.mu.Lock()
	w.conns = append(w.conns, c)
	w.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	req, _ := http.NewRequestWithContext(ctx, "GET", w.srv.URL+"/?"+url.Values{"topic": topics}.Encode(), nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := w.client.Do(req)
	if err != nil {
		c.err, c.done = err, true
		return c
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		c.err, c.done = fmt.Errorf("status %d", resp.StatusCode), true
		return c
	}
	c.body = resp.Body
	return c
}

// read reads once; it reports false when the stream is over for the
// client (ended by the server, or closed by the client).
func (c *conn) read() bool {
	if c.done {
		return false
	}
	n, err := c.body.Read(c.buf)
	if n > 0 {
		c.dec.Feed(c.buf[:n])
	}
	if err != nil {
		c.done, c.eof = true, errors.Is(err, io.EOF)
		return false
	}
	return true
}

// readWhile reads while more() holds, for at most d; past d the client
// hangs up.
func (c *conn) readWhile(more func() bool, d time.Duration) {
	if c.done {
		return
	}
	timer := time.AfterFunc(d, c.cancel)
	defer timer.Stop()
	for more() && c.read() {
	}
	if !timer.Stop() && !c.done {
		c.done = true // the client hung up
	}
}

// readFor reads for d, then hangs up.
func (c *conn) readFor(d time.Duration) {
	c.readWhile(func() bool { return true }, d)
}

// readUntilPos reads until it has an event at or after pos (or the stream
// ends, or ckWait passes).
func (c *conn) readUntilPos(pos string) {
	c.readWhile(func() bool { return c.lastSeen() < pos }, ckWait)
}

func (c *conn) lastSeen() string {
	for i := len(c.events) - 1; i >= 0; i-- {
		if c.events[i].id != "" {
			return c.events[i].id
		}
	}
	return ""
}

func (c *conn) close() {
	if c.cancel != nil {
		c.cancel()
	}
	if c.body != nil {
		c.body.Close()
	}
	c.done = true
}

func (w *world) checkAll() {
	w.o.waitHead(w.t, w.o.head())
	w.mu.Lock()
	conns := slices.Clone(w.conns)
	w.mu.Unlock()
	failed := 0
	for _, c := range conns {
		if err := w.check(c); err != nil {
			failed++
			if failed <= 5 {
				w.t.Errorf("%s stream on %v after %q: %v\n\treceived: %s", c.kind, c.topics, c.lastID, err, c.summary())
			}
		}
	}
	if failed > 5 {
		w.t.Errorf("and %d more streams broke the invariant", failed-5)
	}
	w.t.Logf("%d streams checked against a log of %d changes", len(conns), w.o.size())
}

func (c *conn) summary() string {
	var b strings.Builder
	for i, e := range c.events {
		if i == 12 {
			fmt.Fprintf(&b, "… (%d events)", len(c.events))
			break
		}
		fmt.Fprintf(&b, "%s:%s ", e.name, e.id)
	}
	return b.String()
}

// check holds a connection's events to the invariant.
func (w *world) check(c *conn) error {
	if c.err != nil {
		return fmt.Errorf("request failed: %v", c.err)
	}
	evs := c.events
	start := c.lastID
	resets := 0
	for resets < len(evs) && evs[resets].name == string(protocol.EventReset) {
		resets++
	}
	if resets > 0 && resets != len(c.topics) && resets < len(evs) {
		return fmt.Errorf("%d reset events for %d topics", resets, len(c.topics))
	}
	if (c.kind == "garbage" || c.kind == "foreign") && resets == 0 && len(evs) > 0 {
		return fmt.Errorf("an invalid id was not reset")
	}
	i := resets
	if resets > 0 || start == "" {
		// A snapshot per topic, in the order asked, all at one position.
		for k, topic := range c.topics {
			if i+k >= len(evs) {
				return nil // the client hung up before the snapshot was complete
			}
			e := evs[i+k]
			if e.name != string(protocol.EventSnapshot) || (k > 0 && e.id != evs[i].id) {
				return fmt.Errorf("event %d is %s %s; want the snapshot of %s", i+k, e.name, e.id, topic)
			}
			if err := w.o.stateAt(topic, e.id, e.data); err != nil {
				return err
			}
		}
		start = evs[i].id
		i += len(c.topics)
	}
	want := w.o.after(c.topics, start)
	got := evs[i:]
	for k, e := range got {
		if k >= len(want) {
			return fmt.Errorf("event %d (%s %s) is after the last change on its topics", i+k, e.name, e.id)
		}
		if err := same(e, want[k]); err != nil {
			return fmt.Errorf("event %d after %s: %v", i+k, start, err)
		}
	}
	if c.until != "" {
		n := 0
		for _, ch := range want {
			if ch.pos <= c.until {
				n++
			}
		}
		if len(got) < n {
			return fmt.Errorf("got %d events up to %s, want %d (next missing %s)", len(got), c.until, n, want[len(got)].pos)
		}
	}
	if c.mustDrop && !c.eof {
		return fmt.Errorf("the stalled subscriber was never dropped (a full queue must end the stream)")
	}
	return nil
}

// same says how a received event differs from the log's change.
func same(e event, ch change) error {
	if e.id != ch.pos {
		return fmt.Errorf("got %s %s, want %s on %s", e.name, e.id, ch.pos, ch.topic)
	}
	var p protocol.Payload
	if err := json.Unmarshal(e.data, &p); err != nil {
		return fmt.Errorf("event %s: %v", e.id, err)
	}
	switch {
	case p.Topic != ch.topic:
		return fmt.Errorf("event %s is on %s, the log says %s", e.id, p.Topic, ch.topic)
	case ch.msg != nil && (e.name != string(protocol.EventMessage) || p.Message == nil || p.Message.ID != ch.msg.ID):
		return fmt.Errorf("event %s is %s %s; the log has message %s", e.id, e.name, e.data, ch.msg.ID)
	case ch.order != nil && (e.name != string(protocol.EventOrder) || p.Order == nil || p.Order.ID != ch.order.ID || p.Order.Version != ch.order.Version):
		return fmt.Errorf("event %s is %s %s; the log has order %s version %d", e.id, e.name, e.data, ch.order.ID, ch.order.Version)
	}
	return nil
}

// expect reads c until it has the event at pos and requires that it got
// everything on its topics up to pos.
func (w *world) expect(c *conn, pos string) {
	w.t.Helper()
	c.until = pos
	c.readUntilPos(pos)
	c.close()
	if err := w.check(c); err != nil {
		w.t.Errorf("%s stream on %v after %q: %v\n\treceived: %s", c.kind, c.topics, c.lastID, err, c.summary())
	}
}

// The forced scenarios. Each holds the random writers off and writes to a
// room of its own, so the log around the window is exactly what it wrote.

// forceSubscribeWindow: while a resuming stream is about to read the
// feed's head and register, the feed applies a new event of its topic;
// the stream must still get it (from the catch-up or its queue).
func (w *world) forceSubscribeWindow(room string) {
	w.writers.Lock()
	defer w.writers.Unlock()
	topic := store.RoomTopic(room)
	a := w.post(room, "a")
	w.waitFeed(a)
	w.arm(stream.FailSubscribe, topic, func() { w.waitFeed(w.post(room, "in the window")) })
	c := w.connect([]string{topic}, a, "forced subscribe window")
	w.readOnceLive(c, room, stream.FailSubscribe)
}

// readOnceLive posts one more event once the failpoint fired and expects
// the stream to have everything up to it.
func (w *world) readOnceLive(c *conn, room, at string) {
	w.t.Helper()
	w.fired(at, store.RoomTopic(room))
	last := w.post(room, "live")
	w.expect(c, last)
}

// forceReplayPastHead: a stream resuming from memory registers, then the
// feed applies more events of its topic before memory is read; they reach
// the queue, and the replay must stop at the head it registered at.
func (w *world) forceReplayPastHead(room string) {
	w.writers.Lock()
	defer w.writers.Unlock()
	topic := store.RoomTopic(room)
	a := w.post(room, "a")
	w.waitFeed(w.post(room, "b"))
	w.arm(stream.FailReplay, topic, func() {
		w.waitFeed(w.post(room, "queued 1"))
		w.waitFeed(w.post(room, "queued 2"))
	})
	c := w.connect([]string{topic}, a, "forced replay past head")
	w.readOnceLive(c, room, stream.FailReplay)
}

// forceHandoverWindow: between a stream's catch-up and its going live,
// the feed applies new events of its topic; they wait in the queue and
// must follow the catch-up, once each.
func (w *world) forceHandoverWindow(room string) {
	w.writers.Lock()
	defer w.writers.Unlock()
	topic := store.RoomTopic(room)
	a := w.post(room, "a")
	w.waitFeed(w.post(room, "b"))
	w.arm(stream.FailHandover, topic, func() {
		w.waitFeed(w.post(room, "queued 1"))
		w.waitFeed(w.post(room, "queued 2"))
	})
	c := w.connect([]string{topic}, a, "forced handover window")
	w.readOnceLive(c, room, stream.FailHandover)
}

// forceAheadOfFeed: a client resumes from an event the store committed
// but this feed has not applied yet; once the feed applies it, it reaches
// the queue, and must not be sent again.
func (w *world) forceAheadOfFeed(room string) {
	w.writers.Lock()
	defer w.writers.Unlock()
	topic := store.RoomTopic(room)
	w.waitFeed(w.post(room, "before"))
	w.closeGate()
	e := w.post(room, "ahead")
	w.arm(stream.FailBegin, topic, w.openGate)
	c := w.connect([]string{topic}, e, "forced ahead of feed")
	w.readOnceLive(c, room, stream.FailBegin)
}

// forceCatchUpAtHead: a client resumes from before what memory holds of
// its topic, whose newest event is the feed's head; the catch-up from the
// store must include the event at head.
func (w *world) forceCatchUpAtHead(room string) {
	w.writers.Lock()
	defer w.writers.Unlock()
	topic := store.RoomTopic(room)
	a := w.post(room, "a")
	var last string
	for i := range ckTopicBuffer + 1 {
		last = w.post(room, fmt.Sprint("b", i))
	}
	w.waitFeed(last)
	c := w.connect([]string{topic}, a, "forced catch-up at head")
	w.expect(c, w.post(room, "live"))
}

// forceEvictedTopic: a topic's buffer is evicted (more topics written
// than MaxTopics); a client resuming it must be caught up from the store.
func (w *world) forceEvictedTopic(room string) {
	w.writers.Lock()
	defer w.writers.Unlock()
	topic := store.RoomTopic(room)
	a := w.post(room, "a")
	w.post(room, "b")
	var last string
	for i := range ckMaxTopics + 1 {
		last = w.post(fmt.Sprintf("%s-x%d", room, i), "evicting")
	}
	w.waitFeed(last)
	c := w.connect([]string{topic}, a, "forced evicted topic")
	w.expect(c, w.post(room, "live"))
}

// forceStall: a subscriber stops reading while its topic gets far more
// events than its queue holds: the server must end its stream, having
// sent a prefix of the events; resuming from the last id gets the rest.
func (w *world) forceStall(room string) {
	w.writers.Lock()
	defer w.writers.Unlock()
	topic := store.RoomTopic(room)
	w.waitFeed(w.post(room, "first"))
	c := w.connect([]string{topic}, "", "forced stall")
	c.mustDrop = true
	c.readWhile(func() bool { return len(c.events) == 0 }, ckWait)
	text := strings.Repeat("y", 3000)
	var last string
	// 160 events of ~3 KiB: many times what the queue and both small
	// socket buffers hold.
	for range 4 {
		var wg sync.WaitGroup
		pos := make([]string, 4)
		for g := range pos {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					msg, err := w.st.PostMessage(context.Background(), room, "checker", text)
					if err != nil {
						w.t.Errorf("post: %v", err)
						return
					}
					pos[g] = msg.ID
				}
			}()
		}
		wg.Wait()
		for _, id := range pos {
			if p := w.o.posOf(w.t, id); p > last {
				last = p
			}
		}
		w.waitFeed(last)
	}
	c.readWhile(func() bool { return true }, ckWait)
	if err := w.check(c); err != nil {
		w.t.Errorf("stalled stream on %v: %v\n\treceived: %s", c.topics, err, c.summary())
		return
	}
	again := w.connect([]string{topic}, c.lastSeen(), "after the stall")
	w.expect(again, last)
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
