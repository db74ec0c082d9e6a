package mongo_test

// Real-server versions of the risks of issue 14. The mock-deployment tests
// in store_test.go prove how the store handles the replies they script;
// these prove what a real mongod answers and that the store copes with it:
// the codes for malformed tokens, a dropDatabase under a running feed,
// where a fresh snapshot's position sorts, the catch-up filter, and a
// change event over 16 MB. They use only the store's exported API, plus a
// driver client of their own playing "someone else" (mongosh, an operator).
//
// Each needs MONGODB_URI naming a replica set (see docs/mongodb.md) and
// works in a database of its own, dropped at the end; without MONGODB_URI
// each says plainly that it skipped.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"changecast/store"
	"changecast/store/mongo"
)

// realWait bounds every wait on the server. It guards against a hang (an
// idle primary writes a no-op only every 10 s); it measures no speed.
const realWait = 60 * time.Second

// realDB is one test's database on the server MONGODB_URI names, and a
// driver client of the test's own.
type realDB struct {
	uri  string
	name string
	raw  *mongodrv.Client
	db   *mongodrv.Database
}

// realServer skips t unless MONGODB_URI is set; otherwise it returns a
// fresh database, dropped when the test ends (after the stores it opened
// are closed).
func realServer(t *testing.T) *realDB {
	t.Helper()
	uri := os.Getenv("MONGODB_URI")
	if uri == "" {
		t.Skipf("MONGODB_URI not set: %s skipped", t.Name())
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := "changecast_rs_" + hex.EncodeToString(rnd[:])
	raw, err := mongodrv.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatalf("connect to MONGODB_URI: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), realWait)
		defer cancel()
		if err := raw.Database(name).Drop(ctx); err != nil {
			t.Errorf("drop the test database %s: %v", name, err)
		}
		_ = raw.Disconnect(ctx)
	})
	return &realDB{uri: uri, name: name, raw: raw, db: raw.Database(name)}
}

// open opens a Store (one changecast process) on the test's database,
// closed when the test ends.
func (r *realDB) open(t *testing.T) *mongo.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), realWait)
	defer cancel()
	s, err := mongo.Open(ctx, r.uri, r.name, mongo.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ctxWait(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), realWait)
	t.Cleanup(cancel)
	return ctx
}

func head(t *testing.T, s *mongo.Store) string {
	t.Helper()
	pos, err := s.Head(ctxWait(t))
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	return pos
}

func post(t *testing.T, s *mongo.Store, room, text string) store.Message {
	t.Helper()
	m, err := s.PostMessage(ctxWait(t), room, "tester", text)
	if err != nil {
		t.Fatalf("PostMessage %s %q: %v", room, text, err)
	}
	return m
}

// feedRun follows a store the way the multiplexer does: Follow from a
// position and, when Follow fails, again from the last checkpoint, at most
// restarts times.
type feedRun struct {
	mu         sync.Mutex
	changes    []store.Change
	checkpoint string
	errs       []error
	gaveUp     bool
	moved      chan struct{}
	cancel     context.CancelFunc
	done       chan struct{}
}

func follow(t *testing.T, s *mongo.Store, after string, restarts int) *feedRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &feedRun{checkpoint: after, moved: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for attempt := 0; ; attempt++ {
			f.mu.Lock()
			from := f.checkpoint
			f.mu.Unlock()
			err := s.Follow(ctx, from, func(b store.Batch) error {
				f.mu.Lock()
				f.changes = append(f.changes, b.Changes...)
				if s.ComparePositions(b.Checkpoint, f.checkpoint) > 0 {
					f.checkpoint = b.Checkpoint
				}
				f.mu.Unlock()
				select {
				case f.moved <- struct{}{}:
				default:
				}
				return nil
			})
			if ctx.Err() != nil {
				return
			}
			f.mu.Lock()
			f.errs = append(f.errs, err)
			if attempt >= restarts {
				f.gaveUp = true
				f.mu.Unlock()
				select {
				case f.moved <- struct{}{}:
				default:
				}
				return
			}
			f.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-f.done })
	return f
}

// waitFor waits until ok holds for the changes and checkpoint so far,
// failing the test after realWait or once Follow has given up.
func (f *feedRun) waitFor(t *testing.T, what string, ok func(changes []store.Change, checkpoint string) bool) ([]store.Change, string) {
	t.Helper()
	deadline := time.After(realWait)
	for {
		f.mu.Lock()
		changes, cp, errs, gaveUp := slices.Clone(f.changes), f.checkpoint, slices.Clone(f.errs), f.gaveUp
		f.mu.Unlock()
		if ok(changes, cp) {
			return changes, cp
		}
		if gaveUp {
			t.Fatalf("waiting for %s: Follow stopped: %v; changes so far: %s", what, errs, describe(changes))
		}
		select {
		case <-f.moved:
		case <-deadline:
			t.Fatalf("no %s within %v; Follow errors %v; changes so far: %s", what, realWait, errs, describe(changes))
		}
	}
}

// errors returns the errors Follow returned so far.
func (f *feedRun) errors() []error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.errs)
}

// hasMessage reports whether changes hold the message with id.
func hasMessage(id string) func([]store.Change, string) bool {
	return func(cs []store.Change, _ string) bool {
		return slices.ContainsFunc(cs, func(c store.Change) bool { return c.Message != nil && c.Message.ID == id })
	}
}

func describe(cs []store.Change) string {
	var b strings.Builder
	for _, c := range cs {
		b.WriteString("\n  " + c.Op + " " + c.Topic)
		if c.Message != nil {
			b.WriteString(" " + c.Message.Text)
		}
		if c.Order != nil {
			fmt.Fprintf(&b, " v%d %s", c.Order.Version, c.Order.Status)
		}
		b.WriteString(" @" + c.Pos)
	}
	return b.String()
}

// texts returns the texts of the messages of room in changes, in order.
func texts(cs []store.Change, room string) []string {
	var out []string
	for _, c := range cs {
		if c.Topic == store.RoomTopic(room) && c.Message != nil {
			out = append(out, c.Message.Text)
		}
	}
	return out
}

func catchUp(t *testing.T, s *mongo.Store, topics []string, after, until string) ([]store.Change, error) {
	t.Helper()
	var got []store.Change
	err := s.CatchUp(ctxWait(t), topics, after, until, func(c store.Change) error {
		got = append(got, c)
		return nil
	})
	return got, err
}

// serverReply opens a change stream resuming after a token whose _data is
// data, with the test's own client, and returns the server's error (nil if
// it accepted the token).
func serverReply(t *testing.T, r *realDB, data string) error {
	t.Helper()
	ctx := ctxWait(t)
	cs, err := r.db.Watch(ctx, mongodrv.Pipeline{}, options.ChangeStream().
		SetResumeAfter(bson.D{{Key: "_data", Value: data}}).
		SetMaxAwaitTime(100*time.Millisecond))
	if err != nil {
		return err
	}
	defer cs.Close(context.WithoutCancel(ctx))
	cs.TryNext(ctx)
	return cs.Err()
}

// transientLabels are the labels that would make a client retry an error
// rather than give up on the token.
var transientLabels = []string{"ResumableChangeStreamError", "RetryableWriteError", "TransientTransactionError", "NetworkError"}

// checkRefused fails unless err is a server error without a transient
// label (the store must not retry it), and logs its code for the record.
func checkRefused(t *testing.T, what string, err error) mongodrv.ServerError {
	t.Helper()
	var se mongodrv.ServerError
	if !errors.As(err, &se) {
		t.Fatalf("%s: the server answered %v (%T), want a server error", what, err, err)
	}
	for _, l := range transientLabels {
		if se.HasErrorLabel(l) {
			t.Errorf("%s: the server's error %v has the label %s: it would be retried", what, err, l)
		}
	}
	t.Logf("%s: the server answered %v", what, err)
	return se
}

// TestMongoRealNonHexToken: a token that is not hex. The server refuses it
// with 9 (FailedToParse), no transient label; the store refuses it as an
// invalid position (the client gets reset + snapshot).
func TestMongoRealNonHexToken(t *testing.T) {
	r := realServer(t)
	s := r.open(t)
	until := head(t, s)

	se := checkRefused(t, "resumeAfter a non-hex token", serverReply(t, r, "82ZZ"+until[4:]))
	if !se.HasErrorCode(9) {
		t.Errorf("the server refused a non-hex token with %v, want code 9 (FailedToParse), which the mock tests script", se)
	}
	for _, pos := range []string{"82ZZ" + until[4:], strings.ToLower(until), "not a token"} {
		if _, err := catchUp(t, s, []string{store.RoomTopic("lobby")}, pos, until); !errors.Is(err, store.ErrInvalidPosition) {
			t.Errorf("CatchUp after %.30q = %v, want an error wrapping ErrInvalidPosition", pos, err)
		}
	}
}

// TestMongoRealMalformedHexToken: tokens that pass CheckPosition (upper-case
// hex starting with a real timestamp) but whose KeyString is damaged. The
// server refuses them with codes that are neither 260 nor transient; the
// store must answer with an error that resets the client (ErrInvalidPosition
// or ErrHistoryLost), never one that sends it round the retry loop.
func TestMongoRealMalformedHexToken(t *testing.T) {
	r := realServer(t)
	s := r.open(t)
	const room = "bad-hex"
	f := follow(t, s, head(t, s), 0)
	m := post(t, s, room, "one")
	changes, _ := f.waitFor(t, "the message's event", hasMessage(m.ID))
	ev := changes[len(changes)-1].Pos
	m2 := post(t, s, room, "two")
	changes, _ = f.waitFor(t, "the second message's event", hasMessage(m2.ID))
	until := changes[len(changes)-1].Pos

	variants := map[string]string{
		"last byte cut off":       ev[:len(ev)-2],
		"KeyString body replaced": ev[:18] + strings.Repeat("FF", 24),
		"zeros after the time":    ev[:18] + strings.Repeat("00", 24),
		"a type byte changed":     ev[:18] + "F0" + ev[20:],
	}
	for name, pos := range variants {
		t.Run(name, func(t *testing.T) {
			if err := s.CheckPosition(pos); err != nil {
				t.Fatalf("the damaged token must pass CheckPosition to test the server's answer: %v", err)
			}
			if s.ComparePositions(pos, until) >= 0 {
				t.Fatalf("the damaged token %s sorts after until %s", pos, until)
			}
			if err := serverReply(t, r, pos); err != nil {
				se := checkRefused(t, "resumeAfter "+name, err)
				if se.HasErrorCode(260) {
					t.Logf("the server answered 260 (InvalidResumeToken) here")
				}
			} else {
				t.Logf("the server accepted the damaged token %s", pos)
			}
			got, err := catchUp(t, s, []string{store.RoomTopic(room)}, pos, until)
			if !errors.Is(err, store.ErrInvalidPosition) && !errors.Is(err, store.ErrHistoryLost) {
				t.Errorf("CatchUp after %s = %v with %d changes; want an error wrapping ErrInvalidPosition or ErrHistoryLost (reset + snapshot)", name, err, len(got))
			}
		})
	}
}

// TestMongoRealDropDatabase: dropDatabase invalidates the database's change
// streams. A running feed starts again after the invalidate by itself, a
// feed started later from a token before the drop goes through it too,
// both deliver every later write exactly once, and the indexes Open made
// are back.
func TestMongoRealDropDatabase(t *testing.T) {
	r := realServer(t)
	s := r.open(t)
	const room = "drop"
	running := follow(t, s, head(t, s), 0)
	m1 := post(t, s, room, "m1")
	changes, _ := running.waitFor(t, "m1", hasMessage(m1.ID))
	before := changes[len(changes)-1].Pos

	if err := r.db.Drop(ctxWait(t)); err != nil {
		t.Fatalf("dropDatabase: %v", err)
	}
	m2 := post(t, s, room, "m2")
	running.waitFor(t, "m2 after dropDatabase on the running feed", hasMessage(m2.ID))

	// Another process whose feed restarts from a checkpoint before the drop.
	other := r.open(t)
	restarted := follow(t, other, before, 0)
	m3 := post(t, s, room, "m3")
	got, _ := restarted.waitFor(t, "m3 on a feed started before the drop", hasMessage(m3.ID))
	if want := []string{"m2", "m3"}; !slices.Equal(texts(got, room), want) {
		t.Errorf("feed from a token before the drop: messages %q, want %q:%s", texts(got, room), want, describe(got))
	}
	got, _ = running.waitFor(t, "m3 on the running feed", hasMessage(m3.ID))
	if want := []string{"m1", "m2", "m3"}; !slices.Equal(texts(got, room), want) {
		t.Errorf("running feed: messages %q, want %q:%s", texts(got, room), want, describe(got))
	}
	if errs := slices.Concat(running.errors(), restarted.errors()); len(errs) > 0 {
		t.Errorf("Follow returned %v; want it to go through the invalidate by itself", errs)
	}

	// The indexes Open made come back (dropDatabase removed them).
	want := map[string][]string{"messages": {"room,_id"}, "orders": {"customer,_id", "status,_id"}}
	deadline := time.Now().Add(realWait)
	for coll, wantKeys := range want {
		for {
			keys := indexKeys(t, r.db.Collection(coll))
			if !slices.ContainsFunc(wantKeys, func(k string) bool { return !slices.Contains(keys, k) }) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after dropDatabase, %s has indexes %q; want %q back", coll, keys, wantKeys)
			}
			time.Sleep(100 * time.Millisecond) // polling the server for a condition
		}
	}
}

// indexKeys returns the key patterns of c's indexes, each as its field
// names joined with commas ("room,_id").
func indexKeys(t *testing.T, c *mongodrv.Collection) []string {
	t.Helper()
	ctx := ctxWait(t)
	cur, err := c.Indexes().List(ctx)
	if err != nil {
		return nil // the collection may not exist yet
	}
	var specs []struct {
		Key bson.Raw `bson:"key"`
	}
	if err := cur.All(ctx, &specs); err != nil {
		t.Fatalf("list indexes of %s: %v", c.Name(), err)
	}
	var keys []string
	for _, s := range specs {
		elems, err := s.Key.Elements()
		if err != nil {
			t.Fatalf("index key of %s: %v", c.Name(), err)
		}
		var names []string
		for _, e := range elems {
			names = append(names, e.Key())
		}
		keys = append(keys, strings.Join(names, ","))
	}
	return keys
}

// positionTime returns the cluster time at the start of a resume token's
// _data (the KeyString's Timestamp: type byte 0x82, then 4 bytes of
// seconds and 4 of increment, big-endian).
func positionTime(t *testing.T, pos string) bson.Timestamp {
	t.Helper()
	b, err := hex.DecodeString(pos[2:18])
	if err != nil || !strings.HasPrefix(pos, "82") {
		t.Fatalf("position %q does not start with a timestamp", pos)
	}
	return bson.Timestamp{T: binary.BigEndian.Uint32(b[:4]), I: binary.BigEndian.Uint32(b[4:])}
}

// lastApplied returns the time of the newest oplog entry, or false if the
// test's user may not read local.oplog.rs (Atlas shared tiers).
func lastApplied(t *testing.T, r *realDB) (bson.Timestamp, bool) {
	t.Helper()
	var entry struct {
		TS bson.Timestamp `bson:"ts"`
	}
	err := r.raw.Database("local").Collection("oplog.rs").FindOne(ctxWait(t), bson.D{},
		options.FindOne().SetSort(bson.D{{Key: "$natural", Value: -1}}).SetProjection(bson.D{{Key: "ts", Value: 1}})).Decode(&entry)
	if err != nil {
		t.Logf("cannot read the oplog (%v): the check against it is skipped", err)
		return bson.Timestamp{}, false
	}
	return entry.TS, true
}

// TestMongoRealSnapshotPosition: a fresh snapshot's position is never
// ahead of what the feed can reach, so a client reconnecting with it at
// once resumes without waiting for a write (issue 14, defect 3); and it is
// exact: the snapshot holds every change before it, resuming from it gives
// every change after it. The snapshot may be taken while the feed's fn
// still holds m1's batch, before the store records that point; the
// position is then the feed's previous point, or Head's high-water mark at
// the last applied time: either way not ahead, and exact.
func TestMongoRealSnapshotPosition(t *testing.T) {
	r := realServer(t)
	s := r.open(t)
	const room = "snap"
	f := follow(t, s, head(t, s), 0)
	m1 := post(t, s, room, "m1")
	f.waitFor(t, "m1", hasMessage(m1.ID))

	snaps, pos, err := s.Snapshot(ctxWait(t), []string{store.RoomTopic(room)})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	applied, ok := lastApplied(t, r)
	if len(snaps) != 1 {
		t.Fatalf("snapshot = %+v, want the room", snaps)
	}
	var inSnapshot []string
	for _, m := range snaps[0].Messages {
		inSnapshot = append(inSnapshot, m.Text)
	}
	if ok && positionTime(t, pos).After(applied) {
		t.Errorf("the snapshot's position %s is at %v, after the newest oplog entry %v: no feed reaches it before the next write or no-op (up to 10 s idle)", pos, positionTime(t, pos), applied)
	}
	started := time.Now()
	f.waitFor(t, "the feed to reach the snapshot's position", func(_ []store.Change, cp string) bool { return s.ComparePositions(cp, pos) >= 0 })
	t.Logf("the running feed reached the snapshot's position after %v", time.Since(started))

	m2 := post(t, s, room, "m2")
	_, until := f.waitFor(t, "m2", hasMessage(m2.ID))
	got, err := catchUp(t, s, []string{store.RoomTopic(room)}, pos, until)
	if err != nil {
		t.Fatalf("CatchUp from the snapshot's position: %v", err)
	}
	want := []string{"m1", "m2"}
	if all := slices.Concat(inSnapshot, texts(got, room)); !slices.Equal(all, want) {
		t.Errorf("the snapshot holds %q and CatchUp from its position gives %q; together %q, want %q (each once):%s", inSnapshot, texts(got, room), all, want, describe(got))
	}
	other := follow(t, r.open(t), pos, 0)
	got, _ = other.waitFor(t, "m2 from the snapshot's position", hasMessage(m2.ID))
	if all := slices.Concat(inSnapshot, texts(got, room)); !slices.Equal(all, want) {
		t.Errorf("the snapshot holds %q and Follow from its position gives %q; together %q, want %q:%s", inSnapshot, texts(got, room), all, want, describe(got))
	}
}

// TestMongoRealRestartQuiet: a feed restarted from the last event's id on
// a quiet database reads nothing new, and its quiet checkpoint (a
// high-water mark at the last applied time) sorts before that id, so it
// has no exact point of its own until the next oplog entry (item 4). A
// snapshot meanwhile must hand out a position the restarted feed reaches
// without that entry: not after the newest oplog entry, and reached by the
// feed while the newest entry is still the same.
func TestMongoRealRestartQuiet(t *testing.T) {
	r := realServer(t)
	s := r.open(t)
	const room = "restart"
	f := follow(t, s, head(t, s), 0)
	m1 := post(t, s, room, "m1")
	changes, _ := f.waitFor(t, "m1", hasMessage(m1.ID))
	last := changes[len(changes)-1].Pos

	other := r.open(t) // another process, its feed restarted from m1's id
	g := follow(t, other, last, 0)
	g.waitFor(t, "the restarted feed to open", func(_ []store.Change, cp string) bool { return other.ComparePositions(cp, last) >= 0 })
	snaps, pos, err := other.Snapshot(ctxWait(t), []string{store.RoomTopic(room)})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	before, ok := lastApplied(t, r)
	if !ok {
		t.Fatalf("this test needs to read local.oplog.rs")
	}
	if positionTime(t, pos).After(before) {
		t.Errorf("the snapshot's position %s is at %v, after the newest oplog entry %v", pos, positionTime(t, pos), before)
	}
	g.waitFor(t, "the restarted feed to reach the snapshot's position", func(_ []store.Change, cp string) bool { return other.ComparePositions(cp, pos) >= 0 })
	if after, _ := lastApplied(t, r); after != before {
		t.Logf("an oplog entry was written (%v, then %v) before the feed reached the snapshot's position: the check that it needs none is inconclusive this run", before, after)
	}
	if len(snaps) != 1 {
		t.Fatalf("snapshot = %+v, want the room", snaps)
	}
	var inSnapshot []string
	for _, m := range snaps[0].Messages {
		inSnapshot = append(inSnapshot, m.Text)
	}
	// A client reconnecting with pos is behind this feed (which started
	// after m1) or at it: it catches up from the database to the feed.
	m2 := post(t, s, room, "m2")
	_, until := g.waitFor(t, "m2 on the restarted feed", hasMessage(m2.ID))
	got, err := catchUp(t, other, []string{store.RoomTopic(room)}, pos, until)
	if err != nil {
		t.Fatalf("CatchUp from the snapshot's position: %v", err)
	}
	if all, want := slices.Concat(inSnapshot, texts(got, room)), []string{"m1", "m2"}; !slices.Equal(all, want) {
		t.Errorf("the snapshot holds %q and CatchUp from its position %q; together %q, want %q:%s", inSnapshot, texts(got, room), all, want, describe(got))
	}
}

// changeStreamsParsed returns how many $changeStream stages the server has
// parsed since it started, or false if serverStatus does not tell.
func changeStreamsParsed(t *testing.T, r *realDB) (int64, bool) {
	t.Helper()
	var status bson.Raw
	err := r.raw.Database("admin").RunCommand(ctxWait(t), bson.D{{Key: "serverStatus", Value: 1}}).Decode(&status)
	if err != nil {
		t.Logf("serverStatus: %v", err)
		return 0, false
	}
	v, err := status.LookupErr("metrics", "aggStageCounters", "$changeStream")
	if err != nil {
		return 0, false
	}
	n, ok := v.AsInt64OK()
	return n, ok
}

// TestMongoRealSnapshotOpensNoStream: with the feed running, snapshots take
// their position without opening a change stream each (issue 14, defect 1),
// counted by the server's own aggregation stage counter.
func TestMongoRealSnapshotOpensNoStream(t *testing.T) {
	r := realServer(t)
	s := r.open(t)
	const room = "count"
	f := follow(t, s, head(t, s), 0)
	m := post(t, s, room, "m")
	f.waitFor(t, "m", hasMessage(m.ID))

	// The count this test relies on (not a skip: a skip here would pass
	// the workflow without checking anything).
	c0, ok := changeStreamsParsed(t, r)
	if !ok {
		t.Fatalf("serverStatus has no metrics.aggStageCounters.$changeStream for this user: the count this test relies on")
	}
	// Calibrate: one change stream of the test's own must count.
	cs, err := r.db.Watch(ctxWait(t), mongodrv.Pipeline{})
	if err != nil {
		t.Fatalf("open a change stream: %v", err)
	}
	_ = cs.Close(ctxWait(t))
	c1, _ := changeStreamsParsed(t, r)
	if c1 <= c0 {
		t.Fatalf("opening a change stream left the server's $changeStream counter at %d: the count this test relies on", c1)
	}
	const snapshots = 20
	for range snapshots {
		if _, _, err := s.Snapshot(ctxWait(t), []string{store.RoomTopic(room)}); err != nil {
			t.Fatalf("Snapshot: %v", err)
		}
		// What a /metrics scrape reads.
		if _, _, running := s.SeenHead(); !running {
			t.Fatal("SeenHead: the feed is not running")
		}
	}
	c2, _ := changeStreamsParsed(t, r)
	// A failed Follow restarts its stream (once per error).
	if opened := c2 - c1; opened > int64(len(f.errors())) {
		t.Errorf("%d snapshots and SeenHead calls opened %d change streams (Follow restarted %d times); want none (the position comes from the running feed)", snapshots, opened, len(f.errors()))
	}
}

// TestMongoRealCatchUpFilter: the server accepts the catch-up filter, the
// catch-up resumes (SERVER-71565: the token's own event must pass the
// filter) and gives exactly the topics' changes. With the profiler
// allowed, the catch-up's pipeline is explained and its plan logged, to
// read what the server pushes into the oplog scan (issue 14, defect 4).
func TestMongoRealCatchUpFilter(t *testing.T) {
	r := realServer(t)
	s := r.open(t)
	if err := r.db.RunCommand(ctxWait(t), bson.D{{Key: "profile", Value: 2}}).Err(); err != nil {
		t.Fatalf("turn the profiler on (the explain below reads the catch-up's pipeline from it): %v", err)
	}
	const room, otherRoom = "filter-room", "filter-other"
	after := head(t, s)
	f := follow(t, s, after, 0)
	o, err := s.CreateOrder(ctxWait(t), "alice", []store.Item{{SKU: "pizza", Qty: 1}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.CreateOrder(ctxWait(t), "bob", []store.Item{{SKU: "soup", Qty: 2}})
	if err != nil {
		t.Fatal(err)
	}
	post(t, s, otherRoom, "not this")
	post(t, s, room, "r1")
	if _, err := s.UpdateOrderStatus(ctxWait(t), other.ID, store.StatusPreparing, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateOrderStatus(ctxWait(t), o.ID, store.StatusPreparing, 0); err != nil {
		t.Fatal(err)
	}
	last := post(t, s, room, "r2")
	all, _ := f.waitFor(t, "r2", hasMessage(last.ID))
	until := all[len(all)-1].Pos

	topics := []string{store.OrderTopic(o.ID), store.RoomTopic(room)}
	var want []store.Change
	for _, c := range all {
		if slices.Contains(topics, c.Topic) {
			want = append(want, c)
		}
	}
	got, err := catchUp(t, s, topics, after, until)
	if err != nil {
		t.Fatalf("CatchUp: %v", err)
	}
	if !samePositions(got, want) {
		t.Errorf("CatchUp gave%s\nwant%s", describe(got), describe(want))
	}
	// From the middle: the position of an event the filter drops.
	mid := all[2].Pos // "not this"
	got, err = catchUp(t, s, topics, mid, until)
	if err != nil {
		t.Fatalf("CatchUp from an event of another topic: %v", err)
	}
	var wantMid []store.Change
	for _, c := range want {
		if s.ComparePositions(c.Pos, mid) > 0 {
			wantMid = append(wantMid, c)
		}
	}
	if !samePositions(got, wantMid) {
		t.Errorf("CatchUp from an event of another topic gave%s\nwant%s", describe(got), describe(wantMid))
	}
	explainCatchUp(t, r, room)
}

func samePositions(a, b []store.Change) bool {
	return slices.EqualFunc(a, b, func(x, y store.Change) bool { return x.Pos == y.Pos && x.Topic == y.Topic })
}

// explainCatchUp finds the catch-up's aggregate (the one whose pipeline
// names room) in the profiler, explains it and checks that the server
// pushed the catch-up's collection filter into its oplog scan: the
// filter of the $_internalChangeStreamOplogMatch stage names both
// collections (without the push-down it names only the database).
func explainCatchUp(t *testing.T, r *realDB, room string) {
	t.Helper()
	ctx := ctxWait(t)
	cur, err := r.db.Collection("system.profile").Find(ctx, bson.D{{Key: "command.aggregate", Value: bson.D{{Key: "$exists", Value: true}}}})
	if err != nil {
		t.Fatalf("read the profiler: %v", err)
	}
	var entries []struct {
		Command bson.Raw `bson:"command"`
	}
	if err := cur.All(ctx, &entries); err != nil {
		t.Fatalf("read the profiler: %v", err)
	}
	var pipeline bson.RawValue
	for _, e := range entries {
		p := e.Command.Lookup("pipeline")
		if strings.Contains(p.String(), room) {
			pipeline = p
		}
	}
	if pipeline.Type == 0 {
		t.Fatalf("the profiler holds no aggregate naming %s", room)
	}
	var plan bson.Raw
	err = r.db.RunCommand(ctx, bson.D{
		{Key: "explain", Value: bson.D{{Key: "aggregate", Value: 1}, {Key: "pipeline", Value: pipeline}, {Key: "cursor", Value: bson.D{}}}},
		{Key: "verbosity", Value: "queryPlanner"},
	}).Decode(&plan)
	if err != nil {
		t.Fatalf("explain the catch-up pipeline %s: %v", pipeline, err)
	}
	filter, ok := oplogMatch(plan)
	if !ok {
		t.Fatalf("the explain of the catch-up pipeline has no $_internalChangeStreamOplogMatch stage: %.8000s", plan.String())
	}
	for _, coll := range []string{"orders", "messages"} {
		if !strings.Contains(filter, coll) {
			t.Errorf("the oplog scan's filter does not name %s: the catch-up's ns.coll clause was not pushed down: %.4000s", coll, filter)
		}
	}
	t.Logf("oplog scan filter: %.4000s", filter)
}

// oplogMatch returns the filter of the first $_internalChangeStreamOplogMatch
// stage found anywhere in an explain's output.
func oplogMatch(doc bson.Raw) (string, bool) {
	elems, err := doc.Elements()
	if err != nil {
		return "", false
	}
	for _, e := range elems {
		v := e.Value()
		if e.Key() == "$_internalChangeStreamOplogMatch" {
			return v.String(), true
		}
		switch v.Type {
		case bson.TypeEmbeddedDocument:
			if f, ok := oplogMatch(v.Document()); ok {
				return f, true
			}
		case bson.TypeArray:
			if f, ok := oplogMatch(bson.Raw(v.Array())); ok {
				return f, true
			}
		}
	}
	return "", false
}

// setLarge $sets a field of ~15 MiB on the order with id, as someone
// else (an operator) would: its update event carries the field in
// updateDescription, and with updateLookup in fullDocument again, over the
// 16 MB a batch may hold.
func setLarge(t *testing.T, r *realDB, id string) {
	t.Helper()
	oid, err := bson.ObjectIDFromHex(id)
	if err != nil {
		t.Fatal(err)
	}
	blob := strings.Repeat("x", 15<<20)
	res, err := r.db.Collection("orders").UpdateOne(ctxWait(t), bson.D{{Key: "_id", Value: oid}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "blob", Value: blob}}}})
	if err != nil {
		t.Fatalf("$set a 15 MiB field on the order: %v", err)
	}
	if res.MatchedCount != 1 {
		t.Fatalf("$set a 15 MiB field on the order matched %d documents, want 1", res.MatchedCount)
	}
}

// checkLargeDelivered fails unless changes hold, in order, the order's
// insert, its large update (as version 1: the $set did not touch the
// version) and the message m, and Follow never had to restart.
func checkLargeDelivered(t *testing.T, what string, changes []store.Change, order string, m store.Message) {
	t.Helper()
	var got []string
	for _, c := range changes {
		switch {
		case c.Order != nil && c.Order.ID == order:
			got = append(got, fmt.Sprintf("%s v%d", c.Op, c.Order.Version))
		case c.Message != nil && c.Message.ID == m.ID:
			got = append(got, "message")
		}
	}
	if want := []string{"insert v1", "update v1", "message"}; !slices.Equal(got, want) {
		t.Errorf("%s: got %q, want %q:%s", what, got, want, describe(changes))
	}
}

// TestMongoRealLargeEvent: someone else $sets a field of ~15 MiB on an
// order while the feed runs. The feed never wedges on it: it asks no
// updateLookup, projects updateDescription away and splits what is still
// too large, so it delivers the update (the document read at the event's
// time) and later writes, with no restart; a catch-up over it, which reads
// events the same way, gives the same changes with the same ids and
// versions.
func TestMongoRealLargeEvent(t *testing.T) {
	r := realServer(t)
	s := r.open(t)
	const room = "large"
	after := head(t, s)
	f := follow(t, s, after, 0)
	o, err := s.CreateOrder(ctxWait(t), "alice", []store.Item{{SKU: "pizza", Qty: 1}})
	if err != nil {
		t.Fatal(err)
	}
	setLarge(t, r, o.ID)
	m := post(t, s, room, "after the large event")
	all, until := f.waitFor(t, "the message after the large event", hasMessage(m.ID))
	if errs := f.errors(); len(errs) > 0 {
		t.Errorf("Follow returned %v; want it to read past the large event by itself", errs)
	}
	checkLargeDelivered(t, "Follow", all, o.ID, m)
	checkCaughtUpAsLive(t, s, all, after, until, o.ID, m, room)
}

// checkCaughtUpAsLive fails unless catch-ups from after to until over
// the large event give what the feed gave live (all): on the order's and
// the room's topics the same changes, with the same ids, ops and
// versions (the update as version 1, read at its own time, as the feed
// read it); on the room alone the message alone, its id the feed's.
func checkCaughtUpAsLive(t *testing.T, s *mongo.Store, all []store.Change, after, until, order string, m store.Message, room string) {
	t.Helper()
	topics := []string{store.OrderTopic(order), store.RoomTopic(room)}
	var live []store.Change
	for _, c := range all {
		if slices.Contains(topics, c.Topic) {
			live = append(live, c)
		}
	}
	got, err := catchUp(t, s, topics, after, until)
	if err != nil {
		t.Fatalf("CatchUp over the large event: %v", err)
	}
	checkLargeDelivered(t, "CatchUp", got, order, m)
	if describe(got) != describe(live) {
		t.Errorf("CatchUp over the large event gave%s\nwant what the feed gave%s", describe(got), describe(live))
	}
	got, err = catchUp(t, s, []string{store.RoomTopic(room)}, after, until)
	if err != nil {
		t.Fatalf("CatchUp of the room over the large event: %v", err)
	}
	if len(got) != 1 || got[0].Message == nil || got[0].Message.ID != m.ID || got[0].Pos != live[len(live)-1].Pos {
		t.Errorf("CatchUp of the room over the large event gave%s; want the message alone, at the feed's id %s", describe(got), live[len(live)-1].Pos)
	}
}

// TestMongoRealLargeEventAtWatch: the large event is already in the log
// when the feed opens its stream from a position before it, so the server
// meets it while it fills the opening aggregate's first batch. A plain
// change stream with updateLookup fails there with 10334 (the server
// behaviour the feed's handling rests on); the feed's Follow from the same
// position delivers the update and the later message, and a catch-up
// from it the same changes.
func TestMongoRealLargeEventAtWatch(t *testing.T) {
	r := realServer(t)
	s := r.open(t)
	const room = "large-at-watch"
	after := head(t, s)
	o, err := s.CreateOrder(ctxWait(t), "alice", []store.Item{{SKU: "pizza", Qty: 1}})
	if err != nil {
		t.Fatal(err)
	}
	setLarge(t, r, o.ID)
	m := post(t, s, room, "after the large event")

	ctx := ctxWait(t)
	cs, err := r.db.Watch(ctx, mongodrv.Pipeline{}, options.ChangeStream().
		SetResumeAfter(bson.D{{Key: "_data", Value: after}}).
		SetFullDocument(options.UpdateLookup).
		SetMaxAwaitTime(100*time.Millisecond))
	where := "the opening aggregate"
	if err == nil {
		where = "a getMore"
		for cs.TryNext(ctx) {
		}
		err = cs.Err()
		_ = cs.Close(context.WithoutCancel(ctx))
	}
	var se mongodrv.ServerError
	if !errors.As(err, &se) || !se.HasErrorCode(10334) {
		t.Fatalf("a change stream with updateLookup over the large event: got %v, want 10334 BSONObjectTooLarge", err)
	}
	t.Logf("the server raised 10334 in %s: %v", where, err)

	f := follow(t, s, after, 0)
	all, until := f.waitFor(t, "the message after the large event", hasMessage(m.ID))
	if errs := f.errors(); len(errs) > 0 {
		t.Errorf("Follow returned %v; want it to open past the large event by itself", errs)
	}
	checkLargeDelivered(t, "Follow", all, o.ID, m)
	checkCaughtUpAsLive(t, s, all, after, until, o.ID, m, room)
}
