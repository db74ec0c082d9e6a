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
// The feed asks for no updateLookup. changecast itself never sends $set
// updates: it inserts orders and messages and replaces a whole order on a
// status change, and insert and replace events always carry the document
// exactly as written, straight from the oplog. So every process reading the
// same event gets the same payload, however late it reads it. A $set
// update made by someone else (an operator in mongosh) carries no
// document; the feed reads it itself at the event's own cluster time
// (readConcern snapshot with atClusterTime, see postImage), which is the
// document exactly as that change left it. updateLookup would instead give
// the document as it is when the event is read, possibly newer than the
// change, so that a later event could show an older version of an order
// than an earlier one. Only when the server no longer holds that point
// (239 SnapshotTooOld, past minSnapshotHistoryWindowInSeconds, 300 s by
// default, or 246 SnapshotUnavailable across a catalog change) is the
// document read as it is now, as updateLookup would, with a warning in the
// log. An event whose
// document is gone is skipped (its delete follows). Message deletes are
// skipped too: a delete event names only the _id, so its room is unknown.

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
// after it, then ends with the stages of l.
func feedPipeline(l *largeEvents) bson.A {
	match := bson.D{{Key: "$match", Value: bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$in", Value: bson.A{ordersCollection, messagesCollection}}}}},
		bson.D{{Key: "operationType", Value: "invalidate"}},
	}}}}}
	return append(bson.A{match}, l.stages()...)
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

// closeStream closes a change stream (killCursors) even when ctx has ended.
func closeStream(ctx context.Context, cs *mongodrv.ChangeStream) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	_ = cs.Close(ctx)
}

// postImage returns raw with the document as the change left it when raw
// is an update event of orders or messages without one (the feed asks for
// no updateLookup): the document read at the event's cluster time in a
// snapshot session. When the server no longer holds that time it is read
// as it is now (what updateLookup gives). Other events, and an update
// whose document is gone, are returned as they are (decode skips the
// latter).
func (m *Store) postImage(ctx context.Context, raw bson.Raw) (bson.Raw, error) {
	var ev struct {
		Op          string         `bson:"operationType"`
		ClusterTime bson.Timestamp `bson:"clusterTime"`
		NS          struct {
			Coll string `bson:"coll"`
		} `bson:"ns"`
		DocumentKey struct {
			ID bson.RawValue `bson:"_id"`
		} `bson:"documentKey"`
		FullDocument bson.RawValue `bson:"fullDocument"`
	}
	if err := bson.Unmarshal(raw, &ev); err != nil || ev.Op != store.OpUpdate || ev.FullDocument.Type == bson.TypeEmbeddedDocument {
		return raw, nil
	}
	coll := m.orders
	switch ev.NS.Coll {
	case ordersCollection:
	case messagesCollection:
		coll = m.messages
	default:
		return raw, nil
	}
	filter := bson.D{{Key: "_id", Value: ev.DocumentKey.ID}}
	doc, err := m.readAt(ctx, coll, filter, ev.ClusterTime)
	if serverCode(err, codeSnapshotTooOld, codeSnapshotUnavailable) {
		m.log.Warn("the document of an update is no longer held at its cluster time; reading it as it is now", "coll", ev.NS.Coll, "err", err)
		doc, err = coll.FindOne(ctx, filter).Raw()
	}
	switch {
	case errors.Is(err, mongodrv.ErrNoDocuments):
		return raw, nil
	case err != nil:
		return nil, fmt.Errorf("read the document of an update: %w", err)
	}
	elems, err := raw.Elements()
	if err != nil {
		return nil, fmt.Errorf("decode change event: %w", err)
	}
	d := make(bson.D, 0, len(elems)+1)
	for _, e := range elems {
		if e.Key() != "fullDocument" {
			d = append(d, bson.E{Key: e.Key(), Value: e.Value()})
		}
	}
	d = append(d, bson.E{Key: "fullDocument", Value: bson.RawValue{Type: bson.TypeEmbeddedDocument, Value: doc}})
	out, err := bson.Marshal(d)
	if err != nil {
		return nil, fmt.Errorf("add the document to an update event: %w", err)
	}
	return out, nil
}

// readAt reads the document filter selects in coll as of cluster time at.
func (m *Store) readAt(ctx context.Context, coll *mongodrv.Collection, filter bson.D, at bson.Timestamp) (bson.Raw, error) {
	sess, err := m.client.StartSession(options.Session().SetSnapshot(true).SetSnapshotTime(at))
	if err != nil {
		return nil, err
	}
	defer sess.EndSession(context.WithoutCancel(ctx))
	return coll.FindOne(mongodrv.NewSessionContext(ctx, sess), filter).Raw()
}

// Head returns the position of now. While a Follow runs and has reached a
// usable checkpoint it is that checkpoint, so it is never ahead of the
// feed and opens no stream. Otherwise it is taken from change streams
// opened just for this (see head). Following from it gives every change
// committed after it.
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

// head returns a high-water mark at the primary's last applied time, from
// change streams opened in a slot of the pool of short-lived streams. A
// fresh stream's first post-batch token is a high-water mark at the last
// applied time + 1; a running stream on a quiet database reports the last
// time it scanned, the last applied time, and passes the fresh one only
// after the next oplog entry (an idle primary writes a no-op about every
// 10 s). So head opens a second stream that starts at the fresh token's
// time - 1 and takes its token: the server's own high-water mark at the
// last applied time, which a feed that has scanned to the end of the
// oplog has reached. It sorts after every event before that time, and the
// state just before it holds exactly those.
func (m *Store) head(ctx context.Context) (string, error) {
	release, err := m.slot(ctx)
	if err != nil {
		return "", m.streamErr(ctx, "head", "", err)
	}
	defer release()
	fresh, err := m.highWaterMark(ctx, nil)
	if err != nil {
		return "", err
	}
	ts, err := positionTime(fresh)
	if err != nil {
		return "", fmt.Errorf("head: %w", err)
	}
	applied := timestampBefore(ts)
	pos, err := m.highWaterMark(ctx, &applied)
	if err != nil {
		return "", err
	}
	if pos > fresh {
		return "", fmt.Errorf("head: the stream started at %v reports %.40s, after the fresh stream's %.40s", applied, pos, fresh)
	}
	return pos, nil
}

// highWaterMark opens a change stream starting at startAt (now when nil)
// and returns its first post-batch token, before any event: batchSize 0
// makes the first batch empty, so the token cached is the server's
// high-water mark, never an event's.
func (m *Store) highWaterMark(ctx context.Context, startAt *bson.Timestamp) (string, error) {
	opts := options.ChangeStream().SetBatchSize(0)
	if startAt != nil {
		opts.SetStartAtOperationTime(startAt)
	}
	cs, err := m.db.Watch(ctx, feedPipeline(&largeEvents{noSplit: true}), opts)
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

// openFeed opens the feed's change stream after from (with startAfter
// when from is an invalidate's token, which resumeAfter refuses), opening
// it again while the server's refusal is one l gets past.
func (m *Store) openFeed(ctx context.Context, from string, startAfter bool, l *largeEvents) (*mongodrv.ChangeStream, error) {
	for {
		opts := options.ChangeStream().SetMaxAwaitTime(feedAwait)
		if startAfter {
			opts.SetStartAfter(tokenDoc(from))
		} else {
			opts.SetResumeAfter(tokenDoc(from))
		}
		cs, err := m.feedDB.Watch(ctx, feedPipeline(l), opts)
		if err == nil {
			return cs, nil
		}
		if !l.retry(m.log, err) {
			return nil, err
		}
	}
}

// eventAt is a change event's position and cluster time.
type eventAt struct {
	pos string
	ts  bson.Timestamp
}

// inTransaction reports whether a change event belongs to a multi-document
// transaction, whose events share one cluster time.
func inTransaction(raw bson.Raw) bool {
	_, err := raw.LookupErr("txnNumber")
	return err == nil
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
// quiet periods move the checkpoint too. The events of a transaction,
// which share a cluster time and may come in several server batches,
// reach fn in one batch. An event split into fragments reaches fn whole,
// with the last fragment's position. On invalidate (the database was
// dropped or renamed) the stream starts again after the invalidate event,
// with startAfter also when the driver's resume tries resumeAfter, and the
// indexes are created again. Events over 16 MB: see largeEvents.
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

	var large largeEvents
	cs, err := m.openFeed(ctx, after, false, &large)
	if err != nil {
		return m.streamErr(ctx, "follow", after, err)
	}
	defer func() { closeStream(ctx, cs) }()
	gen := m.startFeed(after)
	defer m.stopFeed(gen)
	if err := fn(store.Batch{Checkpoint: after}); err != nil {
		return err
	}
	// A high-water mark is exact at once: the state just before its time.
	if read, ok := hwmRead(after); ok && isHighWaterMark(after) {
		m.reached(gen, after, read)
	}

	checkpoint := after // the newest position read, of a whole event or a quiet batch
	handed := after     // the checkpoint of the last batch handed to fn
	var changes []store.Change
	// exact is the newest event known to be the last of its cluster time,
	// whose state is the one at that time; last is the newest event read.
	var exact, last eventAt
	// hand gives fn the first n changes with checkpoint cp, then records
	// the exact point if fn now has it.
	hand := func(n int, cp string) error {
		b := store.Batch{Changes: changes[:n:n], Checkpoint: cp}
		changes = changes[n:]
		if len(b.Changes) > 0 {
			m.saw(gen, cp, b.Changes[0].Time)
		}
		if err := fn(b); err != nil {
			return err
		}
		handed = cp
		pending := time.Time{}
		if len(changes) > 0 {
			pending = changes[0].Time
		}
		m.saw(gen, checkpoint, pending)
		if isHighWaterMark(cp) {
			if read, ok := hwmRead(cp); ok {
				m.reached(gen, cp, read)
			}
		} else if exact.pos != "" && exact.pos <= handed {
			m.reached(gen, exact.pos, exact.ts)
		}
		return nil
	}
	// lastTxn says whether the last event read belongs to a transaction.
	lastTxn := false
	// endBatch hands over what has been read at the end of a server
	// batch, except the events of a transaction, whose later events may
	// come in the next batch: they wait for an event of a later time or
	// an empty batch.
	endBatch := func() error {
		n, cp := len(changes), checkpoint
		if lastTxn {
			for n > 0 && !changeTimeBefore(changes[n-1], last.ts) {
				n--
			}
			cp = exact.pos
			if cp == "" || !exact.ts.Before(last.ts) || cp <= handed {
				if n > 0 {
					return fmt.Errorf("follow: changes before %.40s without a position", last.pos)
				}
				m.saw(gen, checkpoint, firstTime(changes))
				return nil
			}
		}
		return hand(n, cp)
	}
	// invalidated is the invalidate token the stream was last started
	// after, until the stream moves past it: while it is set, a resume
	// must use startAfter, which the driver does not do.
	invalidated := ""
	var split splitEvents
	for {
		if !cs.TryNext(ctx) {
			if err := cs.Err(); err != nil {
				from, startAfter := checkpoint, false
				switch {
				case invalidated != "" && serverCode(err, codeInvalidResumeToken):
					// The driver resumed with resumeAfter the
					// invalidate token, which the server refuses.
					m.log.Warn("change stream resume after invalidate refused; starting after it again", "pos", invalidated, "err", err)
					from, startAfter = invalidated, true
				case large.retry(m.log, err):
					// An event the server cannot send: opened again
					// from the checkpoint, without it.
					if invalidated != "" {
						from, startAfter = invalidated, true
					}
				default:
					return m.streamErr(ctx, "follow", checkpoint, err)
				}
				closeStream(ctx, cs)
				split = splitEvents{}
				if cs, err = m.openFeed(ctx, from, startAfter, &large); err != nil {
					return m.streamErr(ctx, "follow", checkpoint, err)
				}
				continue
			}
			if cs.ID() == 0 {
				return fmt.Errorf("follow: the server closed the change stream after %.40s", checkpoint)
			}
			if split.midEvent() {
				continue
			}
			// An empty getMore: the post-batch token is where the
			// stream has read to, and every event read is whole (a
			// transaction's last batch has come).
			// Never the invalidate token itself: resumeAfter refuses it.
			cp := checkpoint
			if tok := tokenData(cs.ResumeToken()); tok > max(checkpoint, invalidated) {
				checkpoint, invalidated, cp = tok, "", tok
			}
			if cp != handed || len(changes) > 0 {
				if err := hand(len(changes), cp); err != nil {
					return err
				}
			}
			continue
		}
		// Current is only valid until the next call: split copies what
		// it keeps, decode copies what it reads.
		raw, whole, err := split.add(cs.Current)
		if err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		if !whole {
			if cs.RemainingBatchLength() == 0 && len(changes) > 0 {
				if err := endBatch(); err != nil {
					return err
				}
			}
			continue
		}
		if raw, err = m.postImage(ctx, raw); err != nil {
			return m.streamErr(ctx, "follow", checkpoint, err)
		}
		pos, op, ch, ok, err := decode(raw)
		if err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		if op == "invalidate" {
			if len(changes) > 0 {
				if err := hand(len(changes), checkpoint); err != nil {
					return err
				}
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
			split = splitEvents{}
			if cs, err = m.openFeed(ctx, pos, true, &large); err != nil {
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
		ts, err := positionTime(pos)
		if err != nil {
			return fmt.Errorf("follow: %w", err)
		}
		// An event of a later cluster time closes the previous one's:
		// the previous event was the last at its time, an exact point,
		// usable now if fn already has it (else once hand gives it).
		if last.pos != "" && last.ts.Before(ts) {
			exact = last
			if exact.pos <= handed {
				m.reached(gen, exact.pos, exact.ts)
			}
		}
		last = eventAt{pos: pos, ts: ts}
		if pos > checkpoint {
			checkpoint = pos
		}
		if pos > invalidated {
			invalidated = ""
		}
		if ok {
			changes = append(changes, ch)
		}
		lastTxn = inTransaction(raw)
		if cs.RemainingBatchLength() > 0 {
			continue
		}
		if err := endBatch(); err != nil {
			return err
		}
	}
}

// changeTimeBefore reports whether ch's cluster time is before ts.
func changeTimeBefore(ch store.Change, ts bson.Timestamp) bool {
	t, err := positionTime(ch.Pos)
	return err == nil && t.Before(ts)
}

// firstTime returns the commit time of the first of changes, zero for none.
func firstTime(changes []store.Change) time.Time {
	if len(changes) == 0 {
		return time.Time{}
	}
	return changes[0].Time
}
