package mongo

import (
	"context"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Positions without a change stream of their own.
//
// Head and Snapshot need a position, and opening a change stream just to
// learn one costs a stream per client. Instead the store remembers where
// its feed (the latest Follow, which the multiplexer runs once per
// process) has got to: the checkpoint it last handed to its fn, with the
// cluster time at which the database's state holds exactly the changes up
// to that checkpoint. Snapshot reads the documents at that cluster time
// (readConcern snapshot with atClusterTime) and returns the checkpoint as
// its position; Head returns the checkpoint. Both are then positions the
// feed has already passed, never ahead of it, so a client resuming from one
// at once on a quiet database is served from memory without waiting.
//
// The read time of a checkpoint, for exactly-once:
//   - a high-water-mark token at cluster time T (a post-batch token of an
//     empty getMore, or the first token of a fresh stream) sorts after
//     every event before T and before every event at T or later, so the
//     state holding exactly the changes up to it is the state at T-1;
//   - an event's own token at T: the state at T holds that event and every
//     one before it. It holds no later event either unless several events
//     share T, which happens only within one oplog entry (a multi-document
//     transaction, or applyOps); so a checkpoint whose event carries a
//     txnNumber is not used, and the previous one stays in place until the
//     feed passes T.
//
// While no Follow runs (before Start, or between a feed failure and its
// restart) Head and Snapshot open a fresh stream as before, in the pool
// of short-lived streams that catch-ups use.

// feedPoint is a checkpoint of the feed and the cluster time whose state
// holds exactly the changes up to it.
type feedPoint struct {
	pos  string
	read bson.Timestamp
}

// startFeed makes the calling Follow, which starts after after, the
// store's feed and returns its generation. A known checkpoint survives only
// if the new feed starts from it.
func (m *Store) startFeed(after string) uint64 {
	m.feedMu.Lock()
	defer m.feedMu.Unlock()
	m.feedGen++
	m.feedAlive = true
	if m.feedAt.pos != after {
		m.feedAt = feedPoint{}
	}
	return m.feedGen
}

// stopFeed records that the Follow of generation gen has returned.
func (m *Store) stopFeed(gen uint64) {
	m.feedMu.Lock()
	defer m.feedMu.Unlock()
	if m.feedGen == gen {
		m.feedAlive = false
	}
}

// reached records that the feed of generation gen has handed its fn
// checkpoint pos, whose state is the state at cluster time read.
func (m *Store) reached(gen uint64, pos string, read bson.Timestamp) {
	m.feedMu.Lock()
	defer m.feedMu.Unlock()
	if m.feedGen == gen && pos > m.feedAt.pos {
		m.feedAt = feedPoint{pos: pos, read: read}
	}
}

// feedPosition returns the feed's latest usable checkpoint, with ok false
// when no Follow runs or it has reached none yet.
func (m *Store) feedPosition() (feedPoint, bool) {
	m.feedMu.Lock()
	defer m.feedMu.Unlock()
	return m.feedAt, m.feedAlive && m.feedAt.pos != ""
}

// hwmRead returns the read time of a high-water-mark position: the
// cluster time just before its own.
func hwmRead(pos string) (bson.Timestamp, bool) {
	ts, err := positionTime(pos)
	if err != nil {
		return bson.Timestamp{}, false
	}
	return timestampBefore(ts), true
}

// inTransaction reports whether a change event belongs to a multi-document
// transaction, whose events share one cluster time.
func inTransaction(raw bson.Raw) bool {
	_, err := raw.LookupErr("txnNumber")
	return err == nil
}

// maxHighWaterMark is the longest _data of a high-water-mark token, in hex
// digits. A high-water mark holds a cluster time and a few small fields
// (about 30 digits); an event's token of orders or messages also holds the
// collection's UUID and the document key (98 digits or more).
const maxHighWaterMark = 64

// isHighWaterMark reports whether pos is a high-water-mark token rather
// than an event's.
func isHighWaterMark(pos string) bool { return len(pos) <= maxHighWaterMark }

// slot waits for a free place in the pool of short-lived change streams,
// or for ctx to end. The returned func frees the place.
func (m *Store) slot(ctx context.Context) (func(), error) {
	select {
	case m.catchUps <- struct{}{}:
		return func() { <-m.catchUps }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
