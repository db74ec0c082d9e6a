package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/drivertest"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/xoptions"
)

// These tests script the server with the driver's mock deployment: every
// reply is a real OP_MSG in the shape mongod sends, and the commands the
// driver sent are read back through command monitoring. They test what the
// store asks for and how it reads the answers; the conformance suite runs
// the same behaviour against a real server when MONGODB_URI is set.

const mongoTestDB = "cc"

// mongoCommand is one command the client sent.
type mongoCommand struct {
	Name string
	DB   string
	Body bson.Raw
}

// mongoRecorder keeps the commands a client started.
type mongoRecorder struct {
	mu   sync.Mutex
	cmds []mongoCommand
}

func (r *mongoRecorder) monitor() *event.CommandMonitor {
	return &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.cmds = append(r.cmds, mongoCommand{Name: e.CommandName, DB: e.DatabaseName, Body: slices.Clone(e.Command)})
	}}
}

// named returns the commands named name, in the order sent.
func (r *mongoRecorder) named(name string) []mongoCommand {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []mongoCommand
	for _, c := range r.cmds {
		if c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

func (r *mongoRecorder) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, c := range r.cmds {
		out = append(out, c.Name)
	}
	return out
}

// mongoMock is a store whose data and feed clients talk to two mock
// deployments.
type mongoMock struct {
	store              *Mongo
	data, feed         *drivertest.MockDeployment
	dataCmds, feedCmds *mongoRecorder
}

// mongoOpenMock opens a Mongo over mock deployments; the data mock first
// answers OpenMongo's ping and two createIndexes.
func mongoOpenMock(tb testing.TB, opts MongoOptions) *mongoMock {
	tb.Helper()
	mm := &mongoMock{
		data:     drivertest.NewMockDeployment(),
		feed:     drivertest.NewMockDeployment(),
		dataCmds: &mongoRecorder{},
		feedCmds: &mongoRecorder{},
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
	s, err := OpenMongo(context.Background(), "mongodb://127.0.0.1:27017", mongoTestDB, opts)
	if err != nil {
		tb.Fatalf("OpenMongo over the mock: %v", err)
	}
	mm.store = s
	tb.Cleanup(func() { _ = s.Close() })
	return mm
}

// mongoTok makes a resume token's _data at cluster time (sec, inc). Event
// tokens are longer than high-water marks, as on a real server.
func mongoTok(sec, inc uint32, isEvent bool) string {
	tail := "2B0229296E04"
	if isEvent {
		tail = "2B042C0100296E5A10040F5B9E4A2C7D4B1E8F3A6C5D2E1B0A9846645F69640064"
	}
	return fmt.Sprintf("82%08X%08X%s", sec, inc, tail)
}

const mongoTestSec = 0x66000000

func mongoEv(inc uint32) string  { return mongoTok(mongoTestSec, inc, true) }
func mongoHWM(inc uint32) string { return mongoTok(mongoTestSec, inc, false) }

func mongoTokDoc(pos string) bson.D { return bson.D{{Key: "_data", Value: pos}} }

// mongoEventDoc is a change event in the server's field order.
func mongoEventDoc(pos, op, coll string, key bson.ObjectID, full any, extra ...bson.E) bson.D {
	var inc uint32
	fmt.Sscanf(pos[10:18], "%08X", &inc)
	d := bson.D{
		{Key: "_id", Value: mongoTokDoc(pos)},
		{Key: "operationType", Value: op},
		{Key: "clusterTime", Value: bson.Timestamp{T: mongoTestSec, I: inc}},
		{Key: "wallTime", Value: bson.NewDateTimeFromTime(time.Unix(mongoTestSec, 0))},
	}
	if full != nil {
		d = append(d, bson.E{Key: "fullDocument", Value: full})
	}
	d = append(d,
		bson.E{Key: "ns", Value: bson.D{{Key: "db", Value: mongoTestDB}, {Key: "coll", Value: coll}}},
		bson.E{Key: "documentKey", Value: bson.D{{Key: "_id", Value: key}}})
	return append(d, extra...)
}

func mongoOrderBSON(id bson.ObjectID, status string, version int64) bson.D {
	t := bson.NewDateTimeFromTime(time.Unix(mongoTestSec, 0))
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

func mongoMessageBSON(id bson.ObjectID, room, text string) bson.D {
	return bson.D{
		{Key: "_id", Value: id},
		{Key: "room", Value: room},
		{Key: "author", Value: "bob"},
		{Key: "text", Value: text},
		{Key: "createdAt", Value: bson.NewDateTimeFromTime(time.Unix(mongoTestSec, 0))},
	}
}

func mongoDocs(docs []bson.D) bson.A {
	a := bson.A{}
	for _, d := range docs {
		a = append(a, d)
	}
	return a
}

// mongoCursorReply is an aggregate (first) or getMore (next) reply of a
// change stream cursor.
func mongoCursorReply(first bool, id int64, pbrt string, docs ...bson.D) bson.D {
	batch := "nextBatch"
	if first {
		batch = "firstBatch"
	}
	return bson.D{
		{Key: "cursor", Value: bson.D{
			{Key: batch, Value: mongoDocs(docs)},
			{Key: "postBatchResumeToken", Value: mongoTokDoc(pbrt)},
			{Key: "id", Value: id},
			{Key: "ns", Value: mongoTestDB + ".$cmd.aggregate"},
		}},
		{Key: "ok", Value: 1.0},
		{Key: "operationTime", Value: bson.Timestamp{T: mongoTestSec, I: 1}},
	}
}

// mongoFindReply is a find reply with a closed cursor.
func mongoFindReply(coll string, docs ...bson.D) bson.D {
	return bson.D{
		{Key: "cursor", Value: bson.D{
			{Key: "firstBatch", Value: mongoDocs(docs)},
			{Key: "id", Value: int64(0)},
			{Key: "ns", Value: mongoTestDB + "." + coll},
		}},
		{Key: "ok", Value: 1.0},
	}
}

func mongoKillReply(id int64) bson.D {
	return bson.D{{Key: "cursorsKilled", Value: bson.A{id}}, {Key: "ok", Value: 1.0}}
}

func mongoErrReply(code int32, name string, labels ...string) bson.D {
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

// mongoChangeStreamStage returns the $changeStream stage of an aggregate.
func mongoChangeStreamStage(tb testing.TB, c mongoCommand) bson.Raw {
	tb.Helper()
	stage, ok := c.Body.Lookup("pipeline", "0", "$changeStream").DocumentOK()
	if !ok {
		tb.Fatalf("aggregate has no $changeStream first stage: %v", c.Body)
	}
	return bson.Raw(stage)
}

func mongoString(r bson.Raw, path ...string) string {
	s, _ := r.Lookup(path...).StringValueOK()
	return s
}

var errMongoTestStop = errors.New("test: stop following")

// mongoFollowUntil runs Follow and collects its batches until stop says so.
func mongoFollowUntil(tb testing.TB, s *Mongo, after string, stop func([]Batch) bool) ([]Batch, error) {
	tb.Helper()
	var got []Batch
	err := s.Follow(context.Background(), after, func(b Batch) error {
		got = append(got, b)
		if stop(got) {
			return errMongoTestStop
		}
		return nil
	})
	return got, err
}

func TestMongoOpenCreatesIndexes(t *testing.T) {
	mm := mongoOpenMock(t, MongoOptions{})
	if got, want := mm.dataCmds.names(), []string{"ping", "createIndexes", "createIndexes"}; !slices.Equal(got, want) {
		t.Fatalf("commands at open: got %v, want %v", got, want)
	}
	idx := mm.dataCmds.named("createIndexes")
	tests := []struct {
		coll, key string
	}{
		{mongoMessages, `{"room": {"$numberInt":"1"},"_id": {"$numberInt":"1"}}`},
		{mongoOrders, `{"customer": {"$numberInt":"1"}}`},
	}
	for i, tt := range tests {
		if got := mongoString(idx[i].Body, "createIndexes"); got != tt.coll {
			t.Errorf("createIndexes %d on %q, want %q", i, got, tt.coll)
		}
		key, _ := idx[i].Body.Lookup("indexes", "0", "key").DocumentOK()
		if got := bson.Raw(key).String(); got != tt.key {
			t.Errorf("index on %s: got key %s, want %s", tt.coll, got, tt.key)
		}
	}
}

func TestMongoFollowDecodesEvents(t *testing.T) {
	mm := mongoOpenMock(t, MongoOptions{})
	order, msg := bson.NewObjectID(), bson.NewObjectID()
	after := mongoHWM(1)
	mm.feed.AddResponses(
		mongoCursorReply(true, 42, after),
		// The post-batch token is a high-water mark past the last event:
		// positions must still be the events' own tokens.
		mongoCursorReply(false, 42, mongoHWM(9),
			mongoEventDoc(mongoEv(2), "insert", mongoOrders, order, mongoOrderBSON(order, StatusPlaced, 1)),
			mongoEventDoc(mongoEv(3), "replace", mongoOrders, order, mongoOrderBSON(order, StatusPreparing, 2)),
			mongoEventDoc(mongoEv(4), "insert", mongoMessages, msg, mongoMessageBSON(msg, "lobby", "hi")),
		),
		mongoCursorReply(false, 42, mongoEv(12),
			mongoEventDoc(mongoEv(10), "update", mongoOrders, order, mongoOrderBSON(order, StatusCancelled, 3),
				bson.E{Key: "updateDescription", Value: bson.D{
					{Key: "updatedFields", Value: bson.D{{Key: "status", Value: StatusCancelled}, {Key: "version", Value: int64(3)}}},
					{Key: "removedFields", Value: bson.A{}},
					{Key: "truncatedArrays", Value: bson.A{}},
				}}),
			mongoEventDoc(mongoEv(11), "delete", mongoOrders, order, nil),
			// A message delete names no room: skipped, but it still
			// moves the checkpoint.
			mongoEventDoc(mongoEv(12), "delete", mongoMessages, msg, nil),
		),
		mongoCursorReply(false, 42, mongoHWM(20)),
		mongoKillReply(42),
	)
	got, err := mongoFollowUntil(t, mm.store, after, func(bs []Batch) bool { return len(bs) == 4 })
	if !errors.Is(err, errMongoTestStop) {
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
	ot, rt := OrderTopic(order.Hex()), RoomTopic("lobby")
	want := [][]row{
		nil,
		{{mongoEv(2), ot, OpInsert, StatusPlaced}, {mongoEv(3), ot, OpReplace, StatusPreparing}, {mongoEv(4), rt, OpInsert, ""}},
		{{mongoEv(10), ot, OpUpdate, StatusCancelled}, {mongoEv(11), ot, OpDelete, ""}},
		nil,
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Errorf("changes:\n got %v\nwant %v", rows, want)
	}
	if want := []string{after, mongoEv(4), mongoEv(12), mongoHWM(20)}; !slices.Equal(checkpoints, want) {
		t.Errorf("checkpoints: got %v, want %v", checkpoints, want)
	}
	if c := got[1].Changes[2].Message; c == nil || c.ID != msg.Hex() || c.Text != "hi" || c.Author != "bob" {
		t.Errorf("message change: got %+v, want id %s text hi by bob", c, msg.Hex())
	}
	if o := got[1].Changes[0].Order; o == nil || o.ID != order.Hex() || o.Version != 1 || len(o.Items) != 1 || o.Items[0] != (Item{"pizza", 2}) {
		t.Errorf("inserted order: got %+v", o)
	}
	if o := got[2].Changes[1].Order; o == nil || o.ID != order.Hex() || o.Status != "" {
		t.Errorf("deleted order: got %+v, want only the id %s", o, order.Hex())
	}
	if tm := got[1].Changes[0].Time; !tm.Equal(time.Unix(mongoTestSec, 0)) {
		t.Errorf("change time: got %v, want the event's wallTime", tm)
	}

	// What was asked of the server.
	aggs := mm.feedCmds.named("aggregate")
	if len(aggs) != 1 {
		t.Fatalf("aggregates on the feed client: got %d, want 1", len(aggs))
	}
	agg := aggs[0]
	if agg.DB != mongoTestDB {
		t.Errorf("aggregate on database %q, want %q", agg.DB, mongoTestDB)
	}
	if v, ok := agg.Body.Lookup("aggregate").AsInt64OK(); !ok || v != 1 {
		t.Errorf("aggregate: got %v, want 1 (a database-level stream)", agg.Body.Lookup("aggregate"))
	}
	cs := mongoChangeStreamStage(t, agg)
	if got := mongoString(cs, "resumeAfter", "_data"); got != after {
		t.Errorf("resumeAfter: got %q, want %q", got, after)
	}
	if got := mongoString(cs, "fullDocument"); got != "updateLookup" {
		t.Errorf("fullDocument: got %q, want updateLookup", got)
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

func TestMongoStreamErrors(t *testing.T) {
	after := mongoEv(5)
	tests := []struct {
		name  string
		reply bson.D
		want  error
	}{
		{"history lost", mongoErrReply(286, "ChangeStreamHistoryLost"), ErrHistoryLost},
		{"token not found", mongoErrReply(280, "ChangeStreamFatalError"), ErrHistoryLost},
		{"invalid token", mongoErrReply(260, "InvalidResumeToken"), ErrInvalidPosition},
		{"undecodable token", mongoErrReply(9, "FailedToParse"), ErrInvalidPosition},
	}
	for _, tt := range tests {
		t.Run("Follow "+tt.name, func(t *testing.T) {
			mm := mongoOpenMock(t, MongoOptions{})
			mm.feed.AddResponses(tt.reply)
			called := false
			err := mm.store.Follow(context.Background(), after, func(Batch) error { called = true; return nil })
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
			mm := mongoOpenMock(t, MongoOptions{})
			mm.data.AddResponses(tt.reply)
			err := mm.store.CatchUp(context.Background(), []string{RoomTopic("lobby")}, after, mongoEv(9), func(Change) error { return nil })
			if !errors.Is(err, tt.want) {
				t.Fatalf("CatchUp: got %v, want %v", err, tt.want)
			}
		})
	}

	t.Run("history lost while following", func(t *testing.T) {
		mm := mongoOpenMock(t, MongoOptions{})
		mm.feed.AddResponses(
			mongoCursorReply(true, 42, after),
			mongoErrReply(286, "ChangeStreamHistoryLost"),
			mongoKillReply(42),
		)
		_, err := mongoFollowUntil(t, mm.store, after, func([]Batch) bool { return false })
		if !errors.Is(err, ErrHistoryLost) {
			t.Fatalf("Follow: got %v, want ErrHistoryLost", err)
		}
	})
}

func TestMongoFollowInvalidate(t *testing.T) {
	mm := mongoOpenMock(t, MongoOptions{})
	order := bson.NewObjectID()
	after := mongoEv(1)
	inval := mongoEv(3)
	mm.feed.AddResponses(
		mongoCursorReply(true, 42, after),
		// The server closes the cursor (id 0) with the invalidate event.
		mongoCursorReply(false, 0, inval,
			mongoEventDoc(mongoEv(2), "insert", mongoOrders, order, mongoOrderBSON(order, StatusPlaced, 1)),
			bson.D{
				{Key: "_id", Value: mongoTokDoc(inval)},
				{Key: "operationType", Value: "invalidate"},
				{Key: "clusterTime", Value: bson.Timestamp{T: mongoTestSec, I: 3}},
			}),
		mongoCursorReply(true, 43, mongoEv(4),
			mongoEventDoc(mongoEv(4), "insert", mongoOrders, order, mongoOrderBSON(order, StatusPlaced, 1))),
		mongoKillReply(43),
	)
	got, err := mongoFollowUntil(t, mm.store, after, func(bs []Batch) bool { return len(bs) == 3 })
	if !errors.Is(err, errMongoTestStop) {
		t.Fatalf("Follow returned %v, want the callback's error", err)
	}
	var pos []string
	for _, b := range got {
		for _, c := range b.Changes {
			pos = append(pos, c.Pos)
		}
	}
	if want := []string{mongoEv(2), mongoEv(4)}; !slices.Equal(pos, want) {
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
	cs := mongoChangeStreamStage(t, aggs[1])
	if got := mongoString(cs, "startAfter", "_data"); got != inval {
		t.Errorf("second aggregate startAfter: got %q, want the invalidate token %q", got, inval)
	}
	if _, err := cs.LookupErr("resumeAfter"); err == nil {
		t.Errorf("second aggregate also has resumeAfter: %v", cs)
	}
	if got := mongoString(cs, "fullDocument"); got != "updateLookup" {
		t.Errorf("second aggregate fullDocument: got %q, want updateLookup", got)
	}
}

func TestMongoFollowResumableError(t *testing.T) {
	order := bson.NewObjectID()
	after := mongoEv(1)
	t.Run("the driver resumes after the last event", func(t *testing.T) {
		mm := mongoOpenMock(t, MongoOptions{})
		mm.feed.AddResponses(
			mongoCursorReply(true, 42, after),
			mongoCursorReply(false, 42, mongoEv(2),
				mongoEventDoc(mongoEv(2), "insert", mongoOrders, order, mongoOrderBSON(order, StatusPlaced, 1))),
			mongoErrReply(6, "HostUnreachable", "ResumableChangeStreamError"),
			mongoKillReply(42),
			mongoCursorReply(true, 43, mongoEv(3),
				mongoEventDoc(mongoEv(3), "replace", mongoOrders, order, mongoOrderBSON(order, StatusPreparing, 2))),
			mongoKillReply(43),
		)
		got, err := mongoFollowUntil(t, mm.store, after, func(bs []Batch) bool { return len(bs) == 3 })
		if !errors.Is(err, errMongoTestStop) {
			t.Fatalf("Follow returned %v, want the callback's error", err)
		}
		var pos []string
		for _, b := range got {
			for _, c := range b.Changes {
				pos = append(pos, c.Pos)
			}
		}
		if want := []string{mongoEv(2), mongoEv(3)}; !slices.Equal(pos, want) {
			t.Errorf("positions: got %v, want %v", pos, want)
		}
		aggs := mm.feedCmds.named("aggregate")
		if len(aggs) != 2 {
			t.Fatalf("aggregates: got %d, want 2 (open, resume)", len(aggs))
		}
		cs := mongoChangeStreamStage(t, aggs[1])
		if got := mongoString(cs, "resumeAfter", "_data"); got != mongoEv(2) {
			t.Errorf("resume aggregate resumeAfter: got %q, want the last event's token %q", got, mongoEv(2))
		}
		if got := mongoString(cs, "fullDocument"); got != "updateLookup" {
			t.Errorf("resume aggregate fullDocument: got %q, want updateLookup", got)
		}
		if got := aggs[1].Body.Lookup("pipeline", "1", "$match").String(); !strings.Contains(got, `"ns.coll"`) {
			t.Errorf("resume aggregate lost the $match: %s", got)
		}
	})
	t.Run("a failed resume is returned", func(t *testing.T) {
		mm := mongoOpenMock(t, MongoOptions{})
		mm.feed.AddResponses(
			mongoCursorReply(true, 42, after),
			mongoErrReply(6, "HostUnreachable", "ResumableChangeStreamError"),
			mongoKillReply(42),
			mongoErrReply(6, "HostUnreachable", "ResumableChangeStreamError", "RetryableError"),
			mongoErrReply(6, "HostUnreachable", "ResumableChangeStreamError", "RetryableError"),
		)
		_, err := mongoFollowUntil(t, mm.store, after, func([]Batch) bool { return false })
		if err == nil || errors.Is(err, ErrHistoryLost) || errors.Is(err, ErrInvalidPosition) || errors.Is(err, errMongoTestStop) {
			t.Fatalf("Follow: got %v, want the driver's error (retry from the checkpoint)", err)
		}
		if !mongoServerCode(err, 6) {
			t.Errorf("Follow: got %v, want it to wrap the server's HostUnreachable", err)
		}
		if got := len(mm.feedCmds.named("aggregate")); got < 2 || got > 3 {
			t.Errorf("aggregates: got %d, want the open and the driver's one resume (retried at most once)", got)
		}
	})
}

func TestMongoCloseStopsFollow(t *testing.T) {
	mm := mongoOpenMock(t, MongoOptions{})
	after := mongoEv(1)
	mm.feed.AddResponses(mongoCursorReply(true, 42, after))
	for range 50 {
		mm.feed.AddResponses(mongoCursorReply(false, 42, after))
	}
	closed := make(chan error, 1)
	err := mm.store.Follow(context.Background(), after, func(Batch) error {
		go func() { closed <- mm.store.Close() }()
		<-mm.store.done.Done() // Close has begun
		return nil
	})
	if !errors.Is(err, ErrClosed) {
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
	if _, err := mm.store.Head(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Head after Close: got %v, want ErrClosed", err)
	}
	if err := mm.store.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: got %v, want ErrClosed", err)
	}
}

func TestMongoCatchUp(t *testing.T) {
	order, other, msg := bson.NewObjectID(), bson.NewObjectID(), bson.NewObjectID()
	after, until := mongoEv(2), mongoEv(8)
	topics := []string{OrderTopic(order.Hex()), RoomTopic("lobby")}

	t.Run("changes up to until", func(t *testing.T) {
		mm := mongoOpenMock(t, MongoOptions{})
		mm.data.AddResponses(
			mongoCursorReply(true, 50, mongoEv(3),
				// Were the server to return the resume token's own
				// event, it must not be delivered again.
				mongoEventDoc(after, "replace", mongoOrders, order, mongoOrderBSON(order, StatusPlaced, 1)),
				mongoEventDoc(mongoEv(3), "replace", mongoOrders, order, mongoOrderBSON(order, StatusPreparing, 2))),
			mongoCursorReply(false, 50, mongoHWM(6)), // quiet, not yet at until
			mongoCursorReply(false, 50, mongoEv(9),
				mongoEventDoc(mongoEv(6), "insert", mongoMessages, msg, mongoMessageBSON(msg, "lobby", "hello")),
				// until's own event, on a topic not asked for: ends the catch-up unseen
				mongoEventDoc(until, "insert", mongoOrders, other, mongoOrderBSON(other, StatusPlaced, 1)),
				mongoEventDoc(mongoEv(9), "replace", mongoOrders, order, mongoOrderBSON(order, StatusCancelled, 3)),
			),
			mongoKillReply(50),
		)
		var got []string
		err := mm.store.CatchUp(context.Background(), topics, after, until, func(c Change) error {
			got = append(got, c.Pos+" "+c.Topic)
			return nil
		})
		if err != nil {
			t.Fatalf("CatchUp: %v", err)
		}
		want := []string{mongoEv(3) + " " + topics[0], mongoEv(6) + " " + topics[1]}
		if !slices.Equal(got, want) {
			t.Errorf("changes: got %v, want %v", got, want)
		}
		aggs := mm.dataCmds.named("aggregate")
		if len(aggs) != 1 {
			t.Fatalf("aggregates: got %d, want 1", len(aggs))
		}
		cs := mongoChangeStreamStage(t, aggs[0])
		if got := mongoString(cs, "resumeAfter", "_data"); got != after {
			t.Errorf("resumeAfter: got %q, want %q", got, after)
		}
		match := aggs[0].Body.Lookup("pipeline", "1", "$match").String()
		for _, w := range []string{`"_id._data"`, after, until, `"documentKey._id"`, order.Hex(), `"fullDocument.room"`, `"lobby"`} {
			if !strings.Contains(match, w) {
				t.Errorf("$match %s lacks %s", match, w)
			}
		}
		gm := mm.dataCmds.named("getMore")
		if len(gm) != 2 {
			t.Fatalf("getMores: got %d, want 2", len(gm))
		}
		if v, _ := gm[0].Body.Lookup("maxTimeMS").AsInt64OK(); v != mongoCatchUpAwait.Milliseconds() {
			t.Errorf("getMore maxTimeMS: got %d, want %d", v, mongoCatchUpAwait.Milliseconds())
		}
		if got := len(mm.dataCmds.named("killCursors")); got != 1 {
			t.Errorf("killCursors: got %d, want 1", got)
		}
	})

	t.Run("a quiet topic finishes at the post-batch token", func(t *testing.T) {
		mm := mongoOpenMock(t, MongoOptions{})
		mm.data.AddResponses(
			mongoCursorReply(true, 51, after),
			mongoCursorReply(false, 51, mongoHWM(9)),
			mongoKillReply(51),
		)
		called := false
		err := mm.store.CatchUp(context.Background(), topics, after, until, func(Change) error { called = true; return nil })
		if err != nil {
			t.Fatalf("CatchUp: %v", err)
		}
		if called {
			t.Error("fn called for a topic without changes")
		}
	})

	t.Run("nothing to do", func(t *testing.T) {
		mm := mongoOpenMock(t, MongoOptions{})
		for _, tt := range []struct{ after, until string }{{until, after}, {after, after}} {
			if err := mm.store.CatchUp(context.Background(), topics, tt.after, tt.until, func(Change) error { return nil }); err != nil {
				t.Errorf("CatchUp(%s, %s): %v", tt.after, tt.until, err)
			}
		}
		if got := len(mm.dataCmds.named("aggregate")); got != 0 {
			t.Errorf("aggregates: got %d, want 0", got)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		mm := mongoOpenMock(t, MongoOptions{})
		for _, tt := range []struct {
			topics       []string
			after, until string
			want         error
		}{
			{topics, "garbage", until, ErrInvalidPosition},
			{topics, after, "", ErrInvalidPosition},
			{[]string{"orders/nope"}, after, until, ErrInvalid},
		} {
			err := mm.store.CatchUp(context.Background(), tt.topics, tt.after, tt.until, func(Change) error { return nil })
			if !errors.Is(err, tt.want) {
				t.Errorf("CatchUp(%v, %q, %q): got %v, want %v", tt.topics, tt.after, tt.until, err, tt.want)
			}
		}
	})

	t.Run("the cap on concurrent catch-ups", func(t *testing.T) {
		mm := mongoOpenMock(t, MongoOptions{CatchUps: 1})
		mm.store.catchUps <- struct{}{} // one catch-up running
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := mm.store.CatchUp(ctx, topics, after, until, func(Change) error { return nil })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("CatchUp over the cap: got %v, want it to wait until ctx ends", err)
		}
		if got := len(mm.dataCmds.named("aggregate")); got != 0 {
			t.Errorf("aggregates over the cap: got %d, want 0", got)
		}
		<-mm.store.catchUps
	})
}

func TestMongoSnapshot(t *testing.T) {
	mm := mongoOpenMock(t, MongoOptions{})
	order, missing := bson.NewObjectID(), bson.NewObjectID()
	m1, m2 := bson.NewObjectID(), bson.NewObjectID()
	head := mongoTok(mongoTestSec, 7, false)
	mm.data.AddResponses(
		mongoCursorReply(true, 60, head),
		mongoKillReply(60),
		mongoFindReply(mongoOrders, mongoOrderBSON(order, StatusPreparing, 2)),
		mongoFindReply(mongoMessages, mongoMessageBSON(m2, "lobby", "second"), mongoMessageBSON(m1, "lobby", "first")),
	)
	topics := []string{OrderTopic(order.Hex()), RoomTopic("lobby"), OrderTopic(missing.Hex())}
	snaps, pos, err := mm.store.Snapshot(context.Background(), topics)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if pos != head {
		t.Errorf("position: got %q, want the fresh stream's post-batch token %q", pos, head)
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
	if len(aggs) != 1 {
		t.Fatalf("aggregates: got %d, want 1", len(aggs))
	}
	if v, ok := aggs[0].Body.Lookup("cursor", "batchSize").AsInt64OK(); !ok || v != 0 {
		t.Errorf("position stream cursor.batchSize: got %v, want 0 (so its token is a high-water mark)", aggs[0].Body.Lookup("cursor"))
	}
	cs := mongoChangeStreamStage(t, aggs[0])
	for _, k := range []string{"resumeAfter", "startAfter", "startAtOperationTime"} {
		if _, err := cs.LookupErr(k); err == nil {
			t.Errorf("position stream has %s; want it to start now", k)
		}
	}
	// Both reads at the cluster time just before the position's.
	finds := mm.dataCmds.named("find")
	if len(finds) != 2 {
		t.Fatalf("finds: got %d, want 2", len(finds))
	}
	for _, f := range finds {
		rc := f.Body.Lookup("readConcern")
		if lvl, _ := rc.Document().Lookup("level").StringValueOK(); lvl != "snapshot" {
			t.Errorf("find %s readConcern level: got %v, want snapshot", mongoString(f.Body, "find"), rc)
		}
		ts, inc, ok := rc.Document().Lookup("atClusterTime").TimestampOK()
		if !ok || ts != mongoTestSec || inc != 6 {
			t.Errorf("find %s atClusterTime: got %v, want Timestamp(%d, 6)", mongoString(f.Body, "find"), rc, uint32(mongoTestSec))
		}
	}
	if got := mongoString(finds[1].Body, "filter", "room"); got != "lobby" {
		t.Errorf("messages find filter room: got %q, want lobby", got)
	}
	if v, _ := finds[1].Body.Lookup("limit").AsInt64OK(); v != SnapshotMessages {
		t.Errorf("messages find limit: got %d, want %d", v, SnapshotMessages)
	}
}

func TestMongoSnapshotRetriesTooOld(t *testing.T) {
	mm := mongoOpenMock(t, MongoOptions{})
	order := bson.NewObjectID()
	mm.data.AddResponses(
		mongoCursorReply(true, 60, mongoHWM(7)),
		mongoKillReply(60),
		mongoErrReply(239, "SnapshotTooOld"),
		mongoCursorReply(true, 61, mongoHWM(9)),
		mongoKillReply(61),
		mongoFindReply(mongoOrders, mongoOrderBSON(order, StatusPlaced, 1)),
	)
	_, pos, err := mm.store.Snapshot(context.Background(), []string{OrderTopic(order.Hex())})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if pos != mongoHWM(9) {
		t.Errorf("position: got %q, want the second stream's %q", pos, mongoHWM(9))
	}
	if got := len(mm.dataCmds.named("aggregate")); got != 2 {
		t.Errorf("aggregates: got %d, want 2 (a new position for the new read)", got)
	}
}

func TestMongoHead(t *testing.T) {
	mm := mongoOpenMock(t, MongoOptions{})
	mm.data.AddResponses(mongoCursorReply(true, 70, mongoHWM(4)), mongoKillReply(70))
	pos, err := mm.store.Head(context.Background())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if pos != mongoHWM(4) {
		t.Errorf("Head: got %q, want %q", pos, mongoHWM(4))
	}
	if err := mm.store.CheckPosition(pos); err != nil {
		t.Errorf("CheckPosition(Head()): %v", err)
	}
}

func TestMongoCheckPosition(t *testing.T) {
	s := &Mongo{}
	tests := []struct {
		pos  string
		want error
	}{
		{mongoEv(1), nil},
		{mongoHWM(1), nil},
		{"8266000000000000012B0229296E04", nil},
		{"", ErrInvalidPosition},
		{"82", ErrInvalidPosition},
		{"826600000000000001", nil}, // a bare timestamp
		{"82660000000000000", ErrInvalidPosition},
		{strings.ToLower(mongoEv(1)), ErrInvalidPosition},
		{"0A" + mongoEv(1)[2:], ErrInvalidPosition},
		{mongoEv(1) + "0", ErrInvalidPosition},
		{mongoEv(1) + "ZZ", ErrInvalidPosition},
		{"82" + strings.Repeat("AB", 255), nil},
		{"82" + strings.Repeat("AB", 256), ErrInvalidPosition},
		{"00000001", ErrInvalidPosition}, // an embedded-store position
	}
	for _, tt := range tests {
		if err := s.CheckPosition(tt.pos); !errors.Is(err, tt.want) {
			t.Errorf("CheckPosition(%.30q): got %v, want %v", tt.pos, err, tt.want)
		}
	}
}

func TestMongoPositionTime(t *testing.T) {
	ts, err := mongoPositionTime(mongoTok(0x66AABBCC, 0x0102, true))
	if err != nil || ts.T != 0x66AABBCC || ts.I != 0x0102 {
		t.Errorf("mongoPositionTime: got %v, %v, want Timestamp(0x66AABBCC, 0x102)", ts, err)
	}
	tests := []struct{ in, want bson.Timestamp }{
		{bson.Timestamp{T: 10, I: 5}, bson.Timestamp{T: 10, I: 4}},
		{bson.Timestamp{T: 10, I: 0}, bson.Timestamp{T: 9, I: ^uint32(0)}},
	}
	for _, tt := range tests {
		if got := mongoTimestampBefore(tt.in); got != tt.want {
			t.Errorf("mongoTimestampBefore(%v): got %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestMongoDecodeSkips(t *testing.T) {
	id := bson.NewObjectID()
	tests := []struct {
		name string
		ev   bson.D
	}{
		{"update whose document is gone", mongoEventDoc(mongoEv(1), "update", mongoOrders, id, nil)},
		{"message delete", mongoEventDoc(mongoEv(1), "delete", mongoMessages, id, nil)},
		{"drop", mongoEventDoc(mongoEv(1), "drop", mongoOrders, id, nil)},
		{"message in a bad room", mongoEventDoc(mongoEv(1), "insert", mongoMessages, id, mongoMessageBSON(id, "Bad Room", "x"))},
		{"order with a string _id", bson.D{
			{Key: "_id", Value: mongoTokDoc(mongoEv(1))}, {Key: "operationType", Value: "delete"},
			{Key: "ns", Value: bson.D{{Key: "coll", Value: mongoOrders}}},
			{Key: "documentKey", Value: bson.D{{Key: "_id", Value: "abc"}}},
		}},
	}
	for _, tt := range tests {
		raw, err := bson.Marshal(tt.ev)
		if err != nil {
			t.Fatal(err)
		}
		pos, _, _, ok, err := mongoDecode(raw)
		if err != nil || ok || pos != mongoEv(1) {
			t.Errorf("%s: got pos %q ok %v err %v, want skipped at its position", tt.name, pos, ok, err)
		}
	}
	raw, _ := bson.Marshal(bson.D{{Key: "operationType", Value: "insert"}})
	if _, _, _, _, err := mongoDecode(raw); err == nil {
		t.Error("an event without a resume token decoded without error")
	}
}

func TestMongoUpdateOrderStatus(t *testing.T) {
	id := bson.NewObjectID()
	updated := bson.D{{Key: "n", Value: int32(1)}, {Key: "nModified", Value: int32(1)}, {Key: "ok", Value: 1.0}}
	raced := bson.D{{Key: "n", Value: int32(0)}, {Key: "nModified", Value: int32(0)}, {Key: "ok", Value: 1.0}}

	t.Run("check-and-set retries a race", func(t *testing.T) {
		mm := mongoOpenMock(t, MongoOptions{})
		mm.data.AddResponses(
			mongoFindReply(mongoOrders, mongoOrderBSON(id, StatusPlaced, 1)),
			raced,
			mongoFindReply(mongoOrders, mongoOrderBSON(id, StatusPreparing, 2)),
			updated,
		)
		o, err := mm.store.UpdateOrderStatus(context.Background(), id.Hex(), StatusCancelled, 0)
		if err != nil {
			t.Fatalf("UpdateOrderStatus: %v", err)
		}
		if o.Status != StatusCancelled || o.Version != 3 || o.ID != id.Hex() {
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
			if s, _ := repl.Lookup("status").StringValueOK(); s != StatusCancelled {
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
		{"version mismatch", mongoFindReply(mongoOrders, mongoOrderBSON(id, StatusPlaced, 2)), id.Hex(), StatusPreparing, 1, ErrVersionMismatch},
		{"version checked before transition", mongoFindReply(mongoOrders, mongoOrderBSON(id, StatusDelivered, 4)), id.Hex(), StatusPlaced, 3, ErrVersionMismatch},
		{"not allowed", mongoFindReply(mongoOrders, mongoOrderBSON(id, StatusDelivered, 4)), id.Hex(), StatusPlaced, 0, ErrConflict},
		{"unknown status", mongoFindReply(mongoOrders, mongoOrderBSON(id, StatusPlaced, 1)), id.Hex(), "eaten", 0, ErrInvalid},
		{"not found", mongoFindReply(mongoOrders), id.Hex(), StatusPreparing, 0, ErrNotFound},
		{"malformed id", nil, "xyz", StatusPreparing, 0, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mm := mongoOpenMock(t, MongoOptions{})
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

func TestMongoWritesAndReads(t *testing.T) {
	mm := mongoOpenMock(t, MongoOptions{})
	inserted := bson.D{{Key: "n", Value: int32(1)}, {Key: "ok", Value: 1.0}}
	m1, m2 := bson.NewObjectID(), bson.NewObjectID()
	mm.data.AddResponses(
		inserted,
		inserted,
		mongoFindReply(mongoMessages, mongoMessageBSON(m2, "lobby", "b"), mongoMessageBSON(m1, "lobby", "a")),
	)
	o, err := mm.store.CreateOrder(context.Background(), "ann", []Item{{"pizza", 2}})
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	if !ValidOrderID(o.ID) || o.Status != StatusPlaced || o.Version != 1 || !o.CreatedAt.Equal(o.UpdatedAt) {
		t.Errorf("CreateOrder: got %+v", o)
	}
	if o.CreatedAt.Nanosecond()%int(time.Millisecond) != 0 {
		t.Errorf("CreatedAt %v has sub-millisecond digits BSON cannot keep", o.CreatedAt)
	}
	msg, err := mm.store.PostMessage(context.Background(), "lobby", "bob", "hi")
	if err != nil || !ValidOrderID(msg.ID) {
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
		{"lobby", "", MaxListLimit + 1},
		{"lobby", "nothex", 10},
		{"Bad Room", "", 10},
	} {
		if _, err := mm.store.ListMessages(context.Background(), tt.room, tt.before, tt.limit); !errors.Is(err, ErrInvalid) {
			t.Errorf("ListMessages(%q, %q, %d): got %v, want ErrInvalid", tt.room, tt.before, tt.limit, err)
		}
	}
	if _, err := mm.store.CreateOrder(context.Background(), "", nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("CreateOrder with no customer: got %v, want ErrInvalid", err)
	}
	if _, err := mm.store.GetOrder(context.Background(), "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetOrder(nope): got %v, want ErrNotFound", err)
	}
	if got := len(mm.dataCmds.named("find")); got != 1 {
		t.Errorf("finds: got %d, want 1 (bad input never reaches the server)", got)
	}
}
