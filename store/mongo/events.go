package mongo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"changecast/store"
)

// What every change stream of the store reads.
//
// The feed (Follow) and catch-ups (CatchUp) read the same events the same
// way, so that a client sees the same ids and the same documents whether
// it is served live or caught up: one pipeline (changeStreamPipeline: a
// $match, then largeEvents.stages), opened by one function (watch), each
// event read by one function (readEvent: fragments joined, an event over
// 16 MB stepped over, an update given its document, then decode). They
// differ only in their $match and in where they stop.
//
// How change events carry documents. No stream asks for updateLookup.
// changecast itself never sends $set updates: it inserts orders and
// messages and replaces a whole order on a status change, and insert and
// replace events always carry the document exactly as written, straight
// from the oplog. So every process reading the same event gets the same
// payload, however late it reads it. A $set update made by someone else
// (an operator in mongosh) carries no document; readEvent reads it at the
// event's own cluster time (readConcern snapshot with atClusterTime, see
// postImage), which is the document exactly as that change left it, for
// the feed and for a catch-up alike. updateLookup would instead give the
// document as it is when the event is read, possibly newer than the
// change, so that a later event could show an older version of an order
// than an earlier one, and a catch-up could differ from what was live.
// Only when the server no longer holds that point (239 SnapshotTooOld,
// past minSnapshotHistoryWindowInSeconds, 300 s by default, or 246
// SnapshotUnavailable across a catalog change) is the document read as it
// is now, as updateLookup would, with a warning in the log. An event whose
// document is gone is skipped (its delete follows). Message deletes are
// skipped too: a delete event names only the _id, so its room is unknown.

// changeStreamPipeline returns the pipeline of a change stream of the
// store that reads events: the $match stage match, then l's stages.
func changeStreamPipeline(match bson.D, l *largeEvents) bson.A {
	return append(bson.A{match}, l.stages()...)
}

// feedMatch keeps the events of the two collections, and an invalidate
// (which names no collection) so that Follow can start again after it.
func feedMatch() bson.D {
	return bson.D{{Key: "$match", Value: bson.D{{Key: "$or", Value: bson.A{
		bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$in", Value: bson.A{ordersCollection, messagesCollection}}}}},
		bson.D{{Key: "operationType", Value: "invalidate"}},
	}}}}}
}

// watch opens a change stream of db over the events match keeps, after
// from: with resumeAfter, or with startAfter (an invalidate's token,
// which resumeAfter refuses). Its getMores wait up to await; batch is its
// batch size (0: the server's default) when l reads whole batches. It
// opens the stream again while the server's refusal is one l gets past
// (no split stage, an event over 16 MB).
func (m *Store) watch(ctx context.Context, db *mongodrv.Database, match bson.D, from string, startAfter bool, await time.Duration, batch int32, l *largeEvents) (*mongodrv.ChangeStream, error) {
	for {
		opts := options.ChangeStream().SetMaxAwaitTime(await)
		if startAfter {
			opts.SetStartAfter(tokenDoc(from))
		} else {
			opts.SetResumeAfter(tokenDoc(from))
		}
		if n := l.batchSize(batch); n > 0 {
			opts.SetBatchSize(n)
		}
		cs, err := db.Watch(ctx, changeStreamPipeline(match, l), opts)
		if err == nil || !l.retry(m.log, err) {
			return cs, err
		}
	}
}

// streamEvent is one whole change event as the store reads it.
type streamEvent struct {
	pos    string       // its resume token, the last fragment's if split
	op     string       // its operationType
	change store.Change // the change it makes, if ok
	ok     bool         // change is one the store passes on
	txn    bool         // it belongs to a multi-document transaction
	// leftOut says it was over 16 MB and read without its document: the
	// stream must be opened again after it (largeEvents.leftOut).
	leftOut bool
}

// readEvent reads cur, the change stream's current document (it copies
// what it keeps), read as split and l say. whole is false for a fragment
// of a split event before its last. An event over 16 MB (read without its
// document) is left out, logged; an update without a document gets the
// one its change left (postImage); then it is decoded. An error is one of
// the event's shape or of the read of an update's document.
func (m *Store) readEvent(ctx context.Context, split *splitEvents, l *largeEvents, cur bson.Raw) (ev streamEvent, whole bool, err error) {
	raw, whole, err := split.add(cur)
	if err != nil || !whole {
		return streamEvent{}, false, err
	}
	ev.leftOut = l.leftOut()
	if !ev.leftOut {
		if raw, err = m.postImage(ctx, raw); err != nil {
			return streamEvent{}, false, err
		}
	}
	if ev.pos, ev.op, ev.change, ev.ok, err = decode(raw); err != nil {
		return streamEvent{}, false, err
	}
	if ev.leftOut {
		m.log.Error("change event over 16 MB that the server cannot send: left out", "pos", ev.pos, "op", ev.op)
		ev.ok = false
	}
	ev.txn = inTransaction(raw)
	return ev, true, nil
}

// inTransaction reports whether a change event belongs to a multi-document
// transaction, whose events share one cluster time.
func inTransaction(raw bson.Raw) bool {
	_, err := raw.LookupErr("txnNumber")
	return err == nil
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

// postImage returns raw with the document as the change left it when raw
// is an update event of orders or messages without one (the feed asks for
// no updateLookup): the document read at the event's cluster time in a
// snapshot session. When the server no longer holds that time it is read
// as it is now (what updateLookup gives). Other events, and an update
// whose document is gone, are returned as they are (decode skips the
// latter).
func (m *Store) postImage(ctx context.Context, raw bson.Raw) (bson.Raw, error) {
	var ev changeEvent
	if err := bson.Unmarshal(raw, &ev); err != nil || ev.OperationType != store.OpUpdate || ev.FullDocument.Type == bson.TypeEmbeddedDocument {
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
