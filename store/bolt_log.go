package store

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

const (
	// boltDeploymentLen is the length of the deployment id in hex.
	boltDeploymentLen = 8
	// boltPosLen is the length of a position: deployment, '-', 16 hex.
	boltPosLen = boltDeploymentLen + 1 + 16
	// boltFollowChunk bounds the changes one read transaction of Follow
	// takes, so a follower far behind neither holds a transaction open
	// for long nor builds a huge batch.
	boltFollowChunk = 1024
	// boltCatchUpChunk bounds the records one read transaction of CatchUp
	// fetches.
	boltCatchUpChunk = 512
	// boltPruneChunk bounds the log entries one pruning transaction
	// deletes, so pruning never stalls writers for long.
	boltPruneChunk = 5000
)

// boltRecord is one change as the log stores it.
type boltRecord struct {
	Topic   string    `json:"topic"`
	Op      string    `json:"op"`
	Order   *Order    `json:"order,omitempty"`
	Message *Message  `json:"message,omitempty"`
	Time    time.Time `json:"time"`
}

// append logs change seq in the group's transaction, with the topic
// index entry that lets CatchUp find it.
func (t *boltTxn) append(seq uint64, r *boltRecord) {
	r.Time = t.now
	t.putJSON(boltLogBucket, boltSeqKey(seq), r)
	t.put(boltTopicBucket, boltTopicKey(r.Topic, seq), nil)
}

// boltTopicKey is a topic index key: topic, 0x00, seq.
func boltTopicKey(topic string, seq uint64) []byte {
	k := make([]byte, 0, len(topic)+9)
	k = append(k, topic...)
	k = append(k, 0)
	return append(k, boltSeqKey(seq)...)
}

// pos returns the position of change seq.
func (b *Bolt) pos(seq uint64) string {
	return b.deployment + "-" + fmt.Sprintf("%016x", seq)
}

// parsePos returns the sequence number of a position of this deployment,
// or an error wrapping ErrInvalidPosition.
func (b *Bolt) parsePos(pos string) (uint64, error) {
	if len(pos) != boltPosLen || pos[boltDeploymentLen] != '-' {
		return 0, fmt.Errorf("position %.40q: malformed: %w", pos, ErrInvalidPosition)
	}
	if pos[:boltDeploymentLen] != b.deployment {
		return 0, fmt.Errorf("position %.40q: from another deployment: %w", pos, ErrInvalidPosition)
	}
	hex := pos[boltDeploymentLen+1:]
	if !boltIsHex(hex) {
		return 0, fmt.Errorf("position %.40q: malformed: %w", pos, ErrInvalidPosition)
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("position %.40q: %w", pos, ErrInvalidPosition)
	}
	return seq, nil
}

// toChange turns a stored record into a Change.
func (b *Bolt) toChange(seq uint64, v []byte) (Change, error) {
	var r boltRecord
	if err := json.Unmarshal(v, &r); err != nil {
		return Change{}, fmt.Errorf("decode change %d: %w", seq, err)
	}
	return Change{Pos: b.pos(seq), Topic: r.Topic, Op: r.Op, Order: r.Order, Message: r.Message, Time: r.Time}, nil
}

// Head returns the position of the newest change (of seq 0 in an empty log).
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

// CheckPosition returns an error wrapping ErrInvalidPosition if pos is
// malformed, from another deployment, or ahead of the newest change.
func (b *Bolt) CheckPosition(pos string) error {
	seq, err := b.parsePos(pos)
	if err != nil {
		return err
	}
	if seq <= b.head.Load() {
		return nil
	}
	var head uint64
	if err := b.view(context.Background(), func(tx *bolt.Tx) error {
		head = boltUint(tx.Bucket(boltMetaBucket).Get(boltKeySeq))
		return nil
	}); err != nil {
		return fmt.Errorf("check position: %w", err)
	}
	if seq > head {
		return fmt.Errorf("position %s: ahead of the log: %w", pos, ErrInvalidPosition)
	}
	return nil
}

// retained returns an error wrapping ErrHistoryLost if changes after seq
// have been pruned, read in tx.
func boltRetained(tx *bolt.Tx, seq uint64) error {
	if pruned := boltUint(tx.Bucket(boltMetaBucket).Get(boltKeyPruned)); seq < pruned {
		return fmt.Errorf("changes after %d were pruned (up to %d): %w", seq, pruned, ErrHistoryLost)
	}
	return nil
}

// Follow calls fn with every change after position after, in log order,
// one batch per read of the log, until ctx ends (it returns ctx.Err()),
// fn fails (its error is returned) or the store closes (ErrClosed). It
// first calls fn with an empty batch whose checkpoint is after. It returns
// an error wrapping ErrInvalidPosition for a bad position and
// ErrHistoryLost when changes after it were pruned, also if the pruner
// overtakes a follower that lags too far.
func (b *Bolt) Follow(ctx context.Context, after string, fn func(Batch) error) error {
	seq, err := b.parsePos(after)
	if err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	if err := b.CheckPosition(after); err != nil {
		return fmt.Errorf("follow: %w", err)
	}
	if err := b.view(ctx, func(tx *bolt.Tx) error { return boltRetained(tx, seq) }); err != nil {
		return fmt.Errorf("follow from %s: %w", after, err)
	}
	if err := fn(Batch{Checkpoint: after}); err != nil {
		return err
	}
	for {
		wait := b.waiter()
		if b.head.Load() <= seq {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-b.closing:
				return fmt.Errorf("follow: %w", ErrClosed)
			case <-wait:
			}
			continue
		}
		var changes []Change
		err := b.view(ctx, func(tx *bolt.Tx) error {
			if err := boltRetained(tx, seq); err != nil {
				return err
			}
			c := tx.Bucket(boltLogBucket).Cursor()
			for k, v := c.Seek(boltSeqKey(seq + 1)); k != nil && len(changes) < boltFollowChunk; k, v = c.Next() {
				ch, err := b.toChange(boltUint(k), v)
				if err != nil {
					return err
				}
				changes = append(changes, ch)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("follow from %s: %w", b.pos(seq), err)
		}
		if len(changes) == 0 {
			continue
		}
		seq, _ = b.parsePos(changes[len(changes)-1].Pos)
		if err := fn(Batch{Changes: changes, Checkpoint: changes[len(changes)-1].Pos}); err != nil {
			return err
		}
	}
}

// CatchUp calls fn, in log order, with each change on one of topics whose
// position p has after < p <= until. It reads the topic index, so its cost
// grows with the changes of those topics, not of the whole log. It returns
// an error wrapping ErrInvalidPosition for a bad position and
// ErrHistoryLost when changes after after were pruned.
func (b *Bolt) CatchUp(ctx context.Context, topics []string, after, until string, fn func(Change) error) error {
	from, err := b.parsePos(after)
	if err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	to, err := b.parsePos(until)
	if err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	if err := b.CheckPosition(after); err != nil {
		return fmt.Errorf("catch up: %w", err)
	}
	if to <= from {
		return nil
	}
	// The sequence numbers of every wanted change, from the topic index.
	var seqs []uint64
	err = b.view(ctx, func(tx *bolt.Tx) error {
		if err := boltRetained(tx, from); err != nil {
			return err
		}
		c := tx.Bucket(boltTopicBucket).Cursor()
		for _, topic := range slices.Compact(slices.Sorted(slices.Values(topics))) {
			prefix := boltTopicKey(topic, 0)[:len(topic)+1]
			for k, _ := c.Seek(boltTopicKey(topic, from+1)); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
				seq := boltUint(k[len(prefix):])
				if seq > to {
					break
				}
				seqs = append(seqs, seq)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("catch up from %s: %w", after, err)
	}
	slices.Sort(seqs)
	for len(seqs) > 0 {
		chunk := seqs[:min(len(seqs), boltCatchUpChunk)]
		seqs = seqs[len(chunk):]
		changes := make([]Change, 0, len(chunk))
		err := b.view(ctx, func(tx *bolt.Tx) error {
			log := tx.Bucket(boltLogBucket)
			for _, seq := range chunk {
				v := log.Get(boltSeqKey(seq))
				if v == nil {
					return fmt.Errorf("change %d was pruned during catch-up: %w", seq, ErrHistoryLost)
				}
				ch, err := b.toChange(seq, v)
				if err != nil {
					return err
				}
				changes = append(changes, ch)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("catch up from %s: %w", after, err)
		}
		for _, ch := range changes {
			if err := fn(ch); err != nil {
				return err
			}
		}
	}
	return nil
}

// Prune deletes the log's changes beyond the newest RetainCount or older
// than RetainAge, in bounded transactions, and returns how many it
// deleted. Positions before the newest deleted change then answer
// ErrHistoryLost. The pruner calls it every PruneInterval.
func (b *Bolt) Prune(ctx context.Context) (int, error) {
	total := 0
	for {
		if b.isClosed() {
			return total, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
		cutoff := b.now().Add(-b.opts.RetainAge)
		n := 0
		err := b.db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket(boltMetaBucket)
			head := boltUint(meta.Get(boltKeySeq))
			var keepFrom uint64 // changes with seq >= keepFrom are within the count
			if head > uint64(b.opts.RetainCount) {
				keepFrom = head - uint64(b.opts.RetainCount) + 1
			}
			logB, idx := tx.Bucket(boltLogBucket), tx.Bucket(boltTopicBucket)
			c := logB.Cursor()
			var last uint64
			for k, v := c.First(); k != nil && n < boltPruneChunk; k, v = c.First() {
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
				if err := c.Delete(); err != nil {
					return err
				}
				if err := idx.Delete(boltTopicKey(r.Topic, seq)); err != nil {
					return err
				}
				last, n = seq, n+1
			}
			if n == 0 {
				return boltErrNoChange
			}
			return meta.Put(boltKeyPruned, boltSeqKey(last))
		})
		if err != nil && err != boltErrNoChange {
			return total, fmt.Errorf("prune: %w", err)
		}
		total += n
		if n < boltPruneChunk {
			return total, nil
		}
	}
}

// Oldest returns the commit time of the oldest change the log holds, and
// false if it holds none: how far back a client can resume.
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
		var r struct {
			Time time.Time `json:"time"`
		}
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		t, ok = r.Time, true
		return nil
	})
	return t, ok, err
}

// runPruner prunes the log every PruneInterval until ctx ends.
func (b *Bolt) runPruner(ctx context.Context) {
	defer b.wg.Done()
	tick := time.NewTicker(b.opts.PruneInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			n, err := b.Prune(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				b.log.Error("pruning the change log failed", "err", err)
			case n > 0:
				b.log.Info("pruned the change log", "changes", n)
			}
		}
	}
}
