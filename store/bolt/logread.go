package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"changecast/store"
)

// Reading the change log: its head, positions, the feed (Follow) and
// catch-up on topics (CatchUp). The format is in logformat.go.

// Head returns the position of the newest change in the log (the log's
// start position if it is empty). It returns an error wrapping ErrClosed
// after Close.
func (b *Store) Head(ctx context.Context) (string, error) {
	var seq uint64
	err := b.view(ctx, func(tx *bbolt.Tx) error {
		seq = decodeUint(tx.Bucket(metaBucket).Get(keySeq))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("head: %w", err)
	}
	return b.pos(seq), nil
}

// ComparePositions compares positions a and b in log order. The store's
// positions are its deployment id and a fixed-width hex sequence number,
// so within one deployment they order as strings. It is safe for
// concurrent use.
func (b *Store) ComparePositions(x, y string) int { return strings.Compare(x, y) }

// CheckPosition returns an error wrapping ErrInvalidPosition if pos is not
// a position this store could have made: malformed, from another
// deployment, or ahead of the newest change. It does not check whether the
// history after pos is still retained. It is safe for concurrent use.
func (b *Store) CheckPosition(pos string) error {
	seq, err := b.parsePos(pos)
	if err != nil {
		return err
	}
	if seq <= b.head.Load() {
		return nil
	}
	// The in-memory head trails a commit by a moment; ask the database.
	err = b.view(context.Background(), func(tx *bbolt.Tx) error {
		return b.checkAhead(tx, seq)
	})
	if err != nil {
		return fmt.Errorf("check position: %w", err)
	}
	return nil
}

// checkAhead returns an error wrapping ErrInvalidPosition if seq is ahead
// of the log's head in tx.
func (b *Store) checkAhead(tx *bbolt.Tx, seq uint64) error {
	if head := decodeUint(tx.Bucket(metaBucket).Get(keySeq)); seq > head {
		return fmt.Errorf("position %s is ahead of the log head %s: %w", b.pos(seq), b.pos(head), store.ErrInvalidPosition)
	}
	return nil
}

// checkRetained returns an error wrapping ErrHistoryLost if a change after
// seq has been pruned, or if seq is a position the store was restored
// past (MarkRestore): the changes up to it were lost with the original.
func (b *Store) checkRetained(tx *bbolt.Tx, seq uint64) error {
	meta := tx.Bucket(metaBucket)
	if pruned := decodeUint(meta.Get(keyPruned)); seq < pruned {
		return fmt.Errorf("changes after %s pruned up to %s: %w", b.pos(seq), b.pos(pruned), store.ErrHistoryLost)
	}
	if lost := meta.Get(keyLost); len(lost) == 16 {
		if after, upTo := decodeUint(lost[:8]), decodeUint(lost[8:]); after < seq && seq < upTo {
			return fmt.Errorf("position %s is after the backup this store was restored from (%s): %w", b.pos(seq), b.pos(after), store.ErrHistoryLost)
		}
	}
	return nil
}

// Follow calls fn first with an empty batch whose checkpoint is after, then
// with every change after it in log order, in batches (one per commit,
// unless a commit is larger than a read chunk), and then waits for new
// commits, until ctx ends (it returns ctx.Err()), fn returns an error (it
// returns it) or the store closes (ErrClosed). It returns an error wrapping
// ErrInvalidPosition for a bad after, and ErrHistoryLost if changes after
// after are pruned before Follow reads them. fn is called without any
// transaction open. Follow is safe for concurrent use.
func (b *Store) Follow(ctx context.Context, after string, fn func(store.Batch) error) error {
	seq, err := b.parsePos(after)
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	err = b.view(ctx, func(tx *bbolt.Tx) error {
		if err := b.checkAhead(tx, seq); err != nil {
			return err
		}
		return b.checkRetained(tx, seq)
	})
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	if err := fn(store.Batch{Checkpoint: after}); err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Take the waiter before reading, so a commit after the read wakes us.
		wake := b.waiter()
		changes, last, err := b.readLog(ctx, seq, readChunk)
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return ctx.Err()
			}
			return fmt.Errorf("follow after %s: %w", b.pos(seq), err)
		}
		if len(changes) > 0 {
			seq = last
			if err := fn(store.Batch{Changes: changes, Checkpoint: b.pos(last)}); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.closing:
			return fmt.Errorf("follow: %w", store.ErrClosed)
		case <-wake:
		}
	}
}

// readLog returns up to limit changes after seq, in order, and the seq of
// the last one, ending the changes at a commit boundary when it can.
func (b *Store) readLog(ctx context.Context, seq uint64, limit int) ([]store.Change, uint64, error) {
	var changes []store.Change
	last := seq
	err := b.view(ctx, func(tx *bbolt.Tx) error {
		if err := b.checkRetained(tx, seq); err != nil {
			return err
		}
		c := tx.Bucket(logBucket).Cursor()
		for k, v := c.Seek(seqKey(seq + 1)); k != nil && len(changes) < limit; k, v = c.Next() {
			s := decodeUint(k)
			ch, err := b.decodeChange(s, v)
			if err != nil {
				return err
			}
			changes = append(changes, ch)
			last = s
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	return changes, last, nil
}

// CatchUp calls fn, in log order, with each change on one of topics whose
// position p has after < p <= until: a change is on its own topic and on
// each of its list topics, and fn gets it once however many of topics it
// is on. It merges the topics' index ranges, so its cost is the number of
// index entries of the topics in the range, whatever else the log holds.
// fn is called without any transaction open. It returns an error wrapping ErrInvalidPosition if after or until
// is malformed, from another deployment or ahead of the head, ErrHistoryLost
// if a change after after has been pruned, ErrInvalid for a malformed topic,
// ctx.Err() if ctx ends, and fn's error if fn fails. It is safe for
// concurrent use.
func (b *Store) CatchUp(ctx context.Context, topics []string, after, until string, fn func(store.Change) error) error {
	from, err := b.parsePos(after)
	if err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	to, err := b.parsePos(until)
	if err != nil {
		return fmt.Errorf("catch up: until: %w", err)
	}
	for _, topic := range topics {
		if _, _, ok := store.ParseTopic(topic); !ok {
			return fmt.Errorf("catch up: topic %.80q: %w", topic, store.ErrInvalid)
		}
	}
	topics = slices.Compact(slices.Sorted(slices.Values(topics)))
	err = b.view(ctx, func(tx *bbolt.Tx) error {
		if err := b.checkAhead(tx, from); err != nil {
			return err
		}
		if err := b.checkAhead(tx, to); err != nil {
			return err
		}
		return b.checkRetained(tx, from)
	})
	if err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	for from < to && len(topics) > 0 {
		changes, last, done, err := b.readTopics(ctx, topics, from, to, readChunk)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("catch up after %s: %w", b.pos(from), err)
		}
		for _, c := range changes {
			if err := fn(c); err != nil {
				return err
			}
		}
		if done {
			return nil
		}
		from = last
	}
	return nil
}

// readTopics returns, in log order, up to limit changes on topics with
// after < seq <= until, the seq of the last one, and whether there are no
// more. It merges the topics' index ranges by seq, taking a change that
// several of the topics index once.
func (b *Store) readTopics(ctx context.Context, topics []string, after, until uint64, limit int) (changes []store.Change, last uint64, done bool, err error) {
	err = b.view(ctx, func(tx *bbolt.Tx) error {
		if err := b.checkRetained(tx, after); err != nil {
			return err
		}
		type head struct {
			c      *bbolt.Cursor
			prefix []byte
			seq    uint64 // current seq; 0 = exhausted
		}
		next := func(h *head, k []byte) {
			h.seq = 0
			if k != nil && bytes.HasPrefix(k, h.prefix) && len(k) == len(h.prefix)+8 {
				if s := decodeUint(k[len(h.prefix):]); s <= until {
					h.seq = s
				}
			}
		}
		index := tx.Bucket(topicBucket)
		heads := make([]*head, len(topics))
		for i, topic := range topics {
			h := &head{c: index.Cursor(), prefix: topicKey(topic, 0)[:len(topic)+1]}
			k, _ := h.c.Seek(topicKey(topic, after+1))
			next(h, k)
			heads[i] = h
		}
		log := tx.Bucket(logBucket)
		for len(changes) < limit {
			var min *head
			for _, h := range heads {
				if h.seq != 0 && (min == nil || h.seq < min.seq) {
					min = h
				}
			}
			if min == nil {
				done = true
				return nil
			}
			v := log.Get(seqKey(min.seq))
			if v == nil {
				return fmt.Errorf("index names change %d, which the log lacks", min.seq)
			}
			ch, err := b.decodeChange(min.seq, v)
			if err != nil {
				return err
			}
			changes = append(changes, ch)
			last = min.seq
			for _, h := range heads {
				if h.seq == last {
					k, _ := h.c.Next()
					next(h, k)
				}
			}
		}
		return nil
	})
	return changes, last, done, err
}

// Oldest returns the commit time of the oldest change the log holds and
// true, or false for an empty log: how far back a client can resume. It
// returns an error wrapping ErrClosed after Close.
func (b *Store) Oldest(ctx context.Context) (time.Time, bool, error) {
	var (
		t  time.Time
		ok bool
	)
	err := b.view(ctx, func(tx *bbolt.Tx) error {
		k, v := tx.Bucket(logBucket).Cursor().First()
		if k == nil {
			return nil
		}
		c, err := b.decodeChange(decodeUint(k), v)
		t, ok = c.Time, err == nil
		return err
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("oldest change: %w", err)
	}
	return t, ok, nil
}

// decodeChange turns log entry seq into a Change.
func (b *Store) decodeChange(seq uint64, v []byte) (store.Change, error) {
	var r record
	if err := json.Unmarshal(v, &r); err != nil {
		return store.Change{}, fmt.Errorf("decode change %d: %w", seq, err)
	}
	o := (*store.Order)(r.Order)
	if o != nil {
		fillHistory(o) // a change logged before histories were kept
	}
	return store.Change{Pos: b.pos(seq), Topic: r.Topic, Lists: r.lists(), Op: r.Op, Order: o, Message: r.Message, Time: r.Time}, nil
}
