package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"changecast/store"
)

// The pruner: it deletes the oldest changes of the log, in chunks, past
// RETAIN_CHANGES or RETAIN_AGE, and records the last deleted seq, so a
// client resuming from before it is told its history is lost.

const (
	// pruneChunkSize is how many log entries one pruning transaction
	// deletes, so the pruner never holds the write lock for long.
	pruneChunkSize = 5000
)

// runPruner prunes the log every PruneInterval until ctx ends.
func (b *Store) runPruner(ctx context.Context) {
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
// chunks of pruneChunkSize per transaction. It returns how many it deleted.
func (b *Store) prune(ctx context.Context) (int, error) {
	total := 0
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		if b.isClosed() {
			return total, store.ErrClosed
		}
		n, err := b.pruneChunk()
		total += n
		if err != nil || n < pruneChunkSize {
			return total, err
		}
	}
}

// pruneChunk deletes up to pruneChunkSize log entries from the start of the
// log and advances the pruned mark in the same transaction.
func (b *Store) pruneChunk() (int, error) {
	cutoff := b.now().Add(-b.opts.RetainAge)
	n := 0
	err := b.update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		head := decodeUint(meta.Get(keySeq))
		var keepFrom uint64 // entries with seq >= keepFrom are kept by count
		if head > uint64(b.opts.RetainCount) {
			keepFrom = head - uint64(b.opts.RetainCount) + 1
		}
		type victim struct {
			seq    uint64
			topics []string
		}
		var victims []victim
		c := tx.Bucket(logBucket).Cursor()
		for k, v := c.First(); k != nil && len(victims) < pruneChunkSize; k, v = c.Next() {
			seq := decodeUint(k)
			var r record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode change %d: %w", seq, err)
			}
			if seq >= keepFrom && !r.Time.Before(cutoff) {
				break
			}
			victims = append(victims, victim{seq, r.topics()})
		}
		if len(victims) == 0 {
			return errNoChange
		}
		log, index := tx.Bucket(logBucket), tx.Bucket(topicBucket)
		for _, v := range victims {
			if err := log.Delete(seqKey(v.seq)); err != nil {
				return err
			}
			for _, topic := range v.topics {
				if err := index.Delete(topicKey(topic, v.seq)); err != nil {
					return err
				}
			}
		}
		n = len(victims)
		last := victims[len(victims)-1].seq
		if last > decodeUint(meta.Get(keyPruned)) {
			return meta.Put(keyPruned, seqKey(last))
		}
		return nil
	})
	if errors.Is(err, errNoChange) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("prune: %w", err)
	}
	return n, nil
}
