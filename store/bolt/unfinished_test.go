package bolt

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.etcd.io/bbolt"
)

// bboltNewFile returns the bytes bbolt writes when it makes a file: a
// file bbolt created and closed without a commit.
func bboltNewFile(tb testing.TB) []byte {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "new.db")
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := db.Close(); err != nil {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// TestOpenUnfinished: a store file left by a start that failed before
// its first commit (empty, or any part of what bbolt writes when it
// makes a file) is replaced by a new store at the next open, which then
// works; it is not called damaged.
func TestOpenUnfinished(t *testing.T) {
	made := bboltNewFile(t)
	if !bytes.Equal(made, initialPages(int64(os.Getpagesize()))) {
		t.Fatalf("bbolt's new file (%d bytes) differs from initialPages", len(made))
	}
	page := os.Getpagesize()
	blank := bytes.Clone(made)
	clear(blank[page : 2*page]) // meta 1 never written
	cases := map[string][]byte{
		"empty":                       nil,
		"first meta page":             made[:page],
		"both meta pages":             made[:2*page],
		"cut inside the second meta":  made[:page+100],
		"cut inside the root page":    made[:3*page+10],
		"whole, never committed":      made,
		"second meta blank":           blank,
		"zeros where a meta would be": make([]byte, page),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, fileName), data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := checkFile(filepath.Join(dir, fileName)); !errors.Is(err, errUnfinished) || errors.Is(err, ErrDamaged) {
				t.Errorf("checkFile: got %v, want an error wrapping errUnfinished, not ErrDamaged", err)
			}
			b := testOpen(t, dir, Options{}, nil)
			if head := mustHead(t, b); !strings.HasSuffix(head, "-0000000000000000") {
				t.Errorf("head of the new store: %s", head)
			}
			mustPost(t, b, "lobby", "after")
			mustOrder(t, b, "alice")
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			b = testOpen(t, dir, Options{}, nil)
			if n := len(wholeLog(t, b)); n != 2 {
				t.Errorf("log of the reopened store has %d changes, want 2", n)
			}
		})
	}
}

// TestOpenNotUnfinished: a file that is not exactly (part of) a new
// bbolt file, however small, is never replaced: a byte changed in a
// first meta, and a store that committed once, both cut to two pages,
// are refused as damaged and kept.
func TestOpenNotUnfinished(t *testing.T) {
	page := os.Getpagesize()
	changed := bytes.Clone(bboltNewFile(t)[:2*page])
	changed[page+pageHeaderSize+48]++ // meta 1's txid
	dir := t.TempDir()
	b := testOpen(t, dir, Options{}, nil)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"a meta changed": changed, "committed once": committed[:2*page]} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, fileName)
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			b, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrDamaged) {
				t.Errorf("got %v, want an error wrapping ErrDamaged", err)
			}
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, data) {
				t.Errorf("the file was changed or removed (%v)", err)
			}
		})
	}
}

// TestOpenUnfinishedInUse: an unfinished file another process holds
// (it is making the store) is left alone: Open fails at once.
func TestOpenUnfinishedInUse(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, fileName)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := lockFile(f); err != nil {
		t.Fatal(err)
	}
	b, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		b.Close()
		t.Fatal("Open succeeded on a file another process holds")
	}
	if !strings.Contains(err.Error(), "in use by another process") {
		t.Errorf("got %v, want it to say the file is in use", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the file is gone: %v", err)
	}
}

// TestOpenTornMeta: a meta page whose checksum no longer matches (a torn
// write) is not used, as bbolt does not use it: the store opens at the
// other meta, the transaction before, and has every change but the last.
func TestOpenTornMeta(t *testing.T) {
	dir, path := damagedDir(t)
	rewriteMeta(t, path, 16, 1<<40, false) // the root, checksum left stale
	b := testOpen(t, dir, Options{}, nil)
	if n := len(wholeLog(t, b)); n != 799 {
		t.Errorf("log has %d changes, want 799 (all but the last commit)", n)
	}
	mustPost(t, b, "lobby", "after")
}
