package mongo

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

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

// CatchUp calls fn, in log order, with each change on one of topics whose
// position p has after < p <= until. It returns an error wrapping ErrInvalid
// for a malformed topic, ErrInvalidPosition for a malformed or rejected
// position and ErrHistoryLost when after is older than the oplog. Any
// other error of the server about the resume, except a transient one, also
// wraps ErrInvalidPosition: retrying the same position could only fail
// again.
//
// It reads the events Follow reads, the same way (see events.go): the
// same stages after its $match (so an event is split, and its fragments
// joined, as the feed splits and joins it, and a split event's id is a
// position to resume after), the same ids, and the same documents (an
// update's read at its own cluster time). So a change caught up is the
// change the feed handed out live.
//
// Its change stream resumes after after, filtered on fields that never
// change: an order's _id, a message's room, the collection (for the orders
// list topic) and an order's customer (for a customer's list topic,
// fullDocument.customer). An update event carries no document in the
// stream, so for rooms and customers' lists the filter keeps every update
// of the collection and the topic is checked once the document is read,
// as Follow does. A delete event has no fullDocument, so it is on the
// orders list but on no customer's, as Follow's changes say; changecast
// never deletes orders. Each event is passed once, whichever of topics it
// matches.
//
// The stream is read in parts of at most catchUpBuffer changes, each in a
// slot of the pool (at most Options.CatchUps streams open at once; others
// wait for a slot): a part is read into memory, its stream closed and its
// slot given back, and only then is fn called with its changes. The next
// part resumes after the last event read. An event over 16 MB that the
// server cannot send is stepped over as Follow steps over it
// (largeEvents): it never fails the catch-up.
//
// How the cost grows with the log: the server scans the oplog from after,
// skipping other collections' entries in the scan; for a list topic every
// order change in the range is built and matched, so catching up on
// orders or on customers/<sub> costs the number of order changes since
// after (the customer filter only shrinks what is sent), like a catch-up
// on one order's topic. Since MongoDB 6.0 a resume fails when the filter
// drops the resume token's own event (SERVER-71565), so the filter also
// keeps the events of the cluster times where the part resumes and of
// until (an event's cluster time is in its id, also a split event's last
// fragment's, whose whole event has another token). It stops at the
// first event past until, or when the stream's post-batch token reaches
// until.
func (m *Store) CatchUp(ctx context.Context, topics []string, after, until string, fn func(store.Change) error) error {
	if err := m.CheckPosition(after); err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	if err := m.CheckPosition(until); err != nil {
		return fmt.Errorf("catch up: until: %w", err)
	}
	wanted, err := catchUpTopics(topics)
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
	from := after
	var large largeEvents // what the parts learn about events over 16 MB
	for {
		part, err := m.catchUpPart(ctx, topics, wanted, from, until, &large)
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
		from = part.read
	}
}

// catchUpRead is what one part of a catch-up read.
type catchUpRead struct {
	changes []store.Change // on the wanted topics, in log order
	read    string         // the last event read: the next part resumes after it
	done    bool           // the range is read to until
}

// catchUpPart reads, in a slot of the pool, the changes on wanted with
// from < position <= until, at most catchUpBuffer of them, reading as l
// says. It gives the slot back and closes its stream before it returns.
func (m *Store) catchUpPart(ctx context.Context, topics []string, wanted map[string]bool, from, until string, l *largeEvents) (catchUpRead, error) {
	r := catchUpRead{read: from}
	match, err := catchUpMatch(topics, from, until)
	if err != nil {
		return r, fmt.Errorf("catch up: %w", err)
	}
	release, err := m.slot(ctx)
	if err != nil {
		return r, m.catchUpErr(ctx, from, err)
	}
	defer release()
	cs, err := m.watch(ctx, m.db, match, from, false, catchUpAwait, catchUpBuffer, l)
	if err != nil {
		return r, m.catchUpErr(ctx, from, err)
	}
	defer closeStream(ctx, cs)
	// A part that reads the event over 16 MB without its document ends
	// after it: the next one reads whole batches again.
	stripped := l.read == readStripped
	var split splitEvents
	for {
		if !cs.TryNext(ctx) {
			if err := cs.Err(); err != nil {
				if l.retry(m.log, err) {
					// An event over 16 MB: the next part reads past
					// it, from the last event read.
					return r, nil
				}
				return r, m.catchUpErr(ctx, from, err)
			}
			if cs.ID() == 0 {
				return r, fmt.Errorf("catch up: the change stream ended before %.40s: %w", until, store.ErrHistoryLost)
			}
			if split.midEvent() {
				continue
			}
			if tok := tokenData(cs.ResumeToken()); (tok != "" && comparePositionOrder(tok, until) >= 0) || scannedTo(tok, from, until) {
				r.done = true
				return r, nil
			}
			continue
		}
		ev, whole, err := m.readEvent(ctx, &split, l, cs.Current)
		if err != nil {
			if ctx.Err() != nil {
				return r, ctx.Err()
			}
			return r, fmt.Errorf("catch up: %w", err)
		}
		if !whole {
			continue
		}
		if c, err := comparePositions(ev.pos, from); err != nil {
			return r, fmt.Errorf("catch up: %w", err)
		} else if c <= 0 {
			continue
		}
		if comparePositionOrder(ev.pos, until) > 0 {
			r.done = true
			return r, nil
		}
		r.read = ev.pos
		if ev.ok && onTopics(wanted, ev.change) {
			r.changes = append(r.changes, ev.change)
		}
		if ev.pos == until {
			r.done = true
			return r, nil
		}
		if stripped || len(r.changes) == catchUpBuffer {
			return r, nil
		}
	}
}

// catchUpTopics returns the set of topics, each once. A malformed topic
// is an error wrapping store.ErrInvalid.
func catchUpTopics(topics []string) (map[string]bool, error) {
	wanted := make(map[string]bool, len(topics))
	for _, t := range topics {
		if _, _, ok := store.ParseTopic(t); !ok {
			return nil, fmt.Errorf("topic %q: %w", t, store.ErrInvalid)
		}
		wanted[t] = true
	}
	return wanted, nil
}

// catchUpMatch returns the $match stage of a catch-up's change stream
// resuming after after and reading to until: the changes on topics
// (each topic once), and the events of the cluster times of after and
// until, so that the stream finds its resume token's event and reaches
// until. A malformed topic is an error wrapping store.ErrInvalid.
func catchUpMatch(topics []string, after, until string) (bson.D, error) {
	seen := make(map[string]bool, len(topics))
	var orderIDs, rooms, customers bson.A
	allOrders := false
	for _, t := range topics {
		kind, key, ok := store.ParseTopic(t)
		if !ok {
			return nil, fmt.Errorf("topic %q: %w", t, store.ErrInvalid)
		}
		if seen[t] {
			continue
		}
		seen[t] = true
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
	afterTime, err := positionTime(after)
	if err != nil {
		return nil, err
	}
	untilTime, err := positionTime(until)
	if err != nil {
		return nil, err
	}
	or := bson.A{bson.D{{Key: "clusterTime", Value: bson.D{{Key: "$in", Value: bson.A{afterTime, untilTime}}}}}}
	if allOrders {
		// Every order change: the order topics and customers' lists are
		// within it.
		orderIDs, customers = nil, nil
		or = append(or, bson.D{{Key: "ns.coll", Value: ordersCollection}})
	}
	// An update event carries no document until readEvent reads it:
	// onTopics decides then.
	update := bson.E{Key: "operationType", Value: store.OpUpdate}
	if len(customers) > 0 {
		or = append(or,
			bson.D{{Key: "ns.coll", Value: ordersCollection}, {Key: "fullDocument.customer", Value: bson.D{{Key: "$in", Value: customers}}}},
			bson.D{{Key: "ns.coll", Value: ordersCollection}, update})
	}
	if len(orderIDs) > 0 {
		or = append(or, bson.D{
			{Key: "ns.coll", Value: ordersCollection},
			{Key: "documentKey._id", Value: bson.D{{Key: "$in", Value: orderIDs}}},
		})
	}
	if len(rooms) > 0 {
		or = append(or,
			bson.D{{Key: "ns.coll", Value: messagesCollection}, {Key: "fullDocument.room", Value: bson.D{{Key: "$in", Value: rooms}}}},
			bson.D{{Key: "ns.coll", Value: messagesCollection}, update})
	}
	// The server pushes a $match into its oplog scan only where it can
	// rewrite it to oplog fields: an $or only if every branch can be,
	// which these are not all. So the $or alone makes the server build
	// every event of the database since after and filter it then.
	// ns.coll can be rewritten, and an $and is pushed down clause by
	// clause, so the scan skips the other collections' entries. Both
	// collections stay in it whatever the topics: the events at after and
	// until may be in either, and a filter that drops the resume token's
	// own event fails the resume (SERVER-71565).
	return bson.D{{Key: "$match", Value: bson.D{{Key: "$and", Value: bson.A{
		bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$in", Value: bson.A{ordersCollection, messagesCollection}}}}},
		bson.D{{Key: "$or", Value: or}},
	}}}}}, nil
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
