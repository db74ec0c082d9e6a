package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The embedded change log. Every committed write appends one entry, keyed by
// a sequence number (1, 2, ...), in the same transaction as the write; a
// per-topic index (topic, 0x00, seq) lets CatchUp range-scan a few topics.
// A position is "<deployment>-<seq>": 8 hex characters made with the
// database, a dash, 16 hex characters of the sequence number, so positions
// of one database order bytewise like the log. Seq 0 is the empty log. The
// pruner deletes a prefix of the log and records the last deleted seq;
// resuming from before it loses history.

const (
	// boltDeploymentLen is the length of a deployment id.
	boltDeploymentLen = 8
	// boltPosLen is the length of a position: deployment, dash, 16 hex.
	boltPosLen = boltDeploymentLen + 1 + 16
	// boltReadChunk is how many changes Follow and CatchUp read in one read
	// transaction: it bounds their memory and how long a transaction stays
	// open (bbolt cannot reuse pages freed after an open reader began).
	boltReadChunk = 512
	// boltPruneChunk is how many log entries one pruning transaction
	// deletes, so the pruner never holds the write lock for long.
	boltPruneChunk = 5000
)

// boltRecord is a log entry as stored.
type boltRecord struct {
	Topic   string    `json:"topic"`
	Op      string    `json:"op"`
	Order   *Order    `json:"order,omitempty"`
	Message *Message  `json:"message,omitempty"`
	Time    time.Time `json:"time"`
}

// append logs a change with sequence number seq (from alloc) and indexes it
// under its topic.
func (t *boltTxn) append(seq uint64, rec *boltRecord) {
	rec.Time = t.now
	t.putJSON(boltLogBucket, boltSeqKey(seq), rec)
	t.put(boltTopicBucket, boltTopicKey(rec.Topic, seq), []byte{})
}

// boltTopicKey is a topic index key: topic, 0x00, seq big-endian.
func boltTopicKey(topic string, seq uint64) []byte {
	k := make([]byte, 0, len(topic)+9)
	k = append(k, topic...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// pos returns the position of sequence number seq.
func (b *Bolt) pos(seq uint64) string {
	var s [boltPosLen]byte
	copy(s[:], b.deployment)
	s[boltDeploymentLen] = '-'
	hex.Encode(s[boltDeploymentLen+1:], binary.BigEndian.AppendUint64(nil, seq))
	return string(s[:])
}

// parsePos returns the sequence number of pos, or an error wrapping
// ErrInvalidPosition if pos is malformed or from another deployment.
func (b *Bolt) parsePos(pos string) (uint64, error) {
	if len(pos) != boltPosLen || pos[boltDeploymentLen] != '-' || !boltIsHex(pos[boltDeploymentLen+1:]) || !boltIsHex(pos[:boltDeploymentLen]) {
		return 0, fmt.Errorf("position %.40q is malformed: %w", pos, ErrInvalidPosition)
	}
	if pos[:boltDeploymentLen] != b.deployment {
		return 0, fmt.Errorf("position %s is from another deployment: %w", pos, ErrInvalidPosition)
	}
	var seq [8]byte
	if _, err := hex.Decode(seq[:], []byte(pos[boltDeploymentLen+1:])); err != nil {
		return 0, fmt.Errorf("position %s: %v: %w", pos, err, ErrInvalidPosition)
	}
	return binary.BigEndian.Uint64(seq[:]), nil
}

// Head returns the position of the newest change in the log (the log's
// start position if it is empty). It returns an error wrapping ErrClosed
// after Close.
func (b *Bolt) Head(ctx context.Context) (string, error) {
	var seq uint64
	err := b.view(ctx, func(tx *bolt.Tx) error {
		seq = boltUint(tx.Bucket(boltMetaBucket).Get(boltKeySeq))
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("head: %w", err)
	}
	return b.pos(seq), nil
}

// CheckPosition returns an error wrapping ErrInvalidPosition if pos is not
// a position this store could have made: malformed, from another
// deployment, or ahead of the newest change. It does not check whether the
// history after pos is still retained. It is safe for concurrent use.
func (b *Bolt) CheckPosition(pos string) error {
	seq, err := b.parsePos(pos)
	if err != nil {
		return err
	}
	if seq <= b.head.Load() {
		return nil
	}
	// The in-memory head trails a commit by a moment; ask the database.
	err = b.view(context.Background(), func(tx *bolt.Tx) error {
		return b.checkAhead(tx, seq)
	})
	if err != nil {
		return fmt.Errorf("check position: %w", err)
	}
	return nil
}

// checkAhead returns an error wrapping ErrInvalidPosition if seq is ahead
// of the log's head in tx.
func (b *Bolt) checkAhead(tx *bolt.Tx, seq uint64) error {
	if head := boltUint(tx.Bucket(boltMetaBucket).Get(boltKeySeq)); seq > head {
		return fmt.Errorf("position %s is ahead of the log head %s: %w", b.pos(seq), b.pos(head), ErrInvalidPosition)
	}
	return nil
}

// checkRetained returns an error wrapping ErrHistoryLost if a change after
// seq has been pruned.
func (b *Bolt) checkRetained(tx *bolt.Tx, seq uint64) error {
	if pruned := boltUint(tx.Bucket(boltMetaBucket).Get(boltKeyPruned)); seq < pruned {
		return fmt.Errorf("changes after %s pruned up to %s: %w", b.pos(seq), b.pos(pruned), ErrHistoryLost)
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
func (b *Bolt) Follow(ctx context.Context, after string, fn func(Batch) error) error {
	seq, err := b.parsePos(after)
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	err = b.view(ctx, func(tx *bolt.Tx) error {
		if err := b.checkAhead(tx, seq); err != nil {
			return err
		}
		return b.checkRetained(tx, seq)
	})
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	if err := fn(Batch{Checkpoint: after}); err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Take the waiter before reading, so a commit after the read wakes us.
		wake := b.waiter()
		changes, last, err := b.readLog(ctx, seq, boltReadChunk)
		if err != nil {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return ctx.Err()
			}
			return fmt.Errorf("follow after %s: %w", b.pos(seq), err)
		}
		if len(changes) > 0 {
			seq = last
			if err := fn(Batch{Changes: changes, Checkpoint: b.pos(last)}); err != nil {
				return err
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-b.closing:
			return fmt.Errorf("follow: %w", ErrClosed)
		case <-wake:
		}
	}
}

// readLog returns up to limit changes after seq, in order, and the seq of
// the last one, ending the changes at a commit boundary when it can.
func (b *Bolt) readLog(ctx context.Context, seq uint64, limit int) ([]Change, uint64, error) {
	var changes []Change
	last := seq
	err := b.view(ctx, func(tx *bolt.Tx) error {
		if err := b.checkRetained(tx, seq); err != nil {
			return err
		}
		c := tx.Bucket(boltLogBucket).Cursor()
		for k, v := c.Seek(boltSeqKey(seq + 1)); k != nil && len(changes) < limit; k, v = c.Next() {
			s := boltUint(k)
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

// decodeChange turns log entry seq into a Change.
func (b *Bolt) decodeChange(seq uint64, v []byte) (Change, error) {
	var r boltRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return Change{}, fmt.Errorf("decode change %d: %w", seq, err)
	}
	return Change{Pos: b.pos(seq), Topic: r.Topic, Op: r.Op, Order: r.Order, Message: r.Message, Time: r.Time}, nil
}

// CatchUp calls fn, in log order, with each change on one of topics whose
// position p has after < p <= until. fn is called without any transaction
// open. It returns an error wrapping ErrInvalidPosition if after or until
// is malformed, from another deployment or ahead of the head, ErrHistoryLost
// if a change after after has been pruned, ErrInvalid for a malformed topic,
// ctx.Err() if ctx ends, and fn's error if fn fails. It is safe for
// concurrent use.
func (b *Bolt) CatchUp(ctx context.Context, topics []string, after, until string, fn func(Change) error) error {
	from, err := b.parsePos(after)
	if err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	to, err := b.parsePos(until)
	if err != nil {
		return fmt.Errorf("catch up: until: %w", err)
	}
	for _, topic := range topics {
		if _, _, ok := ParseTopic(topic); !ok {
			return fmt.Errorf("catch up: topic %.80q: %w", topic, ErrInvalid)
		}
	}
	topics = slices.Compact(slices.Sorted(slices.Values(topics)))
	err = b.view(ctx, func(tx *bolt.Tx) error {
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
		changes, last, done, err := b.readTopics(ctx, topics, from, to, boltReadChunk)
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
// more. It merges the topics' index ranges by seq.
func (b *Bolt) readTopics(ctx context.Context, topics []string, after, until uint64, limit int) (changes []Change, last uint64, done bool, err error) {
	err = b.view(ctx, func(tx *bolt.Tx) error {
		if err := b.checkRetained(tx, after); err != nil {
			return err
		}
		type head struct {
			c      *bolt.Cursor
			prefix []byte
			seq    uint64 // current seq; 0 = exhausted
		}
		next := func(h *head, k []byte) {
			h.seq = 0
			if k != nil && bytes.HasPrefix(k, h.prefix) && len(k) == len(h.prefix)+8 {
				if s := boltUint(k[len(h.prefix):]); s <= until {
					h.seq = s
				}
			}
		}
		index := tx.Bucket(boltTopicBucket)
		heads := make([]*head, len(topics))
		for i, topic := range topics {
			h := &head{c: index.Cursor(), prefix: boltTopicKey(topic, 0)[:len(topic)+1]}
			k, _ := h.c.Seek(boltTopicKey(topic, after+1))
			next(h, k)
			heads[i] = h
		}
		log := tx.Bucket(boltLogBucket)
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
			v := log.Get(boltSeqKey(min.seq))
			if v == nil {
				return fmt.Errorf("index names change %d, which the log lacks", min.seq)
			}
			ch, err := b.decodeChange(min.seq, v)
			if err != nil {
				return err
			}
			changes = append(changes, ch)
			last = min.seq
			k, _ := min.c.Next()
			next(min, k)
		}
		return nil
	})
	return changes, last, done, err
}

// runPruner prunes the log every PruneInterval until ctx ends.
func (b *Bolt) runPruner(ctx context.Context) {
	defer b.wg.Done()
	t := time.NewTicker(b.opts.PruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := b.prune(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			b.log.Error("prune change log", "err", err)
		case n > 0:
			b.log.Info("pruned change log", "deleted", n)
		}
	}
}

// prune deletes log entries (and their index entries) that are neither
// among the newest RetainCount nor younger than RetainAge, oldest first, in
// chunks of boltPruneChunk per transaction. It returns how many it deleted.
func (b *Bolt) prune(ctx context.Context) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		if b.isClosed() {
			return total, ErrClosed
		}
		n, err := b.pruneChunk()
		total += n
		if err != nil || n < boltPruneChunk {
			return total, err
		}
	}
}

// pruneChunk deletes up to boltPruneChunk log entries from the start of the
// log and advances the pruned mark in the same transaction.
func (b *Bolt) pruneChunk() (int, error) {
	cutoff := b.now().Add(-b.opts.RetainAge)
	n := 0
	err := b.update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(boltMetaBucket)
		head := boltUint(meta.Get(boltKeySeq))
		var keepFrom uint64 // entries with seq >= keepFrom are kept by count
		if head > uint64(b.opts.RetainCount) {
			keepFrom = head - uint64(b.opts.RetainCount) + 1
		}
		type victim struct {
			seq   uint64
			topic string
		}
		var victims []victim
		c := tx.Bucket(boltLogBucket).Cursor()
		for k, v := c.First(); k != nil && len(victims) < boltPruneChunk; k, v = c.Next() {
			seq := boltUint(k)
			var r struct {
				Topic string    `json:"topic"`
				Time  time.Time `json:"time"`
			}
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode change %d: %w", seq, err)
			}
			if seq >= keepFrom && !r.Time.Before(cutoff) {
				break
			}
			victims = append(victims, victim{seq, r.Topic})
		}
		if len(victims) == 0 {
			return boltErrNoChange
		}
		log, index := tx.Bucket(boltLogBucket), tx.Bucket(boltTopicBucket)
		for _, v := range victims {
			if err := log.Delete(boltSeqKey(v.seq)); err != nil {
				return err
			}
			if err := index.Delete(boltTopicKey(v.topic, v.seq)); err != nil {
				return err
			}
		}
		n = len(victims)
		last := victims[len(victims)-1].seq
		if last > boltUint(meta.Get(boltKeyPruned)) {
			return meta.Put(boltKeyPruned, boltSeqKey(last))
		}
		return nil
	})
	if errors.Is(err, boltErrNoChange) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	return n, nil
}

// Oldest returns the commit time of the oldest change the log holds and
// true, or false for an empty log: how far back a client can resume. It
// returns an error wrapping ErrClosed after Close.
func (b *Bolt) Oldest(ctx context.Context) (time.Time, bool, error) {
	var (
		t  time.Time
		ok bool
	)
	err := b.view(ctx, func(tx *bolt.Tx) error {
		k, v := tx.Bucket(boltLogBucket).Cursor().First()
		if k == nil {
			return nil
		}
		c, err := b.decodeChange(boltUint(k), v)
		t, ok = c.Time, err == nil
		return err
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("oldest change: %w", err)
	}
	return t, ok, nil
}
