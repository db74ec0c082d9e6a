package mongo

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"changecast/store"
)

// catchUpAwait is the maxAwaitTimeMS of a catch-up's getMores: how long
// an empty getMore waits on the server for an event before it answers
// with none and the post-batch token. It never delays an event. A
// catch-up rarely waits at all: it ends at until, which the live feed has
// already read, so the aggregate's first batch, scanned to the end of the
// oplog, usually carries a post-batch token at or past until, and full
// batches come back at once. It waits only when until is not yet visible
// to the server it reads from; then 1 s costs one getMore a second per
// catch-up (at most Options.CatchUps a second in all, where 200 ms cost
// five times that, a real share of an Atlas M0's ~100 operations a
// second) and at most 1 s of extra latency for that client.
const catchUpAwait = time.Second

// catchUpBuffer is the most changes a catch-up reads from the server
// before it gives its slot back and hands them to fn, and the batch size
// of its streams (so the driver holds no more than that either). fn
// writes to a client, which may take up to the stream's write timeout per
// send: no slot is held meanwhile, so slow clients never keep others from
// catching up. A change is a few KB at most (a body is at most 64 KiB), so
// a catch-up holds well under a few MB; a range with more changes is read
// in parts, each in a slot, resuming after the last event read.
const catchUpBuffer = 128

// catchUpMode is how a part of a catch-up reads its range.
type catchUpMode int

const (
	// readBatches reads whole batches, with updateLookup.
	readBatches catchUpMode = iota
	// readOne reads one event a batch, with updateLookup: after a batch
	// failed with 10334, it finds the one event over 16 MB and delivers
	// the ordinary events before it.
	readOne
	// readStripped reads that one event without its document, so that
	// it fits, and steps over it.
	readStripped
)

// CatchUp calls fn, in log order, with each change on one of topics whose
// position p has after < p <= until. It returns an error wrapping ErrInvalid
// for a malformed topic, ErrInvalidPosition for a malformed or rejected
// position and ErrHistoryLost when after is older than the oplog. Any
// other error of the server about the resume, except a transient one, also
// wraps ErrInvalidPosition: retrying the same position could only fail
// again.
//
// It opens a short-lived change stream resuming after after, filtered on
// fields that never change: an order's _id, a message's room, the
// collection (for the orders list topic) and an order's customer (for a
// customer's list topic, fullDocument.customer). A delete event has no
// fullDocument, so it is on the orders list but on no customer's, as
// Follow's changes say; changecast never deletes orders. A $set update
// made by someone else carries, with updateLookup, the document as it is
// when read: a changed customer would file it under the new one, and an
// order deleted since is skipped (as Follow skips it). Each event is passed
// once, whichever of topics it matches.
//
// The stream is read in parts of at most catchUpBuffer changes, each in a
// slot of the pool (at most Options.CatchUps streams open at once; others
// wait for a slot): a part is read into memory, its stream closed and its
// slot given back, and only then is fn called with its changes. The next
// part resumes after the last event read.
//
// A batch the server cannot send because an event in it is over 16 MB
// (10334, raised when the batch is serialized, at the opening aggregate as
// well as at a getMore) does not fail the catch-up: the range is read
// again from the last event read, one event a batch, and the event that
// fails is read once more without its document (a $project after the
// $match), so that it fits and is skipped, as its document could never be
// sent; the events around it are delivered. The stream's events never
// carry updateDescription, which changecast does not read.
//
// How the cost grows with the log: the server scans the oplog from after,
// skipping other collections' entries in the scan; for a list topic every
// order change in the range is built and matched, so catching up on
// orders or on customers/<sub> costs the number of order changes since
// after (the customer filter only shrinks what is sent), like a catch-up
// on one order's topic. Since
// MongoDB 6.0 a resume fails when the filter drops the resume token's own
// event (SERVER-71565), so the filter also keeps the events whose token is
// where the part resumes or until; the first is swallowed by the server's
// resume, the second ends the catch-up at once. It stops at the first event
// past until, or when the stream's post-batch token reaches until.
func (m *Store) CatchUp(ctx context.Context, topics []string, after, until string, fn func(store.Change) error) error {
	if err := m.CheckPosition(after); err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	if err := m.CheckPosition(until); err != nil {
		return fmt.Errorf("catch up: until: %w", err)
	}
	wanted, _, err := catchUpPipeline(topics, after, until)
	if err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	if comparePositionOrder(after, until) >= 0 || len(wanted) == 0 {
		return nil
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	defer end()
	from, mode := after, readBatches
	for {
		part, err := m.catchUpPart(ctx, topics, wanted, from, until, mode)
		if err != nil {
			return err
		}
		// The slot is free again: a slow client delays only itself.
		for _, ch := range part.changes {
			if err := fn(ch); err != nil {
				return err
			}
		}
		if part.done {
			return nil
		}
		from, mode = part.read, part.next
	}
}

// catchUpRead is what one part of a catch-up read.
type catchUpRead struct {
	changes []store.Change // on the wanted topics, in log order
	read    string         // the last event read: the next part resumes after it
	next    catchUpMode    // how the next part reads
	done    bool           // the range is read to until
}

// catchUpPart reads, in a slot of the pool, the changes on wanted with
// from < position <= until, at most catchUpBuffer of them, reading as mode
// says. It gives the slot back and closes its stream before it returns.
func (m *Store) catchUpPart(ctx context.Context, topics []string, wanted map[string]bool, from, until string, mode catchUpMode) (catchUpRead, error) {
	r := catchUpRead{read: from, next: readBatches}
	_, pipeline, err := catchUpPipeline(topics, from, until)
	if err != nil {
		return r, fmt.Errorf("catch up: %w", err)
	}
	pipeline[len(pipeline)-1] = catchUpProject(mode)
	release, err := m.slot(ctx)
	if err != nil {
		return r, m.catchUpErr(ctx, from, err)
	}
	defer release()
	opts := options.ChangeStream().
		SetResumeAfter(tokenDoc(from)).
		SetMaxAwaitTime(catchUpAwait).
		SetBatchSize(catchUpBuffer)
	if mode != readBatches {
		opts.SetBatchSize(1)
	}
	if mode != readStripped {
		opts.SetFullDocument(options.UpdateLookup)
	}
	// tooLarge reports whether err is a batch over 16 MB that a
	// narrower read can get past; then r says how.
	tooLarge := func(err error) bool {
		if mode == readStripped || !serverCode(err, codeBSONObjectTooLarge) {
			return false
		}
		m.log.Warn("catch-up: a change event over 16 MB; reading past it one event at a time", "after", r.read, "err", err)
		r.next = readOne
		if mode == readOne {
			r.next = readStripped
		}
		return true
	}
	cs, err := m.db.Watch(ctx, pipeline, opts)
	if err != nil {
		if tooLarge(err) {
			return r, nil
		}
		return r, m.catchUpErr(ctx, from, err)
	}
	defer closeStream(ctx, cs)
	for {
		if !cs.TryNext(ctx) {
			if err := cs.Err(); err != nil {
				if tooLarge(err) {
					return r, nil
				}
				return r, m.catchUpErr(ctx, from, err)
			}
			if cs.ID() == 0 {
				return r, fmt.Errorf("catch up: the change stream ended before %.40s: %w", until, store.ErrHistoryLost)
			}
			if tok := tokenData(cs.ResumeToken()); (tok != "" && comparePositionOrder(tok, until) >= 0) || scannedTo(tok, from, until) {
				r.done = true
				return r, nil
			}
			continue
		}
		pos, _, ch, ok, err := decode(cs.Current)
		if err != nil {
			return r, fmt.Errorf("catch up: %w", err)
		}
		if c, err := comparePositions(pos, from); err != nil {
			return r, fmt.Errorf("catch up: %w", err)
		} else if c <= 0 {
			continue
		}
		if comparePositionOrder(pos, until) > 0 {
			r.done = true
			return r, nil
		}
		r.read = pos
		if mode == readStripped && !ok {
			m.log.Warn("catch-up: a change event over 16 MB skipped", "pos", pos)
		}
		if ok && onTopics(wanted, ch) {
			r.changes = append(r.changes, ch)
		}
		if pos == until {
			r.done = true
			return r, nil
		}
		if mode == readStripped || len(r.changes) == catchUpBuffer {
			return r, nil
		}
	}
}

// catchUpPipeline returns the set of topics (each once) and the change
// stream pipeline CatchUp reads: the changes on those topics, and the
// events at after and until themselves so that the stream reaches them,
// without the fields changecast does not read (catchUpProject). A
// malformed topic is an error wrapping store.ErrInvalid.
func catchUpPipeline(topics []string, after, until string) (map[string]bool, bson.A, error) {
	wanted := make(map[string]bool, len(topics))
	var orderIDs, rooms, customers bson.A
	allOrders := false
	for _, t := range topics {
		kind, key, ok := store.ParseTopic(t)
		if !ok {
			return nil, nil, fmt.Errorf("topic %q: %w", t, store.ErrInvalid)
		}
		if wanted[t] {
			continue
		}
		wanted[t] = true
		switch kind {
		case store.KindOrder:
			oid, _ := bson.ObjectIDFromHex(key)
			orderIDs = append(orderIDs, oid)
		case store.KindOrderList:
			allOrders = true
		case store.KindCustomer:
			customers = append(customers, key)
		default:
			rooms = append(rooms, key)
		}
	}
	or := bson.A{bson.D{{Key: "_id._data", Value: bson.D{{Key: "$in", Value: bson.A{after, until}}}}}}
	if allOrders {
		// Every order change: the order topics and customers' lists are
		// within it.
		orderIDs, customers = nil, nil
		or = append(or, bson.D{{Key: "ns.coll", Value: ordersCollection}})
	}
	if len(customers) > 0 {
		or = append(or, bson.D{
			{Key: "ns.coll", Value: ordersCollection},
			{Key: "fullDocument.customer", Value: bson.D{{Key: "$in", Value: customers}}},
		})
	}
	if len(orderIDs) > 0 {
		or = append(or, bson.D{
			{Key: "ns.coll", Value: ordersCollection},
			{Key: "documentKey._id", Value: bson.D{{Key: "$in", Value: orderIDs}}},
		})
	}
	if len(rooms) > 0 {
		or = append(or, bson.D{
			{Key: "ns.coll", Value: messagesCollection},
			{Key: "fullDocument.room", Value: bson.D{{Key: "$in", Value: rooms}}},
		})
	}
	// The server pushes a $match into its oplog scan only where it can
	// rewrite it to oplog fields: an $or only if every branch can be, and
	// _id (the resume token) cannot. So the $or alone makes the server
	// build every event of the database since after and filter it then.
	// ns.coll can be rewritten, and an $and is pushed down clause by
	// clause, so the scan skips the other collections' entries. Both
	// collections stay in it whatever the topics: the events at after and
	// until may be in either, and a filter that drops the resume token's
	// own event fails the resume (SERVER-71565).
	pipeline := bson.A{
		bson.D{{Key: "$match", Value: bson.D{{Key: "$and", Value: bson.A{
			bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$in", Value: bson.A{ordersCollection, messagesCollection}}}}},
			bson.D{{Key: "$or", Value: or}},
		}}}}},
		catchUpProject(readBatches),
	}
	return wanted, pipeline, nil
}

// catchUpProject is the $project stage of a catch-up's pipeline read as
// mode says. It comes after the $match, which the server pushes down
// before it builds the event, so it never changes what matches: it drops
// what decode never reads (an update's description can be as large as
// its document) and in readStripped the document too, so that an event
// over 16 MB fits in a batch (the server checks the size when it
// serializes the batch, after the whole pipeline). It keeps _id, the
// resume token, which a change stream's pipeline must not change.
func catchUpProject(mode catchUpMode) bson.D {
	project := bson.D{{Key: "updateDescription", Value: 0}}
	if mode == readStripped {
		project = append(project, bson.E{Key: "fullDocument", Value: 0})
	}
	return bson.D{{Key: "$project", Value: project}}
}

// onTopics reports whether ch is on one of the wanted topics: its own or
// one of its lists.
func onTopics(wanted map[string]bool, ch store.Change) bool {
	if wanted[ch.Topic] {
		return true
	}
	for _, l := range ch.Lists {
		if wanted[l] {
			return true
		}
	}
	return false
}

// scannedTo reports whether a catch-up stream resumed after after, whose
// post-batch token is tok, has passed every event up to until, a
// high-water mark, although tok sorts before until. A fresh stream's
// high-water mark (which Head returns before the feed runs) is at the
// primary's last applied time + 1, while a running stream's is at the last
// time it scanned: on a quiet database the catch-up would wait for the
// next oplog write (an idle primary writes a no-op about every 10 s). A
// high-water mark at T sorts after every event before T, so a running
// stream that has scanned through T-1 has passed them all. tok must differ
// from after: the first reply's token may be after itself, scanned no
// further.
func scannedTo(tok, after, until string) bool {
	if tok == "" || tok == after || !isHighWaterMark(tok) || !isHighWaterMark(until) {
		return false
	}
	read, ok := hwmRead(until)
	if !ok {
		return false
	}
	ts, err := positionTime(tok)
	return err == nil && !ts.Before(read)
}
