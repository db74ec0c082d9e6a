package mongo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/address"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/bsonx/bsoncore"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/description"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/drivertest"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/mnet"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/wiremessage"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/xoptions"

	"changecast/store"
)

// These tests check that the number of change streams a Store opens does
// not grow with the number of clients (issue 14, defect 1), that the
// positions it hands out are never ahead of its feed (defect 3), and that
// the catch-up filter can be pushed into the oplog scan (defect 4).
//
// drivertest's mock deployment answers from one queue on one connection,
// so it cannot serve concurrent operations; scriptDeployment answers each
// command from a function of the command, on a connection of its own per
// operation, safe for concurrent use.

// scriptDeployment is a driver.Deployment whose server answers each
// command with reply(command name, command body).
type scriptDeployment struct {
	reply   func(name string, body bson.Raw) bson.D
	updates chan description.Topology
	once    sync.Once
}

var (
	_ driver.Deployment   = (*scriptDeployment)(nil)
	_ driver.Server       = (*scriptDeployment)(nil)
	_ driver.Connector    = (*scriptDeployment)(nil)
	_ driver.Disconnector = (*scriptDeployment)(nil)
	_ driver.Subscriber   = (*scriptDeployment)(nil)
)

func newScriptDeployment(reply func(name string, body bson.Raw) bson.D) *scriptDeployment {
	timeout := int64(30)
	d := &scriptDeployment{reply: reply, updates: make(chan description.Topology, 1)}
	d.updates <- description.Topology{SessionTimeoutMinutes: &timeout}
	return d
}

func (d *scriptDeployment) SelectServer(context.Context, description.ServerSelector) (driver.Server, error) {
	return d, nil
}
func (d *scriptDeployment) Kind() description.TopologyKind           { return description.TopologyKindSingle }
func (d *scriptDeployment) GetServerSelectionTimeout() time.Duration { return 0 }
func (d *scriptDeployment) Connection(context.Context) (*mnet.Connection, error) {
	return mnet.NewConnection(&scriptConn{d: d}), nil
}
func (d *scriptDeployment) RTTMonitor() driver.RTTMonitor { return zeroRTT{} }
func (d *scriptDeployment) Connect() error                { return nil }
func (d *scriptDeployment) Disconnect(context.Context) error {
	d.once.Do(func() { close(d.updates) })
	return nil
}
func (d *scriptDeployment) Subscribe() (*driver.Subscription, error) {
	return &driver.Subscription{Updates: d.updates}, nil
}
func (d *scriptDeployment) Unsubscribe(*driver.Subscription) error { return nil }

type zeroRTT struct{}

func (zeroRTT) EWMA() time.Duration { return 0 }
func (zeroRTT) Min() time.Duration  { return 0 }
func (zeroRTT) Stats() string       { return "" }

// scriptConn is one operation's connection: Write keeps the command, Read
// answers it.
type scriptConn struct {
	d    *scriptDeployment
	name string
	body bson.Raw
}

func (c *scriptConn) Write(_ context.Context, wm []byte) error {
	_, _, _, _, rem, ok := wiremessage.ReadHeader(wm)
	if !ok {
		return errors.New("script: bad header")
	}
	if _, rem, ok = wiremessage.ReadMsgFlags(rem); !ok {
		return errors.New("script: bad flags")
	}
	for len(rem) > 0 {
		var st wiremessage.SectionType
		if st, rem, ok = wiremessage.ReadMsgSectionType(rem); !ok {
			return errors.New("script: bad section")
		}
		if st != wiremessage.SingleDocument {
			if _, _, rem, ok = wiremessage.ReadMsgSectionRawDocumentSequence(rem); !ok {
				return errors.New("script: bad sequence")
			}
			continue
		}
		var doc bsoncore.Document
		if doc, rem, ok = wiremessage.ReadMsgSectionSingleDocument(rem); !ok {
			return errors.New("script: bad document")
		}
		c.body = slices.Clone(bson.Raw(doc))
		elems, err := c.body.Elements()
		if err != nil || len(elems) == 0 {
			return errors.New("script: empty command")
		}
		c.name = elems[0].Key()
	}
	return nil
}

func (c *scriptConn) Read(context.Context) ([]byte, error) {
	reply := c.d.reply(c.name, c.body)
	var dst []byte
	var idx int32
	idx, dst = wiremessage.AppendHeaderStart(dst, wiremessage.NextRequestID(), 0, wiremessage.OpMsg)
	dst = wiremessage.AppendMsgFlags(dst, 0)
	dst = wiremessage.AppendMsgSectionType(dst, wiremessage.SingleDocument)
	b, err := bson.Marshal(reply)
	if err != nil {
		return nil, err
	}
	dst = append(dst, b...)
	return bsoncore.UpdateLength(dst, idx, int32(len(dst[idx:]))), nil
}

func (c *scriptConn) Description() description.Server { return drivertest.MockDescription }
func (c *scriptConn) Close() error                    { return nil }
func (c *scriptConn) ID() string                      { return "<script>" }
func (c *scriptConn) DriverConnectionID() int64       { return 0 }
func (c *scriptConn) ServerConnectionID() *int64      { id := int64(42); return &id }
func (c *scriptConn) Address() address.Address        { return "127.0.0.1:27017" }
func (c *scriptConn) Stale() bool                     { return false }
func (c *scriptConn) OIDCTokenGenID() uint64          { return 0 }
func (c *scriptConn) SetOIDCTokenGenID(uint64)        {}

// okReply answers Open's ping and createIndexes.
func okReply() bson.D { return bson.D{{Key: "ok", Value: 1.0}} }

// isChangeStream reports whether an aggregate opens a change stream.
func isChangeStream(name string, body bson.Raw) bool {
	if name != "aggregate" {
		return false
	}
	_, err := body.LookupErr("pipeline", "0", "$changeStream")
	return err == nil
}

// openScripted opens a Store whose data client talks to a scriptDeployment
// answering with reply (ping and createIndexes get ok) and whose feed
// client talks to a drivertest mock, returned with the feed's recorder.
func openScripted(tb testing.TB, opts Options, reply func(name string, body bson.Raw) bson.D) (*Store, *drivertest.MockDeployment, *recorder) {
	tb.Helper()
	data := newScriptDeployment(func(name string, body bson.Raw) bson.D {
		switch name {
		case "ping", "createIndexes", "endSessions":
			return okReply()
		}
		return reply(name, body)
	})
	feed, feedCmds := drivertest.NewMockDeployment(), &recorder{}
	opts.clientOptions = func(role string, o *options.ClientOptions) error {
		if role == "feed" {
			o.SetMonitor(feedCmds.monitor())
			return xoptions.SetInternalClientOptions(o, "deployment", feed)
		}
		return xoptions.SetInternalClientOptions(o, "deployment", data)
	}
	s, err := Open(context.Background(), "mongodb://127.0.0.1:27017", testDB, opts)
	if err != nil {
		tb.Fatalf("Open over the scripted deployment: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s, feed, feedCmds
}

// runQuietFeed starts a Follow after start whose stream, on a quiet
// database, reaches the high-water mark reached with an empty getMore and
// then gets one event at eventAt, whose batch it holds until the test
// ends. It returns once the feed has handed over reached and is holding.
func runQuietFeed(t *testing.T, s *Store, feed *drivertest.MockDeployment, start, reached string, eventAt uint32) {
	t.Helper()
	ev := bson.NewObjectID()
	feed.AddResponses(
		cursorReply(true, 80, start),
		cursorReply(false, 80, reached),
		cursorReply(false, 80, eventTok(eventAt), eventDoc(eventTok(eventAt), "insert", messagesCollection, ev, messageBSON(ev, "lobby", "later"))),
		killReply(80),
	)
	holding, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	var checkpoints []string
	go func() {
		done <- s.Follow(context.Background(), start, func(b store.Batch) error {
			checkpoints = append(checkpoints, b.Checkpoint)
			if len(b.Changes) > 0 {
				close(holding)
				<-release
				return errTestStop
			}
			return nil
		})
	}()
	select {
	case <-holding:
	case err := <-done:
		t.Fatalf("Follow returned before holding: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the feed never got its event")
	}
	if want := []string{start, reached, eventTok(eventAt)}; !slices.Equal(checkpoints, want) {
		t.Fatalf("feed checkpoints: got %v, want %v", checkpoints, want)
	}
	t.Cleanup(func() {
		close(release)
		if err := <-done; !errors.Is(err, errTestStop) {
			t.Errorf("Follow: got %v, want the test's stop", err)
		}
	})
}

// Defect 1: while the feed runs, Snapshot opens no change stream, however
// many clients ask at once, and reads at the cluster time that holds
// exactly the changes up to the position it returns.
func TestSnapshotsOpenNoChangeStream(t *testing.T) {
	order := bson.NewObjectID()
	var mu sync.Mutex
	var streams int
	var finds []bson.Raw
	s, feed, _ := openScripted(t, Options{}, func(name string, body bson.Raw) bson.D {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case isChangeStream(name, body):
			streams++
			// A fresh stream on a real server: a high-water mark at
			// lastApplied + 1.
			return cursorReply(true, 0, hwmTok(6))
		case name == "find":
			finds = append(finds, body)
			return findReply(ordersCollection, orderBSON(order, store.StatusPreparing, 2))
		}
		return errReply(59, "CommandNotFound")
	})
	runQuietFeed(t, s, feed, hwmTok(3), hwmTok(5), 9)

	const clients = 20
	topics := []string{store.OrderTopic(order.Hex())}
	var wg sync.WaitGroup
	positions := make([]string, clients)
	errs := make([]error, clients)
	for i := range clients {
		wg.Go(func() {
			var snaps []store.Snapshot
			snaps, positions[i], errs[i] = s.Snapshot(context.Background(), topics)
			if errs[i] == nil && (len(snaps) != 1 || snaps[0].Order == nil || snaps[0].Order.Version != 2) {
				errs[i] = fmt.Errorf("snapshot: got %+v, want version 2 of the order", snaps)
			}
		})
	}
	wg.Wait()
	for i := range clients {
		if errs[i] != nil {
			t.Fatalf("Snapshot %d: %v", i, errs[i])
		}
		if positions[i] != hwmTok(5) {
			t.Errorf("Snapshot %d position: got %q, want the feed's checkpoint %q", i, positions[i], hwmTok(5))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if streams != 0 {
		t.Errorf("change streams opened by %d snapshots: got %d, want 0", clients, streams)
	}
	if len(finds) != clients {
		t.Fatalf("finds: got %d, want %d", len(finds), clients)
	}
	// The checkpoint is a high-water mark at (testSec, 5): it sorts after
	// every event before that time and before every event at it, so the
	// state is the one at (testSec, 4).
	for _, f := range finds {
		ts, inc, ok := f.Lookup("readConcern", "atClusterTime").TimestampOK()
		if lvl := lookupString(f, "readConcern", "level"); lvl != "snapshot" || !ok || ts != testSec || inc != 4 {
			t.Errorf("find readConcern: got %v, want snapshot at Timestamp(%d, 4)", f.Lookup("readConcern"), uint32(testSec))
		}
	}
}

// Defect 1: after an event checkpoint, the read is at the event's own
// cluster time; after an event of a transaction it stays at the previous
// checkpoint, since later events of the transaction share that time.
func TestSnapshotReadTimeOfEventCheckpoints(t *testing.T) {
	for _, tt := range []struct {
		name    string
		txn     bool
		wantPos string
		wantInc uint32
	}{
		{"single write", false, eventTok(7), 7},
		{"in a transaction", true, hwmTok(5), 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			order := bson.NewObjectID()
			var mu sync.Mutex
			var reads []uint32
			s, feed, _ := openScripted(t, Options{}, func(name string, body bson.Raw) bson.D {
				mu.Lock()
				defer mu.Unlock()
				if name == "find" {
					_, inc, _ := body.Lookup("readConcern", "atClusterTime").TimestampOK()
					reads = append(reads, inc)
					return findReply(ordersCollection)
				}
				return errReply(59, "CommandNotFound")
			})
			var extra []bson.E
			if tt.txn {
				extra = []bson.E{{Key: "lsid", Value: bson.D{{Key: "id", Value: bson.Binary{Subtype: 4, Data: make([]byte, 16)}}}}, {Key: "txnNumber", Value: int64(1)}}
			}
			ev := bson.NewObjectID()
			feed.AddResponses(
				cursorReply(true, 81, hwmTok(3)),
				cursorReply(false, 81, hwmTok(5)),
				cursorReply(false, 81, eventTok(7), eventDoc(eventTok(7), "replace", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1), extra...)),
				cursorReply(false, 81, eventTok(9), eventDoc(eventTok(9), "insert", messagesCollection, ev, messageBSON(ev, "lobby", "x"))),
				killReply(81),
			)
			holding, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
			go func() {
				done <- s.Follow(context.Background(), hwmTok(3), func(b store.Batch) error {
					if b.Checkpoint == eventTok(9) {
						close(holding)
						<-release
						return errTestStop
					}
					return nil
				})
			}()
			defer func() { close(release); <-done }()
			select {
			case <-holding:
			case err := <-done:
				t.Fatalf("Follow returned: %v", err)
			}
			// The feed now holds its next batch: the last checkpoint it
			// completed is the event at 7.
			_, pos, err := s.Snapshot(context.Background(), []string{store.OrderTopic(order.Hex())})
			if err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			if pos != tt.wantPos {
				t.Errorf("position: got %q, want %q", pos, tt.wantPos)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(reads, []uint32{tt.wantInc}) {
				t.Errorf("atClusterTime increments: got %v, want [%d]", reads, tt.wantInc)
			}
		})
	}
}

// Defect 3: on a quiet database, the position a snapshot hands a client and
// Head's are the feed's own checkpoint, never ahead of it, so the client
// reconnecting with it at once has nothing to catch up and no wait for the
// feed (the multiplexer waits only for ids past its feed).
func TestSnapshotThenReconnectNotAheadOfFeed(t *testing.T) {
	order := bson.NewObjectID()
	var mu sync.Mutex
	var streams int
	s, feed, _ := openScripted(t, Options{}, func(name string, body bson.Raw) bson.D {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case isChangeStream(name, body):
			streams++
			// A fresh stream's token: lastApplied + 1, one tick past
			// the running feed's quiet checkpoint.
			return cursorReply(true, 0, hwmTok(6))
		case name == "find":
			return findReply(ordersCollection, orderBSON(order, store.StatusPlaced, 1))
		}
		return errReply(59, "CommandNotFound")
	})
	feedAt := hwmTok(5)
	runQuietFeed(t, s, feed, hwmTok(3), feedAt, 9)

	topics := []string{store.OrderTopic(order.Hex())}
	_, pos, err := s.Snapshot(context.Background(), topics)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if pos > feedAt {
		t.Errorf("snapshot position %q is ahead of the feed's checkpoint %q: its client would wait and be reset", pos, feedAt)
	}
	head, err := s.Head(context.Background())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if head > feedAt {
		t.Errorf("Head %q is ahead of the feed's checkpoint %q", head, feedAt)
	}
	// The reconnect: the stream resumes from pos up to the feed's
	// position, with no change to read from the database.
	if err := s.CatchUp(context.Background(), topics, pos, feedAt, func(c store.Change) error {
		return fmt.Errorf("change %s after a snapshot with no writes since", c.Pos)
	}); err != nil {
		t.Errorf("CatchUp(snapshot position, feed): %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if streams != 0 {
		t.Errorf("change streams opened: got %d, want 0", streams)
	}
}

// Defect 3: after a restart the feed starts at Head's fresh high-water mark
// (lastApplied + 1) while a catch-up's running stream reports the last time
// it scanned (lastApplied): the catch-up ends there instead of waiting for
// the next oplog write. An event position is not ended early that way.
func TestCatchUpToFreshHead(t *testing.T) {
	order := bson.NewObjectID()
	topics := []string{store.OrderTopic(order.Hex())}
	after := eventTok(2)

	t.Run("high-water mark until", func(t *testing.T) {
		mm := openMock(t, Options{})
		until := hwmTok(9) // Head of a fresh stream: lastApplied is 8
		mm.data.AddResponses(
			cursorReply(true, 90, after),
			cursorReply(false, 90, hwmTok(8)),
			killReply(90),
		)
		if err := mm.store.CatchUp(context.Background(), topics, after, until, func(store.Change) error { return nil }); err != nil {
			t.Fatalf("CatchUp: %v", err)
		}
		if got := len(mm.dataCmds.named("getMore")); got != 1 {
			t.Errorf("getMores: got %d, want 1 (done once the stream scanned through 8)", got)
		}
	})

	t.Run("event until", func(t *testing.T) {
		mm := openMock(t, Options{})
		until := eventTok(9)
		mm.data.AddResponses(
			cursorReply(true, 91, after),
			cursorReply(false, 91, hwmTok(8)),
			cursorReply(false, 91, until, eventDoc(until, "replace", ordersCollection, order, orderBSON(order, store.StatusDelivered, 3))),
			killReply(91),
		)
		var got []string
		if err := mm.store.CatchUp(context.Background(), topics, after, until, func(c store.Change) error {
			got = append(got, c.Pos)
			return nil
		}); err != nil {
			t.Fatalf("CatchUp: %v", err)
		}
		if !slices.Equal(got, []string{until}) {
			t.Errorf("changes: got %v, want until's own %v", got, until)
		}
	})
}

// Defect 4: the catch-up's $match is an $and whose ns.coll clause the
// server can push into its oplog scan; the $or (which it cannot push as
// a whole) is a separate clause.
func TestCatchUpFilterPushdown(t *testing.T) {
	stage, err := catchUpMatch([]string{store.RoomTopic("lobby")}, eventTok(2), eventTok(8))
	if err != nil {
		t.Fatal(err)
	}
	pipeline := changeStreamPipeline(stage, &largeEvents{})
	raw, err := bson.Marshal(bson.D{{Key: "p", Value: pipeline}})
	if err != nil {
		t.Fatal(err)
	}
	match, ok := bson.Raw(raw).Lookup("p", "0", "$match").DocumentOK()
	if !ok {
		t.Fatalf("pipeline %v: first stage is not $match", bson.Raw(raw))
	}
	elems, _ := bson.Raw(match).Elements()
	if len(elems) != 1 || elems[0].Key() != "$and" {
		t.Fatalf("$match %v: want a single $and", bson.Raw(match))
	}
	clauses, _ := elems[0].Value().Array().Values()
	var nsColl []string
	var ors int
	for _, c := range clauses {
		doc := c.Document()
		if v, err := doc.LookupErr("ns.coll", "$in"); err == nil && len(mustElems(t, doc)) == 1 {
			vals, _ := v.Array().Values()
			for _, s := range vals {
				nsColl = append(nsColl, s.StringValue())
			}
		}
		if _, err := doc.LookupErr("$or"); err == nil {
			ors++
		}
	}
	slices.Sort(nsColl)
	// Both collections: the events at after and until may be in either,
	// and the filter must keep them (SERVER-71565).
	if want := []string{messagesCollection, ordersCollection}; !slices.Equal(nsColl, want) {
		t.Errorf("$and clause ns.coll $in: got %v, want %v", nsColl, want)
	}
	if ors != 1 {
		t.Errorf("$and clauses with the $or: got %d, want 1", ors)
	}
}

func mustElems(t *testing.T, d bson.Raw) []bson.RawElement {
	t.Helper()
	e, err := d.Elements()
	if err != nil {
		t.Fatal(err)
	}
	return e
}
