package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"changecast/internal/latency"
	"changecast/store"
)

// errNoChange rolls back a transaction that wrote nothing, sparing a
// commit and its fsync.
var errNoChange = errors.New("no change")

// write is one write waiting for the committer.
type write struct {
	ctx context.Context
	// apply validates and then writes, within the group's transaction. It
	// returns the write's own error (the write is then skipped and must have
	// written nothing); storage failures go to txn.err.
	apply func(t *txn) error
	done  chan error // buffered; receives exactly one answer
	// submitted is when the write was submitted (latency.Now), with stage
	// timing on; first and last are the changes it appended, if any.
	submitted   int64
	first, last uint64
}

// txn is the state of one group transaction.
type txn struct {
	tx    *bbolt.Tx
	now   time.Time // commit time of every change in the group
	seq   uint64    // newest seq allocated
	clock uint64    // unix seconds used in ids; never decreases
	err   error     // first storage error; aborts the group
}

// alloc returns the next sequence number.
func (t *txn) alloc() uint64 {
	t.seq++
	return t.seq
}

// id returns the id for the document written by change seq: 8 hex of unix
// seconds then 16 hex of seq. Seconds never decrease, even if the wall
// clock does, so ids increase strictly.
func (t *txn) id(seq uint64) string {
	t.clock = max(t.clock, uint64(max(t.now.Unix(), 0)))
	return fmt.Sprintf("%08x%016x", uint32(t.clock), seq)
}

func (t *txn) put(bucket, key, value []byte) {
	if t.err != nil {
		return
	}
	if err := t.tx.Bucket(bucket).Put(key, value); err != nil {
		t.err = fmt.Errorf("put %s: %w", bucket, err)
	}
}

func (t *txn) putJSON(bucket, key []byte, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		if t.err == nil {
			t.err = fmt.Errorf("encode %s: %w", bucket, err)
		}
		return
	}
	t.put(bucket, key, data)
}

// submit queues a write for the committer and waits for its answer. A
// write whose ctx ends before its group starts is not applied; once queued,
// it is answered whatever happens to ctx, so a nil error always means
// committed and a non-nil one means not applied.
func (b *Store) submit(ctx context.Context, apply func(*txn) error) error {
	if b.isClosed() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &write{ctx: ctx, apply: apply, done: make(chan error, 1)}
	if latency.On() {
		w.submitted = latency.Now()
	}
	select {
	case b.queue <- w:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.closing:
		return store.ErrClosed
	}
	select {
	case err := <-w.done:
		return err
	case <-b.committerDone:
		select {
		case err := <-w.done:
			return err
		default:
			return store.ErrClosed
		}
	}
}

// runCommitter takes every queued write and commits them together, until
// Close. While one group commits, new writes queue for the next.
func (b *Store) runCommitter() {
	defer b.wg.Done()
	defer close(b.committerDone)
	group := make([]*write, 0, queueSize)
	for {
		select {
		case <-b.closing:
			return
		case w := <-b.queue:
			group = append(group[:0], w)
		drain:
			for len(group) < queueSize {
				select {
				case w := <-b.queue:
					group = append(group, w)
				default:
					break drain
				}
			}
			b.taken.Add(int64(len(group)))
			b.commit(group)
			clear(group)
		}
	}
}

// commit applies a group of writes in one transaction and answers each
// writer after the commit. A write's own error fails only that write. If
// the transaction itself fails, each write is retried alone, so a write
// that breaks the transaction does not take the others with it.
func (b *Store) commit(group []*write) {
	errs := make([]error, len(group))
	var head uint64
	now := b.now().UTC().Truncate(time.Millisecond)
	err := b.update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		t := &txn{
			tx:    tx,
			now:   now,
			seq:   decodeUint(meta.Get(keySeq)),
			clock: decodeUint(meta.Get(keyClock)),
		}
		start := t.seq
		for i, w := range group {
			if err := w.ctx.Err(); err != nil {
				errs[i] = fmt.Errorf("not applied: %w", err)
				continue
			}
			before := t.seq
			errs[i] = w.apply(t)
			w.first, w.last = before+1, t.seq
			if t.err != nil {
				return t.err
			}
		}
		if t.seq == start {
			return errNoChange
		}
		t.put(metaBucket, keySeq, seqKey(t.seq))
		t.put(metaBucket, keyClock, seqKey(t.clock))
		head = t.seq
		b.keepAhead(tx)
		return t.err
	})
	switch {
	case err == nil:
		b.head.Store(head)
		b.commits.Add(1)
		b.stamp(group)
		b.wake()
	case errors.Is(err, errNoChange):
	case len(group) > 1:
		b.log.Warn("group commit failed; committing its writes one by one", "writes", len(group), "err", err)
		for _, w := range group {
			b.commit([]*write{w})
		}
		return
	default:
		errs[0] = fmt.Errorf("commit: %w", err)
	}
	for i, w := range group {
		w.done <- errs[i]
	}
}

// stamp records, with stage timing on, when each change of a committed
// group was submitted and committed (see package latency).
func (b *Store) stamp(group []*write) {
	if !latency.On() {
		return
	}
	now := latency.Now()
	for _, w := range group {
		for seq := w.first; seq <= w.last && w.first != 0; seq++ {
			latency.Committed(b.pos(seq), w.submitted, now)
		}
	}
}

// wake tells every Follow waiting for a commit that one happened.
func (b *Store) wake() {
	b.notifyMu.Lock()
	close(b.notify)
	b.notify = make(chan struct{})
	b.notifyMu.Unlock()
}

// waiter returns a channel that is closed by the next commit.
func (b *Store) waiter() <-chan struct{} {
	b.notifyMu.Lock()
	defer b.notifyMu.Unlock()
	return b.notify
}
