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
	if cs == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
	defer cancel()
	_ = cs.Close(ctx)
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
	if comparePositionOrder(pos, fresh) > 0 {
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
	cs, err := m.db.Watch(ctx, changeStreamPipeline(feedMatch(), &largeEvents{noSplit: true}), opts)
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
// when from is an invalidate's token, which resumeAfter refuses).
func (m *Store) openFeed(ctx context.Context, from string, startAfter bool, l *largeEvents) (*mongodrv.ChangeStream, error) {
	return m.watch(ctx, m.feedDB, feedMatch(), from, startAfter, feedAwait, 0, l)
}

// eventAt is a change event's position and cluster time.
type eventAt struct {
	pos string
	ts  bson.Timestamp
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

	f := &feedRun{m: m, ctx: ctx, fn: fn, checkpoint: after, handed: after}
	if err := f.reopen(after, false); err != nil {
		return m.streamErr(ctx, "follow", after, err)
	}
	defer func() { closeStream(ctx, f.cs) }()
	f.gen = m.startFeed(after)
	defer m.stopFeed(f.gen)
	if err := fn(store.Batch{Checkpoint: after}); err != nil {
		return err
	}
	// A high-water mark is exact at once: the state just before its time.
	if read, ok := hwmRead(after); ok && isHighWaterMark(after) {
		m.reached(f.gen, after, read)
	}
	for {
		var err error
		if f.cs.TryNext(ctx) {
			err = f.event()
		} else {
			err = f.quiet()
		}
		if err != nil {
			return err
		}
	}
}

// feedRun is one Follow's state: the change stream it reads, and what it
// has read and handed to fn. Follow drives it: event for each event the
// stream has, quiet when it has none (an empty getMore, or an error).
type feedRun struct {
	m   *Store
	ctx context.Context
	fn  func(store.Batch) error
	gen uint64 // the feed's generation (startFeed)
	cs  *mongodrv.ChangeStream

	large largeEvents
	split splitEvents

	checkpoint string // the newest position read, of a whole event or a quiet batch
	handed     string // the checkpoint of the last batch handed to fn
	changes    []store.Change
	// exact is the newest event known to be the last of its cluster time,
	// whose state is the one at that time; last is the newest event read.
	exact, last eventAt
	// lastTxn says whether the last event read belongs to a transaction.
	lastTxn bool
	// invalidated is the invalidate token the stream was last started
	// after, until the stream moves past it: while it is set, a resume
	// must use startAfter, which the driver does not do.
	invalidated string
}

// reopen closes the change stream, if one is open, and opens it again
// after from (with startAfter for an invalidate's token, which
// resumeAfter refuses): the one place a Follow opens its stream.
func (f *feedRun) reopen(from string, startAfter bool) error {
	closeStream(f.ctx, f.cs)
	f.split = splitEvents{}
	cs, err := f.m.openFeed(f.ctx, from, startAfter, &f.large)
	f.cs = cs
	return err
}

// hand gives fn the first n changes with checkpoint cp, then records the
// exact point if fn now has it.
func (f *feedRun) hand(n int, cp string) error {
	m := f.m
	b := store.Batch{Changes: f.changes[:n:n], Checkpoint: cp}
	f.changes = f.changes[n:]
	if len(b.Changes) > 0 {
		m.saw(f.gen, cp, b.Changes[0].Time)
	}
	if err := f.fn(b); err != nil {
		return err
	}
	f.handed = cp
	pending := time.Time{}
	if len(f.changes) > 0 {
		pending = f.changes[0].Time
	}
	m.saw(f.gen, f.checkpoint, pending)
	if isHighWaterMark(cp) {
		if read, ok := hwmRead(cp); ok {
			m.reached(f.gen, cp, read)
		}
	} else if f.exact.pos != "" && comparePositionOrder(f.exact.pos, f.handed) <= 0 {
		m.reached(f.gen, f.exact.pos, f.exact.ts)
	}
	return nil
}

// endBatch hands over what has been read at the end of a server batch,
// except the events of a transaction, whose later events may come in the
// next batch: they wait for an event of a later time or an empty batch.
func (f *feedRun) endBatch() error {
	n, cp := len(f.changes), f.checkpoint
	if f.lastTxn {
		for n > 0 && !changeTimeBefore(f.changes[n-1], f.last.ts) {
			n--
		}
		cp = f.exact.pos
		if cp == "" || !f.exact.ts.Before(f.last.ts) || comparePositionOrder(cp, f.handed) <= 0 {
			if n > 0 {
				return fmt.Errorf("follow: changes before %.40s without a position", f.last.pos)
			}
			f.m.saw(f.gen, f.checkpoint, firstTime(f.changes))
			return nil
		}
	}
	return f.hand(n, cp)
}

// quiet handles a TryNext that returned no event: an error (reopening the
// stream where the error allows it), the server's end of the stream, or
// an empty getMore, whose post-batch token moves the checkpoint.
func (f *feedRun) quiet() error {
	m, cs := f.m, f.cs
	if err := cs.Err(); err != nil {
		from, startAfter := f.checkpoint, false
		switch {
		case f.invalidated != "" && serverCode(err, codeInvalidResumeToken):
			// The driver resumed with resumeAfter the invalidate
			// token, which the server refuses.
			m.log.Warn("change stream resume after invalidate refused; starting after it again", "pos", f.invalidated, "err", err)
			from, startAfter = f.invalidated, true
		case f.large.retry(m.log, err):
			// An event the server cannot send: opened again from the
			// checkpoint, to read up to it one event a batch, then it
			// without its document.
			if f.invalidated != "" {
				from, startAfter = f.invalidated, true
			}
		default:
			return m.streamErr(f.ctx, "follow", f.checkpoint, err)
		}
		if err := f.reopen(from, startAfter); err != nil {
			return m.streamErr(f.ctx, "follow", f.checkpoint, err)
		}
		return nil
	}
	if cs.ID() == 0 {
		return fmt.Errorf("follow: the server closed the change stream after %.40s", f.checkpoint)
	}
	if f.split.midEvent() {
		return nil
	}
	// An empty getMore: the post-batch token is where the stream has read
	// to, and every event read is whole (a transaction's last batch has
	// come). Never the invalidate token itself: resumeAfter refuses it.
	cp := f.checkpoint
	if tok := tokenData(cs.ResumeToken()); tok != "" && comparePositionOrder(tok, laterPosition(f.checkpoint, f.invalidated)) > 0 {
		f.checkpoint, f.invalidated, cp = tok, "", tok
	}
	if cp != f.handed || len(f.changes) > 0 {
		return f.hand(len(f.changes), cp)
	}
	return nil
}

// event reads the stream's current event (or fragment of one) and hands
// over what is due at the end of a server batch.
func (f *feedRun) event() error {
	m := f.m
	// Current is only valid until the next call: readEvent copies what
	// it keeps.
	ev, whole, err := m.readEvent(f.ctx, &f.split, &f.large, f.cs.Current)
	if err != nil {
		return m.streamErr(f.ctx, "follow", f.checkpoint, err)
	}
	if !whole {
		if f.cs.RemainingBatchLength() == 0 && len(f.changes) > 0 {
			return f.endBatch()
		}
		return nil
	}
	pos := ev.pos
	if ev.op == "invalidate" {
		return f.invalidate(pos)
	}
	// An event of the checkpoint's cluster time in another token version
	// (a failover onto another server version in the middle of a
	// transaction) has no order against it: start over.
	if _, err := comparePositions(pos, f.checkpoint); err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	ts, err := positionTime(pos)
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	// An event of a later cluster time closes the previous one's: the
	// previous event was the last at its time, an exact point, usable now
	// if fn already has it (else once hand gives it).
	if f.last.pos != "" && f.last.ts.Before(ts) {
		f.exact = f.last
		if comparePositionOrder(f.exact.pos, f.handed) <= 0 {
			m.reached(f.gen, f.exact.pos, f.exact.ts)
		}
	}
	f.last = eventAt{pos: pos, ts: ts}
	f.checkpoint = laterPosition(f.checkpoint, pos)
	if comparePositionOrder(pos, f.invalidated) > 0 {
		f.invalidated = ""
	}
	if ev.ok {
		f.changes = append(f.changes, ev.change)
	}
	f.lastTxn = ev.txn
	if f.cs.RemainingBatchLength() > 0 {
		return nil
	}
	if err := f.endBatch(); err != nil {
		return err
	}
	if ev.leftOut {
		// The event over 16 MB is stepped over: whole batches again,
		// after it.
		if err := f.reopen(f.checkpoint, false); err != nil {
			return m.streamErr(f.ctx, "follow", f.checkpoint, err)
		}
	}
	return nil
}

// invalidate hands over what was read, and starts the stream again after
// the invalidate event at pos (the database was dropped or renamed).
func (f *feedRun) invalidate(pos string) error {
	m := f.m
	if len(f.changes) > 0 {
		if err := f.hand(len(f.changes), f.checkpoint); err != nil {
			return err
		}
	}
	// The invalidate token is no position to resume after (resumeAfter
	// refuses it); startAfter accepts it.
	m.log.Warn("change stream invalidated; starting after it", "pos", pos)
	// dropDatabase, the only invalidate of a database's stream, also
	// dropped the indexes: make them again.
	if err := m.createIndexes(f.ctx); err != nil {
		m.log.Error("indexes not recreated after invalidate", "err", err)
	}
	f.invalidated = pos
	if err := f.reopen(pos, true); err != nil {
		return m.streamErr(f.ctx, "follow after invalidate", f.checkpoint, err)
	}
	return nil
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
