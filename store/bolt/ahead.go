package bolt

import (
	"fmt"
	"os"

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
	// aheadMin and aheadMax bound how much past the last page the
	// committer keeps written: half the pages in use, so a small store
	// (a test's) writes little, and a big one some tens of seconds of
	// log at hundreds of writes a second.
	aheadMin = 256 << 10
	aheadMax = 16 << 20
	// aheadChunk bounds what one commit writes ahead: a few milliseconds
	// of disk, so a write waits at most that much longer once in a while.
	aheadChunk = 1 << 20
	// zeroSize is the buffer of zeros it writes them from.
	zeroSize = 64 << 10
)

// zeros is what is written ahead.
var zeros [zeroSize]byte

// aheadWant is how much to keep written past size bytes of pages.
func aheadWant(size int64) int64 { return min(max(size/2, aheadMin), aheadMax) }

// ahead writes zeros past the database's last page. The committer's
// alone.
type ahead struct {
	f    *os.File // the database file, opened again for writing
	upTo int64    // where the zeros written end
}

// openAhead opens path to write ahead of the pages of its database.
func openAhead(path string) (*ahead, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s to write ahead: %w", path, err)
	}
	return &ahead{f: f}, nil
}

// extend writes zeros past the last page of tx, a write transaction
// before it commits, when less than half of aheadWant is written there:
// bbolt's writer lock is held, so no page past tx's size is in use, and
// the pages the commit adds are written after these zeros. Zeros already
// written are not written again.
func (a *ahead) extend(tx *bbolt.Tx) error {
	size := tx.Size()
	want, have := aheadWant(size), a.upTo-size
	if have >= want/2 {
		return nil
	}
	from := max(a.upTo, size)
	n := min(want-max(have, 0), aheadChunk)
	for off := int64(0); off < n; off += zeroSize {
		if _, err := a.f.WriteAt(zeros[:min(zeroSize, n-off)], from+off); err != nil {
			return fmt.Errorf("write ahead: %w", err)
		}
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("write ahead: %w", err)
	}
	a.upTo = from + n
	return nil
}

func (a *ahead) close() error { return a.f.Close() }

// keepAhead extends the space written ahead within the commit tx, if
// due. A failure is logged and writing ahead stops: the commits go on as
// bbolt writes them.
func (b *Store) keepAhead(tx *bbolt.Tx) {
	if b.ahead == nil {
		return
	}
	if err := b.ahead.extend(tx); err != nil {
		b.log.Warn("could not write ahead of the store's pages; commits may wait longer", "err", err)
		b.ahead.close()
		b.ahead = nil
	}
}
