package mongo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/drivertest"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/xoptions"

	"changecast/store"
)

// These tests script the server with the driver's mock deployment: every
// reply is a real OP_MSG in the shape mongod sends, and the commands the
// driver sent are read back through command monitoring. They test what the
// store asks for and how it reads the answers; the conformance suite runs
// the same behaviour against a real server when MONGODB_URI is set.

const testDB = "cc"

// command is one command the client sent.
type command struct {
	Name string
	DB   string
	Body bson.Raw
}

// recorder keeps the commands a client started.
type recorder struct {
	mu   sync.Mutex
	cmds []command
}

func (r *recorder) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.cmds = append(r.cmds, command{Name: e.CommandName, DB: e.DatabaseName, Body: slices.Clone(e.Command)})
	}}
}

// named returns the commands named name, in the order sent.
func (r *recorder) named(name string) []command {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []command
	for _, c := range r.cmds {
		if c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

func (r *recorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.cmds {
		out = append(out, c.Name)
	}
	return out
}

// mock is a store whose data and feed clients talk to two mock
// deployments.
type mock struct {
	store              *Store
	data, feed         *drivertest.MockDeployment
	dataCmds, feedCmds *recorder
}

// openMock opens a Store over mock deployments; the data mock first
// answers Open's ping and two createIndexes.
func openMock(tb testing.TB, opts Options) *mock {
	tb.Helper()
	mm := &mock{
		data:     drivertest.NewMockDeployment(),
		feed:     drivertest.NewMockDeployment(),
		dataCmds: &recorder{},
		feedCmds: &recorder{},
	}
	mm.data.AddResponses(
		bson.D{{Key: "ok", Value: 1.0}},
		bson.D{{Key: "createdCollectionAutomatically", Value: true}, {Key: "numIndexesBefore", Value: int32(1)}, {Key: "numIndexesAfter", Value: int32(2)}, {Key: "ok", Value: 1.0}},
		bson.D{{Key: "createdCollectionAutomatically", Value: true}, {Key: "numIndexesBefore", Value: int32(1)}, {Key: "numIndexesAfter", Value: int32(2)}, {Key: "ok", Value: 1.0}},
	)
	opts.clientOptions = func(role string, o *options.ClientOptions) error {
		md, rec := mm.data, mm.dataCmds
		if role == "feed" {
			md, rec = mm.feed, mm.feedCmds
		}
		o.SetMonitor(rec.monitor())
		return xoptions.SetInternalClientOptions(o, "deployment", md)
	}
	s, err := Open(context.Background(), "mongodb://127.0.0.1:27017", testDB, opts)
	if err != nil {
		tb.Fatalf("Open over the mock: %v", err)
	}
	mm.store = s
	tb.Cleanup(func() { _ = s.Close() })
	return mm
}

// makeToken makes a resume token's _data at cluster time (sec, inc). Event
// tokens are longer than high-water marks, as on a real server.
func makeToken(sec, inc uint32, isEvent bool) string {
	tail := "2B0229296E04"
	if isEvent {
		tail = "2B042C0100296E5A10040F5B9E4A2C7D4B1E8F3A6C5D2E1B0A9846645F69640064"
	}
	return fmt.Sprintf("82%08X%08X%s", sec, inc, tail)
}

const testSec = 0x66000000

func eventTok(inc uint32) string { return makeToken(testSec, inc, true) }
func hwmTok(inc uint32) string   { return makeToken(testSec, inc, false) }

func tokDoc(pos string) bson.D { return bson.D{{Key: "_data", Value: pos}} }

// eventDoc is a change event in the server's field order.
func eventDoc(pos, op, coll string, key bson.ObjectID, full any, extra ...bson.E) bson.D {
	var inc uint32
	fmt.Sscanf(pos[10:18], "%08X", &inc)
	d := bson.D{
		{Key: "_id", Value: tokDoc(pos)},
		{Key: "operationType", Value: op},
		{Key: "clusterTime", Value: bson.Timestamp{T: testSec, I: inc}},
		{Key: "wallTime", Value: bson.NewDateTimeFromTime(time.Unix(testSec, 0))},
	}
	if full != nil {
		d = append(d, bson.E{Key: "fullDocument", Value: full})
	}
	d = append(d,
		bson.E{Key: "ns", Value: bson.D{{Key: "db", Value: testDB}, {Key: "coll", Value: coll}}},
		bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: key}}})
	return append(d, extra...)
}

func orderBSON(id bson.ObjectID, status string, version int64) bson.D {
	t := bson.NewDateTimeFromTime(time.Unix(testSec, 0))
	return bson.D{
		{Key: "_id", Value: id},
		{Key: "customer", Value: "ann"},
		{Key: "items", Value: bson.A{bson.D{{Key: "sku", Value: "pizza"}, {Key: "qty", Value: int64(2)}}}},
		{Key: "status", Value: status},
		{Key: "version", Value: version},
		{Key: "createdAt", Value: t},
		{Key: "updatedAt", Value: t},
	}
}

func messageBSON(id bson.ObjectID, room, text string) bson.D {
	return bson.D{
		{Key: "_id", Value: id},
		{Key: "room", Value: room},
		{Key: "author", Value: "bob"},
		{Key: "text", Value: text},
		{Key: "createdAt", Value: bson.NewDateTimeFromTime(time.Unix(testSec, 0))},
	}
}

func docsArray(docs []bson.D) bson.A {
	a := bson.A{}
	for _, d := range docs {
		a = append(a, d)
	}
	return a
}

// cursorReply is an aggregate (first) or getMore (next) reply of a
// change stream cursor.
func cursorReply(first bool, id int64, pbrt string, docs ...bson.D) bson.D {
	batch := "nextBatch"
	if first {
		batch = "firstBatch"
	}
	return bson.D{
		{Key: "cursor", Value: bson.D{
			{Key: batch, Value: docsArray(docs)},
			{Key: "postBatchResumeToken", Value: tokDoc(pbrt)},
			{Key: "id", Value: id},
			{Key: "ns", Value: testDB + ".$cmd.aggregate"},
		}},
		{Key: "ok", Value: 1.0},
		{Key: "operationTime", Value: bson.Timestamp{T: testSec, I: 1}},
	}
}

// findReply is a find reply with a closed cursor.
func findReply(coll string, docs ...bson.D) bson.D {
	return bson.D{
		{Key: "cursor", Value: bson.D{
			{Key: "firstBatch", Value: docsArray(docs)},
			{Key: "id", Value: int64(0)},
			{Key: "ns", Value: testDB + "." + coll},
		}},
		{Key: "ok", Value: 1.0},
	}
}

func killReply(id int64) bson.D {
	return bson.D{{Key: "cursorsKilled", Value: bson.A{id}}, {Key: "ok", Value: 1.0}}
}

func errReply(code int32, name string, labels ...string) bson.D {
	d := bson.D{
		{Key: "ok", Value: 0.0},
		{Key: "errmsg", Value: name + " (scripted)"},
		{Key: "code", Value: code},
		{Key: "codeName", Value: name},
	}
	if len(labels) > 0 {
		a := bson.A{}
		for _, l := range labels {
			a = append(a, l)
		}
		d = append(d, bson.E{Key: "errorLabels", Value: a})
	}
	return d
}

// changeStreamStage returns the $changeStream stage of an aggregate.
func changeStreamStage(tb testing.TB, c command) bson.Raw {
	tb.Helper()
	stage, ok := c.Body.Lookup("pipeline", "0", "$changeStream").DocumentOK()
	if !ok {
		tb.Fatalf("aggregate has no $changeStream first stage: %v", c.Body)
	}
	return bson.Raw(stage)
}

func lookupString(r bson.Raw, path ...string) string {
	s, _ := r.Lookup(path...).StringValueOK()
	return s
}

var errTestStop = errors.New("test: stop following")

// followUntil runs Follow and collects its batches until stop says so.
func followUntil(tb testing.TB, s *Store, after string, stop func([]store.Batch) bool) ([]store.Batch, error) {
	tb.Helper()
	var got []store.Batch
	err := s.Follow(context.Background(), after, func(b store.Batch) error {
		got = append(got, b)
		if stop(got) {
			return errTestStop
		}
		return nil
	})
	return got, err
}

func TestOpenCreatesIndexes(t *testing.T) {
	mm := openMock(t, Options{})
	if got, want := mm.dataCmds.names(), []string{"ping", "createIndexes", "createIndexes"}; !slices.Equal(got, want) {
		t.Fatalf("commands at open: got %v, want %v", got, want)
	}
	idx := mm.dataCmds.named("createIndexes")
	tests := []struct {
		coll string
		keys []string
	}{
		{messagesCollection, []string{`{"room": {"$numberInt":"1"},"_id": {"$numberInt":"1"}}`}},
		// ListOrders: a customer's orders and the active ones, newest first.
		{ordersCollection, []string{
			`{"customer": {"$numberInt":"1"},"_id": {"$numberInt":"-1"}}`,
			`{"status": {"$numberInt":"1"},"_id": {"$numberInt":"-1"}}`,
		}},
	}
	for i, tt := range tests {
		if got := lookupString(idx[i].Body, "createIndexes"); got != tt.coll {
			t.Errorf("createIndexes %d on %q, want %q", i, got, tt.coll)
		}
		indexes, _ := idx[i].Body.Lookup("indexes").ArrayOK()
		vals, _ := indexes.Values()
		if len(vals) != len(tt.keys) {
			t.Errorf("createIndexes on %s: %d indexes, want %d: %s", tt.coll, len(vals), len(tt.keys), indexes)
		}
		for j, want := range tt.keys {
			key, _ := idx[i].Body.Lookup("indexes", strconv.Itoa(j), "key").DocumentOK()
			if got := bson.Raw(key).String(); got != want {
				t.Errorf("index %d on %s: got key %s, want %s", j, tt.coll, got, want)
			}
		}
	}
}

func TestFollowDecodesEvents(t *testing.T) {
	mm := openMock(t, Options{})
	order, msg := bson.NewObjectID(), bson.NewObjectID()
	after := hwmTok(1)
	mm.feed.AddResponses(
		cursorReply(true, 42, after),
		// The post-batch token is a high-water mark past the last event:
		// positions must still be the events' own tokens.
		cursorReply(false, 42, hwmTok(9),
			eventDoc(eventTok(2), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1)),
			eventDoc(eventTok(3), "replace", ordersCollection, order, orderBSON(order, store.StatusPreparing, 2)),
			eventDoc(eventTok(4), "insert", messagesCollection, msg, messageBSON(msg, "lobby", "hi")),
		),
		cursorReply(false, 42, eventTok(12),
			// No fullDocument: the feed reads it at the event's time.
			eventDoc(eventTok(10), "update", ordersCollection, order, nil,
				bson.E{Key: "updateDescription", Value: bson.D{
					{Key: "updatedFields", Value: bson.D{{Key: "status", Value: store.StatusCancelled}, {Key: "version", Value: int64(3)}}},
					{Key: "removedFields", Value: bson.A{}},
					{Key: "truncatedArrays", Value: bson.A{}},
				}}),
			eventDoc(eventTok(11), "delete", ordersCollection, order, nil),
			// A message delete names no room: skipped, but it still
			// moves the checkpoint.
			eventDoc(eventTok(12), "delete", messagesCollection, msg, nil),
		),
		cursorReply(false, 42, hwmTok(20)),
		killReply(42),
	)
	mm.data.AddResponses(findReply(ordersCollection, orderBSON(order, store.StatusCancelled, 3)))
	got, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool { return len(bs) == 4 })
	if !errors.Is(err, errTestStop) {
		t.Fatalf("Follow returned %v, want the callback's error", err)
	}

	type row struct{ pos, topic, op, status string }
	var rows [][]row
	var checkpoints []string
	for _, b := range got {
		var r []row
		for _, c := range b.Changes {
			st := ""
			if c.Order != nil {
				st = c.Order.Status
			}
			r = append(r, row{c.Pos, c.Topic, c.Op, st})
		}
		rows = append(rows, r)
		checkpoints = append(checkpoints, b.Checkpoint)
	}
	ot, rt := store.OrderTopic(order.Hex()), store.RoomTopic("lobby")
	want := [][]row{
		nil,
		{{eventTok(2), ot, store.OpInsert, store.StatusPlaced}, {eventTok(3), ot, store.OpReplace, store.StatusPreparing}, {eventTok(4), rt, store.OpInsert, ""}},
		{{eventTok(10), ot, store.OpUpdate, store.StatusCancelled}, {eventTok(11), ot, store.OpDelete, ""}},
		nil,
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("changes:\n got %v\nwant %v", rows, want)
	}
	if want := []string{after, eventTok(4), eventTok(12), hwmTok(20)}; !slices.Equal(checkpoints, want) {
		t.Errorf("checkpoints: got %v, want %v", checkpoints, want)
	}
	if c := got[1].Changes[2].Message; c == nil || c.ID != msg.Hex() || c.Text != "hi" || c.Author != "bob" {
		t.Errorf("message change: got %+v, want id %s text hi by bob", c, msg.Hex())
	}
	if o := got[1].Changes[0].Order; o == nil || o.ID != order.Hex() || o.Version != 1 || len(o.Items) != 1 || o.Items[0] != (store.Item{SKU: "pizza", Qty: 2}) {
		t.Errorf("inserted order: got %+v", o)
	}
	if o := got[2].Changes[1].Order; o == nil || o.ID != order.Hex() || o.Status != "" {
		t.Errorf("deleted order: got %+v, want only the id %s", o, order.Hex())
	}
	if tm := got[1].Changes[0].Time; !tm.Equal(time.Unix(testSec, 0)) {
		t.Errorf("change time: got %v, want the event's wallTime", tm)
	}

	// What was asked of the server.
	aggs := mm.feedCmds.named("aggregate")
	if len(aggs) != 1 {
		t.Fatalf("aggregates on the feed client: got %d, want 1", len(aggs))
	}
	agg := aggs[0]
	if agg.DB != testDB {
		t.Errorf("aggregate on database %q, want %q", agg.DB, testDB)
	}
	if v, ok := agg.Body.Lookup("aggregate").AsInt64OK(); !ok || v != 1 {
		t.Errorf("aggregate: got %v, want 1 (a database-level stream)", agg.Body.Lookup("aggregate"))
	}
	cs := changeStreamStage(t, agg)
	if got := lookupString(cs, "resumeAfter", "_data"); got != after {
		t.Errorf("resumeAfter: got %q, want %q", got, after)
	}
	if got := lookupString(cs, "fullDocument"); got != "" && got != "default" {
		t.Errorf("fullDocument: got %q, want no lookup", got)
	}
	match := agg.Body.Lookup("pipeline", "1", "$match").String()
	if !strings.Contains(match, `"ns.coll"`) || !strings.Contains(match, `"orders"`) || !strings.Contains(match, `"messages"`) {
		t.Errorf("$match: got %s, want ns.coll in [orders, messages]", match)
	}
	if got := len(mm.feedCmds.named("getMore")); got != 3 {
		t.Errorf("getMores: got %d, want 3", got)
	}
	if got := len(mm.feedCmds.named("killCursors")); got != 1 {
		t.Errorf("killCursors after Follow returned: got %d, want 1", got)
	}
	if got := len(mm.dataCmds.named("aggregate")); got != 0 {
		t.Errorf("Follow used the data client for %d aggregates, want its own client", got)
	}
}

func TestStreamErrors(t *testing.T) {
	after := eventTok(5)
	tests := []struct {
		name  string
		reply bson.D
		want  error
	}{
		{"history lost", errReply(286, "ChangeStreamHistoryLost"), store.ErrHistoryLost},
		{"token not found", errReply(280, "ChangeStreamFatalError"), store.ErrHistoryLost},
		// The oplog scan's position was deleted under it (the capped
		// oplog rolled over), as mongod words it (collection_scan.cpp).
		{"capped position lost", serverErr(136, "CappedPositionLost", "CollectionScan died due to position in capped collection being deleted. Last seen record id: RecordId(7306240851637665793)"), store.ErrHistoryLost},
		{"invalid token", errReply(260, "InvalidResumeToken"), store.ErrInvalidPosition},
		{"undecodable token", errReply(9, "FailedToParse"), store.ErrInvalidPosition},
	}
	for _, tt := range tests {
		t.Run("Follow "+tt.name, func(t *testing.T) {
			mm := openMock(t, Options{})
			mm.feed.AddResponses(tt.reply)
			called := false
			err := mm.store.Follow(context.Background(), after, func(store.Batch) error { called = true; return nil })
			if !errors.Is(err, tt.want) {
				t.Fatalf("Follow: got %v, want %v", err, tt.want)
			}
			if called {
				t.Errorf("Follow called fn although the stream never opened")
			}
			if got := len(mm.feedCmds.named("aggregate")); got != 1 {
				t.Errorf("aggregates: got %d, want 1 (never retry a rejected token)", got)
			}
		})
		t.Run("CatchUp "+tt.name, func(t *testing.T) {
			mm := openMock(t, Options{})
			mm.data.AddResponses(tt.reply)
			err := mm.store.CatchUp(context.Background(), []string{store.RoomTopic("lobby")}, after, eventTok(9), func(store.Change) error { return nil })
			if !errors.Is(err, tt.want) {
				t.Fatalf("CatchUp: got %v, want %v", err, tt.want)
			}
		})
	}

	t.Run("history lost while following", func(t *testing.T) {
		mm := openMock(t, Options{})
		mm.feed.AddResponses(
			cursorReply(true, 42, after),
			errReply(286, "ChangeStreamHistoryLost"),
			killReply(42),
		)
		_, err := followUntil(t, mm.store, after, func([]store.Batch) bool { return false })
		if !errors.Is(err, store.ErrHistoryLost) {
			t.Fatalf("Follow: got %v, want ErrHistoryLost", err)
		}
	})
}

func TestFollowInvalidate(t *testing.T) {
	mm := openMock(t, Options{})
	order := bson.NewObjectID()
	after := eventTok(1)
	inval := eventTok(3)
	mm.feed.AddResponses(
		cursorReply(true, 42, after),
		// The server closes the cursor (id 0) with the invalidate event.
		cursorReply(false, 0, inval,
			eventDoc(eventTok(2), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1)),
			bson.D{
				{Key: "_id", Value: tokDoc(inval)},
				{Key: "operationType", Value: "invalidate"},
				{Key: "clusterTime", Value: bson.Timestamp{T: testSec, I: 3}},
			}),
		cursorReply(true, 43, eventTok(4),
			eventDoc(eventTok(4), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1))),
		killReply(43),
	)
	got, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool { return len(bs) == 3 })
	if !errors.Is(err, errTestStop) {
		t.Fatalf("Follow returned %v, want the callback's error", err)
	}
	var pos []string
	for _, b := range got {
		for _, c := range b.Changes {
			pos = append(pos, c.Pos)
		}
	}
	if want := []string{eventTok(2), eventTok(4)}; !slices.Equal(pos, want) {
		t.Errorf("positions across the invalidate: got %v, want %v", pos, want)
	}
	for _, b := range got {
		if b.Checkpoint == inval {
			t.Errorf("checkpoint %s is the invalidate token, which resumeAfter refuses", inval)
		}
	}
	aggs := mm.feedCmds.named("aggregate")
	if len(aggs) != 2 {
		t.Fatalf("aggregates: got %d, want 2", len(aggs))
	}
	cs := changeStreamStage(t, aggs[1])
	if got := lookupString(cs, "startAfter", "_data"); got != inval {
		t.Errorf("second aggregate startAfter: got %q, want the invalidate token %q", got, inval)
	}
	if _, err := cs.LookupErr("resumeAfter"); err == nil {
		t.Errorf("second aggregate also has resumeAfter: %v", cs)
	}
	checkFeedStages(t, "second aggregate fullDocument", aggs[1])
}

func TestFollowResumableError(t *testing.T) {
	order := bson.NewObjectID()
	after := eventTok(1)
	t.Run("the driver resumes after the last event", func(t *testing.T) {
		mm := openMock(t, Options{})
		mm.feed.AddResponses(
			cursorReply(true, 42, after),
			cursorReply(false, 42, eventTok(2),
				eventDoc(eventTok(2), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1))),
			errReply(6, "HostUnreachable", "ResumableChangeStreamError"),
			killReply(42),
			cursorReply(true, 43, eventTok(3),
				eventDoc(eventTok(3), "replace", ordersCollection, order, orderBSON(order, store.StatusPreparing, 2))),
			killReply(43),
		)
		got, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool { return len(bs) == 3 })
		if !errors.Is(err, errTestStop) {
			t.Fatalf("Follow returned %v, want the callback's error", err)
		}
		var pos []string
		for _, b := range got {
			for _, c := range b.Changes {
				pos = append(pos, c.Pos)
			}
		}
		if want := []string{eventTok(2), eventTok(3)}; !slices.Equal(pos, want) {
			t.Errorf("positions: got %v, want %v", pos, want)
		}
		aggs := mm.feedCmds.named("aggregate")
		if len(aggs) != 2 {
			t.Fatalf("aggregates: got %d, want 2 (open, resume)", len(aggs))
		}
		cs := changeStreamStage(t, aggs[1])
		if got := lookupString(cs, "resumeAfter", "_data"); got != eventTok(2) {
			t.Errorf("resume aggregate resumeAfter: got %q, want the last event's token %q", got, eventTok(2))
		}
		checkFeedStages(t, "resume aggregate fullDocument", aggs[1])
		if got := aggs[1].Body.Lookup("pipeline", "1", "$match").String(); !strings.Contains(got, `"ns.coll"`) {
			t.Errorf("resume aggregate lost the $match: %s", got)
		}
	})
	t.Run("a failed resume is returned", func(t *testing.T) {
		mm := openMock(t, Options{})
		mm.feed.AddResponses(
			cursorReply(true, 42, after),
			errReply(6, "HostUnreachable", "ResumableChangeStreamError"),
			killReply(42),
			errReply(6, "HostUnreachable", "ResumableChangeStreamError", "RetryableError"),
			errReply(6, "HostUnreachable", "ResumableChangeStreamError", "RetryableError"),
		)
		_, err := followUntil(t, mm.store, after, func([]store.Batch) bool { return false })
		if err == nil || errors.Is(err, store.ErrHistoryLost) || errors.Is(err, store.ErrInvalidPosition) || errors.Is(err, errTestStop) {
			t.Fatalf("Follow: got %v, want the driver's error (retry from the checkpoint)", err)
		}
		if !serverCode(err, 6) {
			t.Errorf("Follow: got %v, want it to wrap the server's HostUnreachable", err)
		}
		if got := len(mm.feedCmds.named("aggregate")); got < 2 || got > 3 {
			t.Errorf("aggregates: got %d, want the open and the driver's one resume (retried at most once)", got)
		}
	})
}

func TestCloseStopsFollow(t *testing.T) {
	mm := openMock(t, Options{})
	after := eventTok(1)
	mm.feed.AddResponses(cursorReply(true, 42, after))
	for range 50 {
		mm.feed.AddResponses(cursorReply(false, 42, after))
	}
	closed := make(chan error, 1)
	err := mm.store.Follow(context.Background(), after, func(store.Batch) error {
		go func() { closed <- mm.store.Close() }()
		<-mm.store.done.Done() // Close has begun
		return nil
	})
	if !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Follow after Close: got %v, want ErrClosed", err)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	if _, err := mm.store.Head(context.Background()); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Head after Close: got %v, want ErrClosed", err)
	}
	if err := mm.store.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close: got %v, want ErrClosed", err)
	}
}

func TestCatchUp(t *testing.T) {
	order, other, msg := bson.NewObjectID(), bson.NewObjectID(), bson.NewObjectID()
	after, until := eventTok(2), eventTok(8)
	topics := []string{store.OrderTopic(order.Hex()), store.RoomTopic("lobby")}

	t.Run("changes up to until", func(t *testing.T) {
		mm := openMock(t, Options{})
		mm.data.AddResponses(
			cursorReply(true, 50, eventTok(3),
				// Were the server to return the resume token's own
				// event, it must not be delivered again.
				eventDoc(after, "replace", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1)),
				eventDoc(eventTok(3), "replace", ordersCollection, order, orderBSON(order, store.StatusPreparing, 2))),
			cursorReply(false, 50, hwmTok(6)), // quiet, not yet at until
			cursorReply(false, 50, eventTok(9),
				eventDoc(eventTok(6), "insert", messagesCollection, msg, messageBSON(msg, "lobby", "hello")),
				// until's own event, on a topic not asked for: ends the catch-up unseen
				eventDoc(until, "insert", ordersCollection, other, orderBSON(other, store.StatusPlaced, 1)),
				eventDoc(eventTok(9), "replace", ordersCollection, order, orderBSON(order, store.StatusCancelled, 3)),
			),
			killReply(50),
		)
		var got []string
		err := mm.store.CatchUp(context.Background(), topics, after, until, func(c store.Change) error {
			got = append(got, c.Pos+" "+c.Topic)
			return nil
		})
		if err != nil {
			t.Fatalf("CatchUp: %v", err)
		}
		want := []string{eventTok(3) + " " + topics[0], eventTok(6) + " " + topics[1]}
		if !slices.Equal(got, want) {
			t.Errorf("changes: got %v, want %v", got, want)
		}
		aggs := mm.dataCmds.named("aggregate")
		if len(aggs) != 1 {
			t.Fatalf("aggregates: got %d, want 1", len(aggs))
		}
		cs := changeStreamStage(t, aggs[0])
		if got := lookupString(cs, "resumeAfter", "_data"); got != after {
			t.Errorf("resumeAfter: got %q, want %q", got, after)
		}
		match := aggs[0].Body.Lookup("pipeline", "1", "$match").String()
		for _, w := range []string{`"clusterTime"`, `{"t":1711276032,"i":2}`, `{"t":1711276032,"i":8}`, `"documentKey._id"`, order.Hex(), `"fullDocument.room"`, `"lobby"`} {
			if !strings.Contains(match, w) {
				t.Errorf("$match %s lacks %s", match, w)
			}
		}
		gm := mm.dataCmds.named("getMore")
		if len(gm) != 2 {
			t.Fatalf("getMores: got %d, want 2", len(gm))
		}
		if v, _ := gm[0].Body.Lookup("maxTimeMS").AsInt64OK(); v != catchUpAwait.Milliseconds() {
			t.Errorf("getMore maxTimeMS: got %d, want %d", v, catchUpAwait.Milliseconds())
		}
		if got := len(mm.dataCmds.named("killCursors")); got != 1 {
			t.Errorf("killCursors: got %d, want 1", got)
		}
	})

	t.Run("a quiet topic finishes at the post-batch token", func(t *testing.T) {
		mm := openMock(t, Options{})
		mm.data.AddResponses(
			cursorReply(true, 51, after),
			cursorReply(false, 51, hwmTok(9)),
			killReply(51),
		)
		called := false
		err := mm.store.CatchUp(context.Background(), topics, after, until, func(store.Change) error { called = true; return nil })
		if err != nil {
			t.Fatalf("CatchUp: %v", err)
		}
		if called {
			t.Error("fn called for a topic without changes")
		}
	})

	t.Run("nothing to do", func(t *testing.T) {
		mm := openMock(t, Options{})
		for _, tt := range []struct{ after, until string }{{until, after}, {after, after}} {
			if err := mm.store.CatchUp(context.Background(), topics, tt.after, tt.until, func(store.Change) error { return nil }); err != nil {
				t.Errorf("CatchUp(%s, %s): %v", tt.after, tt.until, err)
			}
		}
		if got := len(mm.dataCmds.named("aggregate")); got != 0 {
			t.Errorf("aggregates: got %d, want 0", got)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		mm := openMock(t, Options{})
		for _, tt := range []struct {
			topics       []string
			after, until string
			want         error
		}{
			{topics, "garbage", until, store.ErrInvalidPosition},
			{topics, after, "", store.ErrInvalidPosition},
			{[]string{"orders/nope"}, after, until, store.ErrInvalid},
		} {
			err := mm.store.CatchUp(context.Background(), tt.topics, tt.after, tt.until, func(store.Change) error { return nil })
			if !errors.Is(err, tt.want) {
				t.Errorf("CatchUp(%v, %q, %q): got %v, want %v", tt.topics, tt.after, tt.until, err, tt.want)
			}
		}
	})

	t.Run("the cap on concurrent catch-ups", func(t *testing.T) {
		mm := openMock(t, Options{CatchUps: 1})
		mm.store.catchUps <- struct{}{} // one catch-up running
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := mm.store.CatchUp(ctx, topics, after, until, func(store.Change) error { return nil })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("CatchUp over the cap: got %v, want it to wait until ctx ends", err)
		}
		if got := len(mm.dataCmds.named("aggregate")); got != 0 {
			t.Errorf("aggregates over the cap: got %d, want 0", got)
		}
		<-mm.store.catchUps
	})
}

func TestSnapshot(t *testing.T) {
	mm := openMock(t, Options{})
	order, missing := bson.NewObjectID(), bson.NewObjectID()
	m1, m2 := bson.NewObjectID(), bson.NewObjectID()
	head := makeToken(testSec, 7, false)
	mm.data.AddResponses(
		// A fresh stream: last applied + 1; one started at the last
		// applied time: the position.
		cursorReply(true, 60, hwmTok(8)),
		killReply(60),
		cursorReply(true, 61, head),
		killReply(61),
		findReply(ordersCollection, orderBSON(order, store.StatusPreparing, 2)),
		findReply(messagesCollection, messageBSON(m2, "lobby", "second"), messageBSON(m1, "lobby", "first")),
	)
	topics := []string{store.OrderTopic(order.Hex()), store.RoomTopic("lobby"), store.OrderTopic(missing.Hex())}
	snaps, pos, err := mm.store.Snapshot(context.Background(), topics)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if pos != head {
		t.Errorf("position: got %q, want the post-batch token %q of the stream started at the last applied time", pos, head)
	}
	if len(snaps) != 3 {
		t.Fatalf("snapshots: got %d, want 3", len(snaps))
	}
	for i, s := range snaps {
		if s.Topic != topics[i] {
			t.Errorf("snapshot %d topic: got %q, want %q", i, s.Topic, topics[i])
		}
	}
	if o := snaps[0].Order; o == nil || o.ID != order.Hex() || o.Version != 2 {
		t.Errorf("order snapshot: got %+v, want version 2 of %s", o, order.Hex())
	}
	var texts []string
	for _, m := range snaps[1].Messages {
		texts = append(texts, m.Text)
	}
	if want := []string{"first", "second"}; !slices.Equal(texts, want) {
		t.Errorf("room snapshot: got %v, want %v (oldest first)", texts, want)
	}
	if snaps[2].Order != nil {
		t.Errorf("missing order snapshot: got %+v, want nil", snaps[2].Order)
	}

	aggs := mm.dataCmds.named("aggregate")
	if len(aggs) != 2 {
		t.Fatalf("aggregates: got %d, want 2", len(aggs))
	}
	for _, a := range aggs {
		if v, ok := a.Body.Lookup("cursor", "batchSize").AsInt64OK(); !ok || v != 0 {
			t.Errorf("position stream cursor.batchSize: got %v, want 0 (so its token is a high-water mark)", a.Body.Lookup("cursor"))
		}
	}
	cs := changeStreamStage(t, aggs[0])
	for _, k := range []string{"resumeAfter", "startAfter", "startAtOperationTime"} {
		if _, err := cs.LookupErr(k); err == nil {
			t.Errorf("first position stream has %s; want it to start now", k)
		}
	}
	if ts, inc, ok := changeStreamStage(t, aggs[1]).Lookup("startAtOperationTime").TimestampOK(); !ok || ts != testSec || inc != 7 {
		t.Errorf("second position stream startAtOperationTime: got %v, want Timestamp(%d, 7), the fresh token's time - 1", changeStreamStage(t, aggs[1]), uint32(testSec))
	}
	// Both reads at the cluster time just before the position's.
	finds := mm.dataCmds.named("find")
	if len(finds) != 2 {
		t.Fatalf("finds: got %d, want 2", len(finds))
	}
	for _, f := range finds {
		rc := f.Body.Lookup("readConcern")
		if lvl, _ := rc.Document().Lookup("level").StringValueOK(); lvl != "snapshot" {
			t.Errorf("find %s readConcern level: got %v, want snapshot", lookupString(f.Body, "find"), rc)
		}
		ts, inc, ok := rc.Document().Lookup("atClusterTime").TimestampOK()
		if !ok || ts != testSec || inc != 6 {
			t.Errorf("find %s atClusterTime: got %v, want Timestamp(%d, 6)", lookupString(f.Body, "find"), rc, uint32(testSec))
		}
	}
	if got := lookupString(finds[1].Body, "filter", "room"); got != "lobby" {
		t.Errorf("messages find filter room: got %q, want lobby", got)
	}
	if v, _ := finds[1].Body.Lookup("limit").AsInt64OK(); v != store.SnapshotMessages {
		t.Errorf("messages find limit: got %d, want %d", v, store.SnapshotMessages)
	}
}

func TestSnapshotRetriesTooOld(t *testing.T) {
	mm := openMock(t, Options{})
	order := bson.NewObjectID()
	mm.data.AddResponses(
		cursorReply(true, 60, hwmTok(8)),
		killReply(60),
		cursorReply(true, 61, hwmTok(7)),
		killReply(61),
		errReply(239, "SnapshotTooOld"),
		cursorReply(true, 62, hwmTok(10)),
		killReply(62),
		cursorReply(true, 63, hwmTok(9)),
		killReply(63),
		findReply(ordersCollection, orderBSON(order, store.StatusPlaced, 1)),
	)
	_, pos, err := mm.store.Snapshot(context.Background(), []string{store.OrderTopic(order.Hex())})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if pos != hwmTok(9) {
		t.Errorf("position: got %q, want the second stream's %q", pos, hwmTok(9))
	}
	if got := len(mm.dataCmds.named("aggregate")); got != 4 {
		t.Errorf("aggregates: got %d, want 4 (a new position for the new read)", got)
	}
}

// Head without a running feed: the server's high-water mark at the last
// applied time (4), not a fresh stream's at last applied + 1 (5), which a
// running feed passes only after the next oplog entry.
func TestHead(t *testing.T) {
	mm := openMock(t, Options{})
	mm.data.AddResponses(cursorReply(true, 70, hwmTok(5)), killReply(70), cursorReply(true, 71, hwmTok(4)), killReply(71))
	pos, err := mm.store.Head(context.Background())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if pos != hwmTok(4) {
		t.Errorf("Head: got %q, want %q", pos, hwmTok(4))
	}
	if err := mm.store.CheckPosition(pos); err != nil {
		t.Errorf("CheckPosition(Head()): %v", err)
	}
}

func TestCheckPosition(t *testing.T) {
	s := &Store{}
	tests := []struct {
		pos  string
		want error
	}{
		{eventTok(1), nil},
		{hwmTok(1), nil},
		{"8266000000000000012B0229296E04", nil},
		{"", store.ErrInvalidPosition},
		{"82", store.ErrInvalidPosition},
		{"826600000000000001", nil}, // a bare timestamp
		{"82660000000000000", store.ErrInvalidPosition},
		{strings.ToLower(eventTok(1)), store.ErrInvalidPosition},
		{"0A" + eventTok(1)[2:], store.ErrInvalidPosition},
		{eventTok(1) + "0", store.ErrInvalidPosition},
		{eventTok(1) + "ZZ", store.ErrInvalidPosition},
		{"82" + strings.Repeat("AB", 255), nil},
		{"82" + strings.Repeat("AB", 256), store.ErrInvalidPosition},
		{"00000001", store.ErrInvalidPosition}, // an embedded-store position
	}
	for _, tt := range tests {
		if err := s.CheckPosition(tt.pos); !errors.Is(err, tt.want) {
			t.Errorf("CheckPosition(%.30q): got %v, want %v", tt.pos, err, tt.want)
		}
	}
}

func TestPositionTime(t *testing.T) {
	ts, err := positionTime(makeToken(0x66AABBCC, 0x0102, true))
	if err != nil || ts.T != 0x66AABBCC || ts.I != 0x0102 {
		t.Errorf("positionTime: got %v, %v, want Timestamp(0x66AABBCC, 0x102)", ts, err)
	}
	tests := []struct{ in, want bson.Timestamp }{
		{bson.Timestamp{T: 10, I: 5}, bson.Timestamp{T: 10, I: 4}},
		{bson.Timestamp{T: 10, I: 0}, bson.Timestamp{T: 9, I: ^uint32(0)}},
	}
	for _, tt := range tests {
		if got := timestampBefore(tt.in); got != tt.want {
			t.Errorf("timestampBefore(%v): got %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestDecodeSkips(t *testing.T) {
	id := bson.NewObjectID()
	tests := []struct {
		name string
		ev   bson.D
	}{
		{"update whose document is gone", eventDoc(eventTok(1), "update", ordersCollection, id, nil)},
		{"message delete", eventDoc(eventTok(1), "delete", messagesCollection, id, nil)},
		{"drop", eventDoc(eventTok(1), "drop", ordersCollection, id, nil)},
		{"message in a bad room", eventDoc(eventTok(1), "insert", messagesCollection, id, messageBSON(id, "Bad Room", "x"))},
		{"order with a string _id", bson.D{
			{Key: "_id", Value: tokDoc(eventTok(1))}, {Key: "operationType", Value: "delete"},
			{Key: "ns", Value: bson.D{{Key: "coll", Value: ordersCollection}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: "abc"}}},
		}},
	}
	for _, tt := range tests {
		raw, err := bson.Marshal(tt.ev)
		if err != nil {
			t.Fatal(err)
		}
		pos, _, _, ok, err := decode(raw)
		if err != nil || ok || pos != eventTok(1) {
			t.Errorf("%s: got pos %q ok %v err %v, want skipped at its position", tt.name, pos, ok, err)
		}
	}
	raw, _ := bson.Marshal(bson.D{{Key: "operationType", Value: "insert"}})
	if _, _, _, _, err := decode(raw); err == nil {
		t.Error("an event without a resume token decoded without error")
	}
}

func TestUpdateOrderStatus(t *testing.T) {
	id := bson.NewObjectID()
	updated := bson.D{{Key: "n", Value: int32(1)}, {Key: "nModified", Value: int32(1)}, {Key: "ok", Value: 1.0}}
	raced := bson.D{{Key: "n", Value: int32(0)}, {Key: "nModified", Value: int32(0)}, {Key: "ok", Value: 1.0}}

	t.Run("check-and-set retries a race", func(t *testing.T) {
		mm := openMock(t, Options{})
		mm.data.AddResponses(
			findReply(ordersCollection, orderBSON(id, store.StatusPlaced, 1)),
			raced,
			findReply(ordersCollection, orderBSON(id, store.StatusPreparing, 2)),
			updated,
		)
		o, err := mm.store.UpdateOrderStatus(context.Background(), id.Hex(), store.StatusCancelled, 0)
		if err != nil {
			t.Fatalf("UpdateOrderStatus: %v", err)
		}
		if o.Status != store.StatusCancelled || o.Version != 3 || o.ID != id.Hex() {
			t.Errorf("got %+v, want cancelled version 3", o)
		}
		ups := mm.dataCmds.named("update")
		if len(ups) != 2 {
			t.Fatalf("updates: got %d, want 2", len(ups))
		}
		for i, wantV := range []int64{1, 2} {
			u, _ := ups[i].Body.Lookup("updates", "0").DocumentOK()
			q := bson.Raw(u).Lookup("q")
			if v, _ := q.Document().Lookup("version").AsInt64OK(); v != wantV {
				t.Errorf("update %d filter: got %v, want version %d", i, q, wantV)
			}
			if oid, _ := q.Document().Lookup("_id").ObjectIDOK(); oid != id {
				t.Errorf("update %d filter: got %v, want _id %s", i, q, id.Hex())
			}
			repl := bson.Raw(u).Lookup("u").Document()
			elems, _ := repl.Elements()
			for _, e := range elems {
				if strings.HasPrefix(e.Key(), "$") {
					t.Errorf("update %d: got operator %s, want a whole replacement document", i, e.Key())
				}
			}
			if v, _ := repl.Lookup("version").AsInt64OK(); v != wantV+1 {
				t.Errorf("update %d: got version %v, want %d", i, repl.Lookup("version"), wantV+1)
			}
			if s, _ := repl.Lookup("status").StringValueOK(); s != store.StatusCancelled {
				t.Errorf("update %d: got status %q, want cancelled", i, s)
			}
		}
	})

	tests := []struct {
		name      string
		reply     bson.D
		id        string
		status    string
		ifVersion int64
		want      error
	}{
		{"version mismatch", findReply(ordersCollection, orderBSON(id, store.StatusPlaced, 2)), id.Hex(), store.StatusPreparing, 1, store.ErrVersionMismatch},
		{"version checked before transition", findReply(ordersCollection, orderBSON(id, store.StatusDelivered, 4)), id.Hex(), store.StatusPlaced, 3, store.ErrVersionMismatch},
		{"not allowed", findReply(ordersCollection, orderBSON(id, store.StatusDelivered, 4)), id.Hex(), store.StatusPlaced, 0, store.ErrConflict},
		{"unknown status", findReply(ordersCollection, orderBSON(id, store.StatusPlaced, 1)), id.Hex(), "eaten", 0, store.ErrInvalid},
		{"not found", findReply(ordersCollection), id.Hex(), store.StatusPreparing, 0, store.ErrNotFound},
		{"malformed id", nil, "xyz", store.StatusPreparing, 0, store.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mm := openMock(t, Options{})
			if tt.reply != nil {
				mm.data.AddResponses(tt.reply)
			}
			_, err := mm.store.UpdateOrderStatus(context.Background(), tt.id, tt.status, tt.ifVersion)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if got := len(mm.dataCmds.named("update")); got != 0 {
				t.Errorf("updates sent: got %d, want 0", got)
			}
		})
	}
}

func TestWritesAndReads(t *testing.T) {
	mm := openMock(t, Options{})
	inserted := bson.D{{Key: "n", Value: int32(1)}, {Key: "ok", Value: 1.0}}
	m1, m2 := bson.NewObjectID(), bson.NewObjectID()
	mm.data.AddResponses(
		inserted,
		inserted,
		findReply(messagesCollection, messageBSON(m2, "lobby", "b"), messageBSON(m1, "lobby", "a")),
	)
	o, err := mm.store.CreateOrder(context.Background(), "ann", []store.Item{{SKU: "pizza", Qty: 2}})
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	if !store.ValidOrderID(o.ID) || o.Status != store.StatusPlaced || o.Version != 1 || !o.CreatedAt.Equal(o.UpdatedAt) {
		t.Errorf("CreateOrder: got %+v", o)
	}
	if o.CreatedAt.Nanosecond()%int(time.Millisecond) != 0 {
		t.Errorf("CreatedAt %v has sub-millisecond digits BSON cannot keep", o.CreatedAt)
	}
	msg, err := mm.store.PostMessage(context.Background(), "lobby", "bob", "hi")
	if err != nil || !store.ValidOrderID(msg.ID) {
		t.Fatalf("PostMessage: got %+v, %v", msg, err)
	}
	ins := mm.dataCmds.named("insert")
	if len(ins) != 2 {
		t.Fatalf("inserts: got %d, want 2", len(ins))
	}
	if oid, _ := ins[0].Body.Lookup("documents", "0", "_id").ObjectIDOK(); oid.Hex() != o.ID {
		t.Errorf("order _id sent: got %s, want the returned id %s", oid.Hex(), o.ID)
	}

	list, err := mm.store.ListMessages(context.Background(), "lobby", bson.NewObjectID().Hex(), 2)
	if err != nil {
		t.Fatalf("ListMessages: %v", err)
	}
	if len(list) != 2 || list[0].Text != "a" || list[1].Text != "b" {
		t.Errorf("ListMessages: got %+v, want a then b", list)
	}
	f := mm.dataCmds.named("find")[0].Body
	if _, ok := f.Lookup("filter", "_id", "$lt").ObjectIDOK(); !ok {
		t.Errorf("ListMessages filter: got %v, want _id $lt before", f.Lookup("filter"))
	}
	if v, _ := f.Lookup("sort", "_id").AsInt64OK(); v != -1 {
		t.Errorf("ListMessages sort: got %v, want _id -1", f.Lookup("sort"))
	}

	for _, tt := range []struct {
		room, before string
		limit        int
	}{
		{"lobby", "", 0},
		{"lobby", "", store.MaxListLimit + 1},
		{"lobby", "nothex", 10},
		{"Bad Room", "", 10},
	} {
		if _, err := mm.store.ListMessages(context.Background(), tt.room, tt.before, tt.limit); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ListMessages(%q, %q, %d): got %v, want ErrInvalid", tt.room, tt.before, tt.limit, err)
		}
	}
	if _, err := mm.store.CreateOrder(context.Background(), "", nil); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("CreateOrder with no customer: got %v, want ErrInvalid", err)
	}
	if _, err := mm.store.GetOrder(context.Background(), "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetOrder(nope): got %v, want ErrNotFound", err)
	}
	if got := len(mm.dataCmds.named("find")); got != 1 {
		t.Errorf("finds: got %d, want 1 (bad input never reaches the server)", got)
	}
}
