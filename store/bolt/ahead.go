package bolt

import (
	"fmt"
	"os"
	"sync/atomic"

	"go.etcd.io/bbolt"
)

// Space written ahead. bbolt grows its file with ftruncate, which leaves
// a hole that each new page then fills: on ext4, as on most file systems,
// a write into a hole allocates blocks, and the commit's fdatasync must
// then also commit the file system's journal, together with whatever
// other processes changed meanwhile. On a busy machine those are the
// slowest fsyncs (measured here while other processes built code: p99
// 36 ms writing into a hole against 9 ms overwriting written blocks). So
// the committer keeps the space just past bbolt's last page written with
// zeros and synced, and a commit overwrites blocks the file already has.
const (
	// aheadTarget is how much past the last page the committer keeps
	// written: some tens of seconds of log at hundreds of writes a second.
	aheadTarget = 16 << 20
	// aheadLow is how little may be left before it writes more.
	aheadLow = aheadTarget / 2
	// aheadChunk is how much it writes at a time, between two commits
	// and under bbolt's writer lock: a few milliseconds of disk, so a
	// write waits at most that much longer once in a while.
	aheadChunk = 1 << 20
)

// ahead writes zeros past the database's last page.
type ahead struct {
	f    *os.File // the database file, opened again for writing
	last atomic.Int64
	// upTo is where the zeros written end; under bbolt's writer lock.
	upTo int64
	zero []byte
}

// openAhead opens path to write ahead of the pages of db.
func openAhead(path string) (*ahead, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s to write ahead: %w", path, err)
	}
	return &ahead{f: f, zero: make([]byte, aheadChunk)}, nil
}

// noted records the size of the database's pages after a commit.
func (a *ahead) noted(tx *bbolt.Tx) { a.last.Store(tx.Size()) }

// due reports whether less than aheadLow is written past the last page.
func (a *ahead) due() bool { return a.upTo-a.last.Load() < aheadLow }

// extend writes one chunk of zeros past the last page of tx, a write
// transaction that is then rolled back: it holds bbolt's writer lock, so
// no page past its size is in use or being allocated meanwhile. Zeros
// already written (upTo) are not written again.
func (a *ahead) extend(tx *bbolt.Tx) error {
	size := tx.Size()
	a.last.Store(size)
	from := max(a.upTo, size)
	if _, err := a.f.WriteAt(a.zero, from); err != nil {
		return fmt.Errorf("write ahead: %w", err)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("write ahead: %w", err)
	}
	a.upTo = from + aheadChunk
	return nil
}

func (a *ahead) close() error { return a.f.Close() }

// keepAhead writes a chunk of zeros past the last page if too little is
// written there. Called by the committer between commits. A failure is
// logged: the commits go on as bbolt writes them.
func (b *Store) keepAhead() {
	if b.ahead == nil || !b.ahead.due() {
		return
	}
	err := b.db.Update(func(tx *bbolt.Tx) error {
		if err := b.ahead.extend(tx); err != nil {
			return err
		}
		return errNoChange
	})
	if err != nil && err != errNoChange {
		b.log.Warn("could not write ahead of the store's pages; commits may wait longer", "err", err)
		b.ahead.close()
		b.ahead = nil
	}
}
