package store

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// How change events carry documents.
//
// The streams ask for fullDocument "updateLookup". changecast itself never
// sends $set updates: it inserts orders and messages and replaces a whole
// order on a status change, and insert and replace events always carry the
// document exactly as written, straight from the oplog, with no lookup. So
// every process reading the same event gets the same payload, however late
// it reads it, and nothing needs MongoDB 6.0's pre- and post-images (which
// must be enabled per collection with collMod and cost oplog-side storage).
// updateLookup only matters for $set updates made by someone else (an
// operator in mongosh): their events then carry the document as it is when
// the event is read, which may already include later changes; an event
// whose document has been deleted since is skipped (its delete follows).
// Message deletes are skipped too: a delete event names only the _id, so
// its room is unknown.

// Server error codes the change streams map.
const (
	mongoCodeBadValue             = 2
	mongoCodeFailedToParse        = 9
	mongoCodeCappedPositionLost   = 136
	mongoCodeSnapshotTooOld       = 239
	mongoCodeSnapshotUnavailable  = 246
	mongoCodeInvalidResumeToken   = 260
	mongoCodeChangeStreamFatal    = 280
	mongoCodeChangeStreamHistLost = 286
)

// mongoSnapshotAttempts bounds how often Snapshot starts over when the
// server no longer holds the history its read needs.
const mongoSnapshotAttempts = 3

// mongoCatchUpAwait paces the empty getMores of a catch-up stream waiting
// for its post-batch token to reach the end of the catch-up. It is the
// server's await time, not a deadline: delivery is never delayed by it.
const mongoCatchUpAwait = 200 * time.Millisecond

// mongoMaxPosition is the longest position accepted, in bytes.
const mongoMaxPosition = 512

// A resume token's _data is the hex of a KeyString that starts with the
// event's cluster time: the Timestamp type byte 0x82 and 8 bytes of time.
// The server writes upper-case hex; only that compares bytewise like the
// log, so lower case is refused.
var mongoPositionRE = regexp.MustCompile(`^82[0-9A-F]{16}(?:[0-9A-F]{2})*$`)

// CheckPosition returns an error wrapping ErrInvalidPosition unless pos has
// the shape of a MongoDB resume token's _data: upper-case hex of a KeyString
// starting with a timestamp, at most 512 bytes. It does not ask the server.
func (m *Mongo) CheckPosition(pos string) error {
	if len(pos) > mongoMaxPosition || !mongoPositionRE.MatchString(pos) {
		return fmt.Errorf("position %.40q: %w", pos, ErrInvalidPosition)
	}
	return nil
}

// mongoPositionTime returns the cluster time at the start of a position.
func mongoPositionTime(pos string) (bson.Timestamp, error) {
	if !mongoPositionRE.MatchString(pos) {
		return bson.Timestamp{}, fmt.Errorf("position %.40q: %w", pos, ErrInvalidPosition)
	}
	b, err := hex.DecodeString(pos[2:18])
	if err != nil {
		return bson.Timestamp{}, fmt.Errorf("position %.40q: %w", pos, ErrInvalidPosition)
	}
	return bson.Timestamp{T: binary.BigEndian.Uint32(b[:4]), I: binary.BigEndian.Uint32(b[4:])}, nil
}

// mongoTimestampBefore returns the latest timestamp strictly before ts.
func mongoTimestampBefore(ts bson.Timestamp) bson.Timestamp {
	if ts.I > 0 {
		return bson.Timestamp{T: ts.T, I: ts.I - 1}
	}
	return bson.Timestamp{T: ts.T - 1, I: ^uint32(0)}
}

// mongoToken is a resume token as the change stream options take it.
func mongoToken(pos string) bson.D { return bson.D{{Key: "_data", Value: pos}} }

// mongoTokenData returns a token document's _data, or "".
func mongoTokenData(tok bson.Raw) string {
	if tok == nil {
		return ""
	}
	s, _ := tok.Lookup("_data").StringValueOK()
	return s
}

// mongoFeedPipeline keeps the events of the two collections, and an
// invalidate (which names no collection) so that Follow can start again
// after it.
func mongoFeedPipeline() bson.A {
	return bson.A{bson.D{{Key: "$match", Value: bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$in", Value: bson.A{mongoOrders, mongoMessages}}}}},
		bson.D{{Key: "operationType", Value: "invalidate"}},
	}}}}}}
}

// mongoEvent is the part of a change event the store reads. Decoding it
// copies what it keeps out of the driver's buffer.
type mongoEvent struct {
	ID struct {
		Data string `bson:"_data"`
	} `bson:"_id"`
	OperationType string         `bson:"operationType"`
	ClusterTime   bson.Timestamp `bson:"clusterTime"`
	WallTime      time.Time      `bson:"wallTime"`
	NS            struct {
		Coll string `bson:"coll"`
	} `bson:"ns"`
	DocumentKey struct {
		ID bson.RawValue `bson:"_id"`
	} `bson:"documentKey"`
	FullDocument bson.RawValue `bson:"fullDocument"`
}

// mongoDecode reads one change event. It returns the event's position, its
// operation type, and the Change it makes with ok true, or ok false for an
// event the store skips (other operations, a missing document, a message
// delete). Only an event without a usable resume token is an error.
func mongoDecode(raw bson.Raw) (pos, op string, ch Change, ok bool, err error) {
	var ev mongoEvent
	if err := bson.Unmarshal(raw, &ev); err != nil {
		return "", "", Change{}, false, fmt.Errorf("decode change event: %w", err)
	}
	pos = ev.ID.Data
	if pos == "" {
		return "", "", Change{}, false, errors.New("decode change event: no _id._data resume token")
	}
	op = ev.OperationType
	ch = Change{Pos: pos, Op: op, Time: ev.WallTime.UTC()}
	if ev.WallTime.IsZero() { // servers before 6.0 send only clusterTime
		ch.Time = time.Unix(int64(ev.ClusterTime.T), 0).UTC()
	}
	hasDoc := ev.FullDocument.Type == bson.TypeEmbeddedDocument
	switch {
	case ev.NS.Coll == mongoOrders && op == OpDelete:
		oid, isOID := ev.DocumentKey.ID.ObjectIDOK()
		if !isOID {
			return pos, op, Change{}, false, nil
		}
		ch.Topic = OrderTopic(oid.Hex())
		ch.Order = &Order{ID: oid.Hex()}
		return pos, op, ch, true, nil
	case ev.NS.Coll == mongoOrders && (op == OpInsert || op == OpUpdate || op == OpReplace) && hasDoc:
		var doc mongoOrderDoc
		if err := ev.FullDocument.Unmarshal(&doc); err != nil {
			return pos, op, Change{}, false, nil // not an order changecast wrote
		}
		o := doc.order()
		ch.Topic = OrderTopic(o.ID)
		ch.Order = &o
		return pos, op, ch, true, nil
	case ev.NS.Coll == mongoMessages && (op == OpInsert || op == OpUpdate || op == OpReplace) && hasDoc:
		var doc mongoMessageDoc
		if err := ev.FullDocument.Unmarshal(&doc); err != nil || !ValidRoom(doc.Room) {
			return pos, op, Change{}, false, nil
		}
		msg := doc.message()
		ch.Topic = RoomTopic(msg.Room)
		ch.Message = &msg
		return pos, op, ch, true, nil
	}
	return pos, op, Change{}, false, nil
}

// mongoServerCode reports whether err is a server error with one of codes.
func mongoServerCode(err error, codes ...int) bool {
	var se mongo.ServerError
	if !errors.As(err, &se) {
		return false
	}
	for _, c := range codes {
		if se.HasErrorCode(c) {
			return true
		}
	}
	return false
}

// streamErr maps an error of a change stream that started at pos.
func (m *Mongo) streamErr(ctx context.Context, what, pos string, err error) error {
	switch {
	case m.done.Err() != nil:
		return fmt.Errorf("%s: %w", what, ErrClosed)
	case ctx.Err() != nil:
		return ctx.Err()
	case mongoServerCode(err, mongoCodeChangeStreamHistLost, mongoCodeChangeStreamFatal, mongoCodeCappedPositionLost):
		return fmt.Errorf("%s after %.40s: %v: %w", what, pos, err, ErrHistoryLost)
	case pos != "" && mongoServerCode(err, mongoCodeInvalidResumeToken, mongoCodeBadValue, mongoCodeFailedToParse):
		return fmt.Errorf("%s after %.40s: %v: %w", what, pos, err, ErrInvalidPosition)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// closeStream closes a change stream (killCursors) even when ctx has ended.
func closeStream(ctx context.Context, cs *mongo.ChangeStream) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mongoCloseTimeout)
	defer cancel()
	_ = cs.Close(ctx)
}

// Head returns the position of now: the post-batch resume token of a change
// stream opened just for this, before any event. Following from it gives
// every change committed after it.
func (m *Mongo) Head(ctx context.Context) (string, error) {
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return "", fmt.Errorf("head: %w", err)
	}
	defer end()
	return m.head(ctx)
}

func (m *Mongo) head(ctx context.Context) (string, error) {
	// batchSize 0: the first batch is empty, so the token cached is the
	// server's high-water mark for now, never an event's.
	cs, err := m.db.Watch(ctx, mongoFeedPipeline(), options.ChangeStream().SetBatchSize(0))
	if err != nil {
		return "", m.streamErr(ctx, "head", "", err)
	}
	defer closeStream(ctx, cs)
	pos := mongoTokenData(cs.ResumeToken())
	if pos == "" {
		return "", errors.New("head: the server sent no post-batch resume token (MongoDB 4.0.7 or later is needed)")
	}
	return pos, nil
}

// Follow calls fn with every change after position after, in log order,
// until ctx ends (it returns ctx.Err()), the store is closed (ErrClosed), fn
// returns an error (returned as is) or the stream fails. It first calls fn
// with Batch{Checkpoint: after} once its change stream is open.
//
// Follow opens one database-level change stream over orders and messages
// on the store's feed client, resuming after after. A change's Pos is its
// event's own resume token; when a getMore brings nothing new, fn gets an
// empty batch whose checkpoint is the stream's post-batch token, so that
// quiet periods move the checkpoint too. On invalidate (the database was
// dropped or renamed) the stream starts again after the invalidate event.
// When after is older than the oplog it returns an error wrapping
// ErrHistoryLost, when the server rejects it one wrapping ErrInvalidPosition.
// Resumable errors are retried once by the driver; if that fails Follow
// returns the error and the caller starts again from its last checkpoint.
func (m *Mongo) Follow(ctx context.Context, after string, fn func(Batch) error) error {
	if err := m.CheckPosition(after); err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	defer end()

	opts := options.ChangeStream().SetFullDocument(options.UpdateLookup).SetResumeAfter(mongoToken(after))
	cs, err := m.feedDB.Watch(ctx, mongoFeedPipeline(), opts)
	if err != nil {
		return m.streamErr(ctx, "follow", after, err)
	}
	defer func() { closeStream(ctx, cs) }()
	if err := fn(Batch{Checkpoint: after}); err != nil {
		return err
	}

	checkpoint := after
	var changes []Change
	for {
		if !cs.TryNext(ctx) {
			if err := cs.Err(); err != nil {
				return m.streamErr(ctx, "follow", checkpoint, err)
			}
			if cs.ID() == 0 {
				return fmt.Errorf("follow: the server closed the change stream after %.40s", checkpoint)
			}
			// An empty getMore: the post-batch token is where the
			// stream has read to.
			if tok := mongoTokenData(cs.ResumeToken()); tok > checkpoint {
				checkpoint = tok
				if err := fn(Batch{Checkpoint: checkpoint}); err != nil {
					return err
				}
			}
			continue
		}
		// Decode now: Current is only valid until the next call.
		pos, op, ch, ok, err := mongoDecode(cs.Current)
		if err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		if op == "invalidate" {
			if len(changes) > 0 {
				if err := fn(Batch{Changes: changes, Checkpoint: checkpoint}); err != nil {
					return err
				}
				changes = nil
			}
			// The invalidate token is no position to resume after
			// (resumeAfter refuses it); startAfter accepts it.
			m.log.Warn("change stream invalidated; starting after it", "pos", pos)
			closeStream(ctx, cs)
			opts := options.ChangeStream().SetFullDocument(options.UpdateLookup).SetStartAfter(mongoToken(pos))
			if cs, err = m.feedDB.Watch(ctx, mongoFeedPipeline(), opts); err != nil {
				return m.streamErr(ctx, "follow after invalidate", checkpoint, err)
			}
			continue
		}
		if pos > checkpoint {
			checkpoint = pos
		}
		if ok {
			changes = append(changes, ch)
		}
		if cs.RemainingBatchLength() > 0 {
			continue
		}
		// The end of the server's batch: hand it over.
		if err := fn(Batch{Changes: changes, Checkpoint: checkpoint}); err != nil {
			return err
		}
		changes = nil
	}
}

// CatchUp calls fn, in log order, with each change on one of topics whose
// position p has after < p <= until. It returns an error wrapping ErrInvalid
// for a malformed topic, ErrInvalidPosition for a malformed or rejected
// position and ErrHistoryLost when after is older than the oplog.
//
// It opens a short-lived change stream resuming after after, filtered on
// fields that never change: an order's _id and a message's room. Since
// MongoDB 6.0 a resume fails when the filter drops the resume token's own
// event (SERVER-71565), so the filter also keeps the events whose token is
// after or until; the first is swallowed by the server's resume, the second
// ends the catch-up at once. It stops at the first event past until, or
// when the stream's post-batch token reaches until. At most
// MongoOptions.CatchUps catch-ups run at once; others wait for a slot.
func (m *Mongo) CatchUp(ctx context.Context, topics []string, after, until string, fn func(Change) error) error {
	if err := m.CheckPosition(after); err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	if err := m.CheckPosition(until); err != nil {
		return fmt.Errorf("catch up: until: %w", err)
	}
	wanted := make(map[string]bool, len(topics))
	var orderIDs bson.A
	var rooms bson.A
	for _, t := range topics {
		kind, key, ok := ParseTopic(t)
		if !ok {
			return fmt.Errorf("catch up: topic %q: %w", t, ErrInvalid)
		}
		if wanted[t] {
			continue
		}
		wanted[t] = true
		if kind == "orders" {
			oid, _ := bson.ObjectIDFromHex(key)
			orderIDs = append(orderIDs, oid)
		} else {
			rooms = append(rooms, key)
		}
	}
	if after >= until || len(wanted) == 0 {
		return nil
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	defer end()
	select {
	case m.catchUps <- struct{}{}:
		defer func() { <-m.catchUps }()
	case <-ctx.Done():
		return m.streamErr(ctx, "catch up", after, ctx.Err())
	}

	or := bson.A{bson.D{{Key: "_id._data", Value: bson.D{{Key: "$in", Value: bson.A{after, until}}}}}}
	if len(orderIDs) > 0 {
		or = append(or, bson.D{
			{Key: "ns.coll", Value: mongoOrders},
			{Key: "documentKey._id", Value: bson.D{{Key: "$in", Value: orderIDs}}},
		})
	}
	if len(rooms) > 0 {
		or = append(or, bson.D{
			{Key: "ns.coll", Value: mongoMessages},
			{Key: "fullDocument.room", Value: bson.D{{Key: "$in", Value: rooms}}},
		})
	}
	pipeline := bson.A{bson.D{{Key: "$match", Value: bson.D{{Key: "$or", Value: or}}}}}
	opts := options.ChangeStream().
		SetFullDocument(options.UpdateLookup).
		SetResumeAfter(mongoToken(after)).
		SetMaxAwaitTime(mongoCatchUpAwait)
	cs, err := m.db.Watch(ctx, pipeline, opts)
	if err != nil {
		return m.streamErr(ctx, "catch up", after, err)
	}
	defer closeStream(ctx, cs)
	for {
		if !cs.TryNext(ctx) {
			if err := cs.Err(); err != nil {
				return m.streamErr(ctx, "catch up", after, err)
			}
			if cs.ID() == 0 {
				return fmt.Errorf("catch up: the change stream ended before %.40s: %w", until, ErrHistoryLost)
			}
			if mongoTokenData(cs.ResumeToken()) >= until {
				return nil
			}
			continue
		}
		pos, _, ch, ok, err := mongoDecode(cs.Current)
		if err != nil {
			return fmt.Errorf("catch up: %w", err)
		}
		if pos <= after {
			continue
		}
		if pos > until {
			return nil
		}
		if ok && wanted[ch.Topic] {
			if err := fn(ch); err != nil {
				return err
			}
		}
		if pos == until {
			return nil
		}
	}
}

// Snapshot returns the current state of each topic, in the order given, and
// the position it reflects: the state holds every change before that
// position and none after it, so following from the position gives exactly
// the changes the snapshot lacks. It returns an error wrapping ErrInvalid
// for a malformed topic.
//
// The position is taken first, as Head takes it: the post-batch token of a
// fresh change stream, a high-water mark at cluster time T that sorts
// before every event at T or later. The state is then read in a snapshot
// session at cluster time T-1 (readConcern snapshot with atClusterTime,
// MongoDB 5.0 or later), which holds exactly the commits before T.
func (m *Mongo) Snapshot(ctx context.Context, topics []string) ([]Snapshot, string, error) {
	for _, t := range topics {
		if _, _, ok := ParseTopic(t); !ok {
			return nil, "", fmt.Errorf("snapshot: topic %q: %w", t, ErrInvalid)
		}
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("snapshot: %w", err)
	}
	defer end()
	for attempt := 1; ; attempt++ {
		pos, err := m.head(ctx)
		if err != nil {
			return nil, "", err
		}
		snaps, err := m.readSnapshot(ctx, topics, pos)
		if err == nil {
			return snaps, pos, nil
		}
		if attempt == mongoSnapshotAttempts || !mongoServerCode(err, mongoCodeSnapshotTooOld, mongoCodeSnapshotUnavailable) {
			return nil, "", m.fail("snapshot", err)
		}
	}
}

// readSnapshot reads topics as of just before position pos.
func (m *Mongo) readSnapshot(ctx context.Context, topics []string, pos string) ([]Snapshot, error) {
	ts, err := mongoPositionTime(pos)
	if err != nil {
		return nil, err
	}
	sess, err := m.client.StartSession(options.Session().
		SetSnapshot(true).
		SetSnapshotTime(mongoTimestampBefore(ts)))
	if err != nil {
		return nil, err
	}
	defer sess.EndSession(context.WithoutCancel(ctx))
	sctx := mongo.NewSessionContext(ctx, sess)

	var ids bson.A
	for _, t := range topics {
		if kind, key, _ := ParseTopic(t); kind == "orders" {
			oid, _ := bson.ObjectIDFromHex(key)
			ids = append(ids, oid)
		}
	}
	orders := make(map[string]Order)
	if len(ids) > 0 {
		cur, err := m.orders.Find(sctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
		if err != nil {
			return nil, err
		}
		var docs []mongoOrderDoc
		if err := cur.All(sctx, &docs); err != nil {
			return nil, err
		}
		for _, d := range docs {
			orders[d.ID.Hex()] = d.order()
		}
	}
	snaps := make([]Snapshot, len(topics))
	for i, t := range topics {
		kind, key, _ := ParseTopic(t)
		snaps[i].Topic = t
		if kind == "orders" {
			if o, ok := orders[key]; ok {
				snaps[i].Order = &o
			}
			continue
		}
		msgs, err := m.lastMessages(sctx, bson.D{{Key: "room", Value: key}}, SnapshotMessages)
		if err != nil {
			return nil, err
		}
		snaps[i].Messages = msgs
	}
	return snaps, nil
}
