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
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/xoptions"

	"changecast/store"
)

// streamCounter answers a scripted data deployment as a quiet replica set
// whose last applied time is (testSec, applied): a fresh change stream's
// first post-batch token is a high-water mark at applied + 1, one started
// at a time T has one at T (cursors closed, id 0). It counts the change
// streams opened and answers finds with find.
type streamCounter struct {
	applied uint32
	find    func(body bson.Raw) bson.D

	mu      sync.Mutex
	streams int
	finds   []bson.Raw
}

func (c *streamCounter) reply(name string, body bson.Raw) bson.D {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case isChangeStream(name, body):
		c.streams++
		if _, inc, ok := body.Lookup("pipeline", "0", "$changeStream", "startAtOperationTime").TimestampOK(); ok {
			return cursorReply(true, 0, hwmTok(inc))
		}
		return cursorReply(true, 0, hwmTok(c.applied+1))
	case name == "find" && c.find != nil:
		c.finds = append(c.finds, body)
		return c.find(body)
	}
	return errReply(59, "CommandNotFound")
}

func (c *streamCounter) opened() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams
}

// holdFeed runs Follow after after in the background; fn records each
// batch and, on the batch whose checkpoint is holdAt, signals and holds it
// until the test ends, then returns errTestStop. It returns once the feed
// holds.
func holdFeed(t *testing.T, s *Store, after, holdAt string) {
	t.Helper()
	var got []store.Batch
	holding, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.Follow(context.Background(), after, func(b store.Batch) error {
			got = append(got, b)
			if b.Checkpoint == holdAt {
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
		t.Fatalf("Follow returned before holding %s: %v; batches %v", holdAt, err, batchRows(got))
	case <-time.After(10 * time.Second):
		t.Fatal("the feed never held")
	}
	t.Cleanup(func() {
		close(release)
		if err := <-done; !errors.Is(err, errTestStop) {
			t.Errorf("Follow: got %v, want the test's stop", err)
		}
	})
}

// Item 1: what a /metrics scrape asks of the store opens no change stream
// and leaves the feed's bookkeeping alone. Scrapes used to run a second
// Follow (a probe) that became the tracked feed and, returning, marked the
// feed stopped: every later Snapshot opened a change stream again. Now a
// Follow started while the feed runs is no feed, and SeenHead says how far
// the feed has read without a stream.
func TestScrapesOpenNoChangeStream(t *testing.T) {
	order := bson.NewObjectID()
	c := &streamCounter{applied: 5, find: func(bson.Raw) bson.D {
		return findReply(ordersCollection, orderBSON(order, store.StatusPlaced, 1))
	}}
	s, feed, feedCmds := openScripted(t, Options{}, c.reply)
	ev := bson.NewObjectID()
	feed.AddResponses(
		cursorReply(true, 80, hwmTok(3)),
		cursorReply(false, 80, hwmTok(5)),
		cursorReply(false, 80, eventTok(9), eventDoc(eventTok(9), "insert", messagesCollection, ev, messageBSON(ev, "lobby", "later"))),
	)
	holdFeed(t, s, hwmTok(3), eventTok(9))
	const scrapes = 50
	for i := range scrapes {
		pos, pending, ok := s.SeenHead()
		if !ok || pos != eventTok(9) || !pending.Equal(time.Unix(testSec, 0)) {
			t.Fatalf("SeenHead %d: got %q, %v, %v; want the event the feed holds, its commit time, ok", i, pos, pending, ok)
		}
		if i%10 == 0 {
			// What scrapes did before: a second Follow from the applied
			// position, ended after its opening batch.
			feed.AddResponses(cursorReply(true, 81, hwmTok(5)), killReply(81))
			if err := s.Follow(context.Background(), hwmTok(5), func(store.Batch) error { return errTestStop }); !errors.Is(err, errTestStop) {
				t.Fatalf("probe Follow: %v", err)
			}
		}
	}
	feed.AddResponses(killReply(80)) // the held feed's, at the end
	const snapshots = 20
	for range snapshots {
		if _, pos, err := s.Snapshot(context.Background(), []string{store.OrderTopic(order.Hex())}); err != nil || pos != hwmTok(5) {
			t.Fatalf("Snapshot: position %q, %v; want the feed's checkpoint %q", pos, err, hwmTok(5))
		}
	}
	if got := c.opened(); got != 0 {
		t.Errorf("change streams opened by %d scrapes and %d snapshots: got %d, want 0", scrapes, snapshots, got)
	}
	if got := len(feedCmds.named("aggregate")); got != 1+scrapes/10 {
		t.Errorf("aggregates on the feed client: got %d, want %d (the feed and the probes)", got, 1+scrapes/10)
	}
}

// Item 4: after a restart from an event's token on a quiet replica set,
// the feed reads nothing new and its quiet checkpoint (a high-water mark
// at the last applied time) sorts before that token, so it reaches no
// usable checkpoint until the next oplog entry (up to 10 s on an idle
// primary). A snapshot meanwhile must not hand out a fresh stream's token
// at last applied + 1: no feed passes it before that entry, and the client
// reconnecting with it would wait and be reset. Its position is the
// server's high-water mark at the last applied time.
func TestSnapshotAtStartNotAheadOfFeed(t *testing.T) {
	order := bson.NewObjectID()
	c := &streamCounter{applied: 8, find: func(bson.Raw) bson.D {
		return findReply(ordersCollection, orderBSON(order, store.StatusPlaced, 1))
	}}
	s, feed, _ := openScripted(t, Options{}, c.reply)
	restart := eventTok(8) // the last event, at the last applied time
	feed.AddResponses(
		cursorReply(true, 80, restart),
		cursorReply(false, 80, hwmTok(8)), // quiet: scanned to 8
		cursorReply(false, 80, eventTok(9), eventDoc(eventTok(9), "replace", ordersCollection, order, orderBSON(order, store.StatusPreparing, 2))),
		killReply(80),
	)
	holdFeed(t, s, restart, eventTok(9))
	_, pos, err := s.Snapshot(context.Background(), []string{store.OrderTopic(order.Hex())})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	// The quiet feed's own checkpoint: hwmTok(8); the position must not
	// sort after it.
	if pos > hwmTok(8) {
		t.Errorf("snapshot position %q sorts after %q, the high-water mark a quiet feed reaches: its client would wait for the next write and be reset", pos, hwmTok(8))
	}
	head, err := s.Head(context.Background())
	if err != nil || head > hwmTok(8) {
		t.Errorf("Head: %q, %v; want a position not after %q", head, err, hwmTok(8))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.finds {
		if _, inc, _ := f.Lookup("readConcern", "atClusterTime").TimestampOK(); inc != 7 {
			t.Errorf("snapshot read at increment %d, want 7 (just before the position's time)", inc)
		}
	}
}

// Item 4: a feed started from a high-water mark (Head's) is at an exact
// point at once: snapshots taken before it reads anything open no stream.
func TestFeedFromHighWaterMarkUsableAtOnce(t *testing.T) {
	order := bson.NewObjectID()
	c := &streamCounter{applied: 4, find: func(bson.Raw) bson.D {
		return findReply(ordersCollection, orderBSON(order, store.StatusPlaced, 1))
	}}
	s, feed, _ := openScripted(t, Options{}, c.reply)
	feed.AddResponses(
		cursorReply(true, 80, hwmTok(4)),
		cursorReply(false, 80, eventTok(6), eventDoc(eventTok(6), "replace", ordersCollection, order, orderBSON(order, store.StatusPreparing, 2))),
		killReply(80),
	)
	holdFeed(t, s, hwmTok(4), eventTok(6))
	_, pos, err := s.Snapshot(context.Background(), []string{store.OrderTopic(order.Hex())})
	if err != nil || pos != hwmTok(4) {
		t.Errorf("Snapshot: position %q, %v; want the feed's start %q", pos, err, hwmTok(4))
	}
	if got := c.opened(); got != 0 {
		t.Errorf("change streams opened: got %d, want 0", got)
	}
}

// Item 8: events without txnNumber can share a cluster time too (batched
// writes, applyOps). A snapshot at an event's own checkpoint reads at its
// time, which would hold a later event of that time: the client would get
// that change twice. An event's token is used only once the feed has read
// a later time.
func TestSnapshotExcludesEventsSharingTime(t *testing.T) {
	a, b := bson.NewObjectID(), bson.NewObjectID()
	c := &streamCounter{applied: 9, find: func(bson.Raw) bson.D { return findReply(ordersCollection) }}
	s, feed, _ := openScripted(t, Options{}, c.reply)
	tokA := eventTok(7)
	tokB := tokA + "02" // a later event of the same time (another document)
	feed.AddResponses(
		cursorReply(true, 80, hwmTok(3)),
		cursorReply(false, 80, hwmTok(5)),
		cursorReply(false, 80, tokA, eventDoc(tokA, "insert", ordersCollection, a, orderBSON(a, store.StatusPlaced, 1))),
		cursorReply(false, 80, tokB, eventDoc(tokB, "insert", ordersCollection, b, orderBSON(b, store.StatusPlaced, 1))),
		killReply(80),
	)
	holdFeed(t, s, hwmTok(3), tokB)
	_, pos, err := s.Snapshot(context.Background(), []string{store.OrderTopic(b.Hex())})
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.finds) != 1 {
		t.Fatalf("finds: got %d, want 1", len(c.finds))
	}
	_, inc, _ := c.finds[0].Lookup("readConcern", "atClusterTime").TimestampOK()
	if pos != hwmTok(5) || inc != 4 {
		t.Errorf("snapshot at %q read at increment %d; want %q read at 4 (the event at 7 is not known to be the last of its time)", pos, inc, hwmTok(5))
	}
}

// Item 8: the events of a transaction share a cluster time and can come
// in two server batches; they reach fn in one batch, never split by a
// checkpoint in between.
func TestFollowTransactionAcrossBatches(t *testing.T) {
	mm := openMock(t, Options{})
	o1, o2, m := bson.NewObjectID(), bson.NewObjectID(), bson.NewObjectID()
	txn := []bson.E{{Key: "lsid", Value: bson.D{{Key: "id", Value: bson.Binary{Subtype: 4, Data: make([]byte, 16)}}}}, {Key: "txnNumber", Value: int64(4)}}
	t7a, t7b := eventTok(7), eventTok(7)+"02"
	after := eventTok(1)
	mm.feed.AddResponses(
		cursorReply(true, 42, after),
		cursorReply(false, 42, t7a,
			eventDoc(eventTok(6), "insert", messagesCollection, m, messageBSON(m, "lobby", "before")),
			eventDoc(t7a, "insert", ordersCollection, o1, orderBSON(o1, store.StatusPlaced, 1), txn...)),
		cursorReply(false, 42, eventTok(8),
			eventDoc(t7b, "insert", ordersCollection, o2, orderBSON(o2, store.StatusPlaced, 1), txn...),
			eventDoc(eventTok(8), "insert", messagesCollection, m, messageBSON(m, "lobby", "after"))),
		// A transaction at the end of a batch, then nothing: the empty
		// getMore hands it over.
		cursorReply(false, 42, eventTok(9), eventDoc(eventTok(9), "insert", ordersCollection, o1, orderBSON(o1, store.StatusPlaced, 1), txn...)),
		cursorReply(false, 42, hwmTok(10)),
		killReply(42),
	)
	got, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool { return len(bs) == 4 })
	if !errors.Is(err, errTestStop) {
		t.Fatalf("Follow returned %v, want the callback's error", err)
	}
	want := []string{row(after), row(eventTok(6), eventTok(6)), row(eventTok(8), t7a, t7b, eventTok(8)), row(hwmTok(10), eventTok(9))}
	if !slices.Equal(batchRows(got), want) {
		t.Errorf("batches:\n got %v\nwant %v", batchRows(got), want)
	}
}

// openScriptedFeed opens a Store whose feed and data clients both talk to
// scripted deployments, so that the feed's replies can depend on what it
// asks.
func openScriptedFeed(tb testing.TB, feedReply, dataReply func(name string, body bson.Raw) bson.D) *Store {
	tb.Helper()
	wrap := func(reply func(string, bson.Raw) bson.D) *scriptDeployment {
		return newScriptDeployment(func(name string, body bson.Raw) bson.D {
			switch name {
			case "ping", "createIndexes", "endSessions", "killCursors":
				return okReply()
			}
			return reply(name, body)
		})
	}
	feed, data := wrap(feedReply), wrap(dataReply)
	opts := Options{clientOptions: func(role string, o *options.ClientOptions) error {
		if role == "feed" {
			return xoptions.SetInternalClientOptions(o, "deployment", feed)
		}
		return xoptions.SetInternalClientOptions(o, "deployment", data)
	}}
	s, err := Open(context.Background(), "mongodb://127.0.0.1:27017", testDB, opts)
	if err != nil {
		tb.Fatalf("Open over scripted deployments: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// Item 8: someone else $sets a field of an order (version 1) at 10;
// changecast then replaces it as version 2 at 11 and version 3 at 12; the
// feed reads the log after all three. With updateLookup the update would
// carry the order as it is when read, version 3, and the next event
// version 2: a client would see the order go backwards. The feed reads an
// update's document at the event's own cluster time instead.
func TestFollowUpdateNeverBackwards(t *testing.T) {
	order := bson.NewObjectID()
	after := eventTok(1)
	withNote := append(orderBSON(order, store.StatusPlaced, 1), bson.E{Key: "note", Value: "ring twice"})
	update := func(full bson.D) bson.D {
		return eventDoc(eventTok(10), "update", ordersCollection, order, full,
			bson.E{Key: "updateDescription", Value: bson.D{{Key: "updatedFields", Value: bson.D{{Key: "note", Value: "ring twice"}}}, {Key: "removedFields", Value: bson.A{}}}})
	}
	var mu sync.Mutex
	var reads []string
	s := openScriptedFeed(t, func(name string, body bson.Raw) bson.D {
		if !isChangeStream(name, body) {
			return errReply(59, "CommandNotFound")
		}
		// The server: updateLookup gives the order as it is now.
		var up bson.D
		if lookupString(body, "pipeline", "0", "$changeStream", "fullDocument") == "updateLookup" {
			up = update(orderBSON(order, store.StatusDelivered, 3))
		} else {
			up = update(nil)
		}
		return cursorReply(true, 42, eventTok(12), up,
			eventDoc(eventTok(11), "replace", ordersCollection, order, orderBSON(order, store.StatusPreparing, 2)),
			eventDoc(eventTok(12), "replace", ordersCollection, order, orderBSON(order, store.StatusDelivered, 3)))
	}, func(name string, body bson.Raw) bson.D {
		if name != "find" {
			return errReply(59, "CommandNotFound")
		}
		mu.Lock()
		defer mu.Unlock()
		_, inc, ok := body.Lookup("readConcern", "atClusterTime").TimestampOK()
		reads = append(reads, fmt.Sprint(lookupString(body, "readConcern", "level"), inc))
		if ok && inc >= 10 && inc < 11 {
			return findReply(ordersCollection, withNote)
		}
		return findReply(ordersCollection, orderBSON(order, store.StatusDelivered, 3))
	})
	got, err := followUntil(t, s, after, func(bs []store.Batch) bool { return len(bs) == 2 })
	if !errors.Is(err, errTestStop) {
		t.Fatalf("Follow returned %v, want the callback's error", err)
	}
	var versions []int64
	for _, b := range got {
		for _, c := range b.Changes {
			if c.Order != nil {
				versions = append(versions, c.Order.Version)
			}
		}
	}
	if want := []int64{1, 2, 3}; !slices.Equal(versions, want) {
		t.Errorf("order versions delivered: got %v, want %v (never backwards)", versions, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reads) > 0 && !slices.Equal(reads, []string{"snapshot10"}) {
		t.Errorf("document reads: got %v, want one at the update's time (snapshot10)", reads)
	}
}
