package bolt

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"go.etcd.io/bbolt"
)

// seekHole is Linux's SEEK_HOLE: lseek to the first hole at or after the
// offset (the end of the file if there is none).
const seekHole = 4

// TestWritesAhead: as the log grows, the file's blocks just past the
// last page are already written, so a commit overwrites blocks instead of
// filling a hole that bbolt's ftruncate left (which makes its fsync
// commit the file system's journal too).
func TestWritesAhead(t *testing.T) {
	dir := t.TempDir()
	b := testOpen(t, dir, Options{}, nil)
	text := strings.Repeat("x", 4000)
	for range 300 { // over a megabyte of log: bbolt grows its file several times
		mustPost(t, b, "lobby", text)
	}
	var size int64
	if err := b.db.View(func(tx *bbolt.Tx) error { size = tx.Size(); return nil }); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hole, err := syscall.Seek(int(f.Fd()), 0, seekHole)
	if err != nil {
		t.Skipf("the file system cannot tell holes: %v", err)
	}
	if want := aheadWant(size) / 2; hole < size+want {
		t.Errorf("the file's first hole is at %d, %d bytes past its last page (at %d); want none before %d past it", hole, hole-size, size, want)
	}
}
