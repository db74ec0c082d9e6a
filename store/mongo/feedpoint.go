package mongo

import (
	"context"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Positions without a change stream of their own.
//
// Head and Snapshot need a position, and opening a change stream just to
// learn one costs a stream per client. Instead the store remembers where
// its feed (the first Follow running, which the multiplexer runs once
// per process) has got to: the checkpoint it last handed to its fn, with the
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
//     one before it, but also any later event that shares T. Events share
//     a cluster time within one oplog entry: a multi-document transaction,
//     and also batched writes (applyOps), whose events carry no txnNumber,
//     so nothing in an event says it is the last at its time. An event's
//     token is used only once the feed has read a token of a later
//     cluster time: then every event at T has been read.
//
// While no Follow runs (before Start, or between a feed failure and its
// restart), or before it has reached a usable checkpoint, Head and Snapshot
// open a fresh stream, in the pool of short-lived streams that catch-ups
// use, and take its high-water mark at the primary's last applied time
// (see head): a running feed's quiet checkpoint reaches that, so the
// position is never ahead of what the feed delivers.
//
// Only the first Follow to run is the feed: a Follow started while it runs
// (a probe) leaves the bookkeeping alone, so it can neither replace the
// feed's checkpoint nor mark the feed stopped when it returns.

// feedPoint is a checkpoint of the feed and the cluster time whose state
// holds exactly the changes up to it. In Store.feedAt it also holds what
// the feed has read from the server, for SeenHead.
type feedPoint struct {
	pos  string
	read bson.Timestamp

	// seen is the newest position the feed has read from the server.
	seen string
	// pending is the commit time of the oldest change the feed has read
	// and not yet finished handing to its fn; zero when none.
	pending time.Time
}

// startFeed makes the calling Follow, which starts after after, the
// store's feed and returns its generation, unless a feed already runs:
// then it returns 0, a generation no bookkeeping call acts on. A known
// checkpoint survives only if the new feed starts from it.
func (m *Store) startFeed(after string) uint64 {
	m.feedMu.Lock()
	defer m.feedMu.Unlock()
	if m.feedAlive {
		return 0
	}
	m.feedGen++
	m.feedAlive = true
	if m.feedAt.pos != after {
		m.feedAt = feedPoint{}
	}
	m.feedAt.seen, m.feedAt.pending = after, time.Time{}
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
	if m.feedGen == gen && comparePositionOrder(pos, m.feedAt.pos) > 0 {
		m.feedAt.pos, m.feedAt.read = pos, read
	}
}

// saw records that the feed of generation gen has read up to pos from
// the server, and the commit time of the oldest change it has read but
// not yet finished handing to its fn (zero when none).
func (m *Store) saw(gen uint64, pos string, pending time.Time) {
	m.feedMu.Lock()
	defer m.feedMu.Unlock()
	if m.feedGen == gen {
		m.feedAt.seen = laterPosition(m.feedAt.seen, pos)
		m.feedAt.pending = pending
	}
}

// SeenHead returns the newest position the running feed (the first Follow
// running) has read from the server, and the commit time of the oldest
// change it has read but whose batch its fn has not finished with, zero
// when none. ok is false when no Follow runs. It opens no change stream and
// changes nothing: /metrics reads the feed's lag from it. It is safe for
// concurrent use.
func (m *Store) SeenHead() (pos string, pending time.Time, ok bool) {
	m.feedMu.Lock()
	defer m.feedMu.Unlock()
	return m.feedAt.seen, m.feedAt.pending, m.feedAlive
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
