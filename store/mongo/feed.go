package mongo

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"changecast/store"
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
	codeBadValue             = 2
	codeFailedToParse        = 9
	codeCappedPositionLost   = 136
	codeSnapshotTooOld       = 239
	codeSnapshotUnavailable  = 246
	codeInvalidResumeToken   = 260
	codeChangeStreamFatal    = 280
	codeChangeStreamHistLost = 286
)

// feedAwait is the maxAwaitTimeMS of the live feed's getMores: how long
// an empty getMore waits on the server before it answers with no event
// and the post-batch token. It never delays an event (a getMore answers
// as soon as it has one); it sets how often a quiet feed moves its
// checkpoint, and so how far one process's quiet positions can be ahead
// of another's feed. That must stay well inside the 5 s a stream waits
// for the feed to reach a client's position, and 1 s does (the server's
// default, set here so that it is a decision, not an accident). It costs
// one getMore a second per process, nothing next to an Atlas M0's ~100
// operations a second; a longer wait would save little and delay quiet
// checkpoints.
const feedAwait = time.Second

// maxPosition is the longest position accepted, in bytes.
const maxPosition = 512

// A resume token's _data is the hex of a KeyString that starts with the
// event's cluster time: the Timestamp type byte 0x82 and 8 bytes of time.
// The server writes upper-case hex; only that compares bytewise like the
// log, so lower case is refused.
var positionRE = regexp.MustCompile(`^82[0-9A-F]{16}(?:[0-9A-F]{2})*$`)

// CheckPosition returns an error wrapping ErrInvalidPosition unless pos has
// the shape of a MongoDB resume token's _data: upper-case hex of a KeyString
// starting with a timestamp, at most 512 bytes. It does not ask the server.
func (m *Store) CheckPosition(pos string) error {
	if len(pos) > maxPosition || !positionRE.MatchString(pos) {
		return fmt.Errorf("position %.40q: %w", pos, store.ErrInvalidPosition)
	}
	return nil
}

// positionTime returns the cluster time at the start of a position.
func positionTime(pos string) (bson.Timestamp, error) {
	if !positionRE.MatchString(pos) {
		return bson.Timestamp{}, fmt.Errorf("position %.40q: %w", pos, store.ErrInvalidPosition)
	}
	b, err := hex.DecodeString(pos[2:18])
	if err != nil {
		return bson.Timestamp{}, fmt.Errorf("position %.40q: %w", pos, store.ErrInvalidPosition)
	}
	return bson.Timestamp{T: binary.BigEndian.Uint32(b[:4]), I: binary.BigEndian.Uint32(b[4:])}, nil
}

// timestampBefore returns the latest timestamp strictly before ts.
func timestampBefore(ts bson.Timestamp) bson.Timestamp {
	if ts.I > 0 {
		return bson.Timestamp{T: ts.T, I: ts.I - 1}
	}
	return bson.Timestamp{T: ts.T - 1, I: ^uint32(0)}
}

// tokenDoc is a resume token as the change stream options take it.
func tokenDoc(pos string) bson.D { return bson.D{{Key: "_data", Value: pos}} }

// tokenData returns a token document's _data, or "".
func tokenData(tok bson.Raw) string {
	if tok == nil {
		return ""
	}
	s, _ := tok.Lookup("_data").StringValueOK()
	return s
}

// feedPipeline keeps the events of the two collections, and an
// invalidate (which names no collection) so that Follow can start again
// after it.
func feedPipeline() bson.A {
	return bson.A{bson.D{{Key: "$match", Value: bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$in", Value: bson.A{ordersCollection, messagesCollection}}}}},
		bson.D{{Key: "operationType", Value: "invalidate"}},
	}}}}}}
}

// changeEvent is the part of a change event the store reads. Decoding it
// copies what it keeps out of the driver's buffer.
type changeEvent struct {
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

// decode reads one change event. It returns the event's position, its
// operation type, and the Change it makes with ok true, or ok false for an
// event the store skips (other operations, a missing document, a message
// delete). Only an event without a usable resume token is an error.
func decode(raw bson.Raw) (pos, op string, ch store.Change, ok bool, err error) {
	var ev changeEvent
	if err := bson.Unmarshal(raw, &ev); err != nil {
		return "", "", store.Change{}, false, fmt.Errorf("decode change event: %w", err)
	}
	pos = ev.ID.Data
	if pos == "" {
		return "", "", store.Change{}, false, errors.New("decode change event: no _id._data resume token")
	}
	op = ev.OperationType
	ch = store.Change{Pos: pos, Op: op, Time: ev.WallTime.UTC()}
	if ev.WallTime.IsZero() { // servers before 6.0 send only clusterTime
		ch.Time = time.Unix(int64(ev.ClusterTime.T), 0).UTC()
	}
	hasDoc := ev.FullDocument.Type == bson.TypeEmbeddedDocument
	switch {
	case ev.NS.Coll == ordersCollection && op == store.OpDelete:
		oid, isOID := ev.DocumentKey.ID.ObjectIDOK()
		if !isOID {
			return pos, op, store.Change{}, false, nil
		}
		ch.Topic = store.OrderTopic(oid.Hex())
		// A delete event names only the _id: the customer, and so its
		// list, is unknown. changecast never deletes an order.
		ch.Lists = []string{store.OrderListTopic}
		ch.Order = &store.Order{ID: oid.Hex()}
		return pos, op, ch, true, nil
	case ev.NS.Coll == ordersCollection && (op == store.OpInsert || op == store.OpUpdate || op == store.OpReplace) && hasDoc:
		var doc orderDoc
		if err := ev.FullDocument.Unmarshal(&doc); err != nil {
			return pos, op, store.Change{}, false, nil // not an order changecast wrote
		}
		o := doc.order()
		ch.Topic = store.OrderTopic(o.ID)
		ch.Lists = store.OrderLists(o.Customer)
		ch.Order = &o
		return pos, op, ch, true, nil
	case ev.NS.Coll == messagesCollection && (op == store.OpInsert || op == store.OpUpdate || op == store.OpReplace) && hasDoc:
		var doc messageDoc
		if err := ev.FullDocument.Unmarshal(&doc); err != nil || !store.ValidRoom(doc.Room) {
			return pos, op, store.Change{}, false, nil
		}
		msg := doc.message()
		ch.Topic = store.RoomTopic(msg.Room)
		ch.Message = &msg
		return pos, op, ch, true, nil
	}
	return pos, op, store.Change{}, false, nil
}

// serverCode reports whether err is a server error with one of codes.
func serverCode(err error, codes ...int) bool {
	var se mongodrv.ServerError
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
func (m *Store) streamErr(ctx context.Context, what, pos string, err error) error {
	switch {
	case m.done.Err() != nil:
		return fmt.Errorf("%s: %w", what, store.ErrClosed)
	case ctx.Err() != nil:
		return ctx.Err()
	case serverCode(err, codeChangeStreamHistLost, codeChangeStreamFatal, codeCappedPositionLost):
		return fmt.Errorf("%s after %.40s: %v: %w", what, pos, err, store.ErrHistoryLost)
	case pos != "" && serverCode(err, codeInvalidResumeToken, codeBadValue, codeFailedToParse):
		return fmt.Errorf("%s after %.40s: %v: %w", what, pos, err, store.ErrInvalidPosition)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// feedOptions are the live feed's change stream options, without the
// position to start from.
func feedOptions() *options.ChangeStreamOptionsBuilder {
	return options.ChangeStream().SetFullDocument(options.UpdateLookup).SetMaxAwaitTime(feedAwait)
}

// closeStream closes a change stream (killCursors) even when ctx has ended.
func closeStream(ctx context.Context, cs *mongodrv.ChangeStream) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	_ = cs.Close(ctx)
}

// Head returns the position of now. While a Follow runs it is the feed's
// latest checkpoint, so it is never ahead of the feed and opens no stream.
// Otherwise it is the post-batch resume token of a change stream opened
// just for this, before any event, in the pool of short-lived streams.
// Following from it gives every change committed after it.
func (m *Store) Head(ctx context.Context) (string, error) {
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return "", fmt.Errorf("head: %w", err)
	}
	defer end()
	if at, ok := m.feedPosition(); ok {
		return at.pos, nil
	}
	return m.head(ctx)
}

// head opens a change stream to read the position of now, in a slot of
// the pool of short-lived streams.
func (m *Store) head(ctx context.Context) (string, error) {
	release, err := m.slot(ctx)
	if err != nil {
		return "", m.streamErr(ctx, "head", "", err)
	}
	defer release()
	// batchSize 0: the first batch is empty, so the token cached is the
	// server's high-water mark for now, never an event's.
	cs, err := m.db.Watch(ctx, feedPipeline(), options.ChangeStream().SetBatchSize(0))
	if err != nil {
		return "", m.streamErr(ctx, "head", "", err)
	}
	defer closeStream(ctx, cs)
	pos := tokenData(cs.ResumeToken())
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
// dropped or renamed) the stream starts again after the invalidate event,
// with startAfter also when the driver's resume tries resumeAfter, and the
// indexes are created again. A change event over 16 MB is read past
// without updateLookup, so that its update is skipped (see
// codeBSONObjectTooLarge).
// When after is older than the oplog it returns an error wrapping
// ErrHistoryLost, when the server rejects it one wrapping ErrInvalidPosition.
// Resumable errors are retried once by the driver; if that fails Follow
// returns the error and the caller starts again from its last checkpoint.
func (m *Store) Follow(ctx context.Context, after string, fn func(store.Batch) error) error {
	if err := m.CheckPosition(after); err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	defer end()

	opts := feedOptions().SetResumeAfter(tokenDoc(after))
	cs, err := m.feedDB.Watch(ctx, feedPipeline(), opts)
	if err != nil {
		return m.streamErr(ctx, "follow", after, err)
	}
	defer func() { closeStream(ctx, cs) }()
	gen := m.startFeed(after)
	defer m.stopFeed(gen)
	if err := fn(store.Batch{Checkpoint: after}); err != nil {
		return err
	}

	checkpoint := after
	var changes []store.Change
	// invalidated is the invalidate token the stream was last started
	// after, until the stream moves past it: while it is set, a resume
	// must use startAfter, which the driver does not do.
	invalidated := ""
	// lookupFrom is the checkpoint at which the stream was reopened
	// without updateLookup past a change event over 16 MB, until it moves
	// past it.
	lookupFrom := ""
	for {
		if !cs.TryNext(ctx) {
			if err := cs.Err(); err != nil {
				var opts *options.ChangeStreamOptionsBuilder
				switch {
				case invalidated != "" && serverCode(err, codeInvalidResumeToken):
					// The driver resumed with resumeAfter the
					// invalidate token, which the server refuses.
					m.log.Warn("change stream resume after invalidate refused; starting after it again", "pos", invalidated, "err", err)
					opts = feedOptions().SetStartAfter(tokenDoc(invalidated))
				case lookupFrom == "" && serverCode(err, codeBSONObjectTooLarge):
					// A change event over 16 MB, an updateLookup of
					// a large document: the server cannot send it, and
					// resuming from the checkpoint would meet it again.
					// Read the next batch without updateLookup (update
					// events then carry no document and are skipped),
					// then go back to it.
					m.log.Warn("change event over 16 MB after the checkpoint; reading the next batch without documents for updates", "after", checkpoint, "err", err)
					lookupFrom = checkpoint
					opts = options.ChangeStream().SetMaxAwaitTime(feedAwait).SetResumeAfter(tokenDoc(checkpoint))
				default:
					return m.streamErr(ctx, "follow", checkpoint, err)
				}
				closeStream(ctx, cs)
				if cs, err = m.feedDB.Watch(ctx, feedPipeline(), opts); err != nil {
					return m.streamErr(ctx, "follow", checkpoint, err)
				}
				continue
			}
			if cs.ID() == 0 {
				return fmt.Errorf("follow: the server closed the change stream after %.40s", checkpoint)
			}
			// An empty getMore: the post-batch token is where the
			// stream has read to.
			// Never the invalidate token itself: resumeAfter refuses it.
			if tok := tokenData(cs.ResumeToken()); tok > max(checkpoint, invalidated) {
				checkpoint, invalidated = tok, ""
				if err := fn(store.Batch{Checkpoint: checkpoint}); err != nil {
					return err
				}
				// A high-water mark: its state is the one just before
				// its cluster time.
				if read, ok := hwmRead(checkpoint); ok {
					m.reached(gen, checkpoint, read)
				}
			}
			continue
		}
		// Decode now: Current is only valid until the next call.
		pos, op, ch, ok, err := decode(cs.Current)
		if err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		if op == "invalidate" {
			if len(changes) > 0 {
				if err := fn(store.Batch{Changes: changes, Checkpoint: checkpoint}); err != nil {
					return err
				}
				changes = nil
			}
			// The invalidate token is no position to resume after
			// (resumeAfter refuses it); startAfter accepts it.
			m.log.Warn("change stream invalidated; starting after it", "pos", pos)
			closeStream(ctx, cs)
			// dropDatabase, the only invalidate of a database's
			// stream, also dropped the indexes: make them again.
			if err := m.createIndexes(ctx); err != nil {
				m.log.Error("indexes not recreated after invalidate", "err", err)
			}
			invalidated = pos
			opts := feedOptions().SetStartAfter(tokenDoc(pos))
			if cs, err = m.feedDB.Watch(ctx, feedPipeline(), opts); err != nil {
				return m.streamErr(ctx, "follow after invalidate", checkpoint, err)
			}
			continue
		}
		// An event of the checkpoint's cluster time in another token
		// version (a failover onto another server version in the middle
		// of a transaction) has no order against it: start over.
		if _, err := comparePositions(pos, checkpoint); err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		if pos > checkpoint {
			checkpoint = pos
		}
		if pos > invalidated {
			invalidated = ""
		}
		if ok {
			changes = append(changes, ch)
		}
		if cs.RemainingBatchLength() > 0 {
			continue
		}
		// The end of the server's batch: hand it over.
		lastInTxn := inTransaction(cs.Current)
		if err := fn(store.Batch{Changes: changes, Checkpoint: checkpoint}); err != nil {
			return err
		}
		changes = nil
		// An event's token: its state is the one at its cluster time,
		// unless later events of its transaction share that time.
		if ts, err := positionTime(checkpoint); err == nil && checkpoint == pos && !lastInTxn {
			m.reached(gen, checkpoint, ts)
		}
		if lookupFrom != "" && checkpoint > lookupFrom {
			// Past the event over 16 MB: documents for updates again.
			lookupFrom = ""
			closeStream(ctx, cs)
			if cs, err = m.feedDB.Watch(ctx, feedPipeline(), feedOptions().SetResumeAfter(tokenDoc(checkpoint))); err != nil {
				return m.streamErr(ctx, "follow", checkpoint, err)
			}
		}
	}
}
