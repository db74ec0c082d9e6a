package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"changecast/store"
)

// damagedDir returns a data directory holding a closed store with
// enough orders and messages for a tree several levels deep, and the path
// of its file.
func damagedDir(tb testing.TB) (dir, path string) {
	tb.Helper()
	dir = tb.TempDir()
	b, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	for i := range 600 {
		if _, err := b.PostMessage(ctx, fmt.Sprintf("room-%d", i%7), "alice", strings.Repeat("x", 100+i%50)); err != nil {
			tb.Fatal(err)
		}
		if i%3 == 0 {
			if _, err := b.CreateOrder(ctx, "bob", []store.Item{{SKU: "sku-1", Qty: 1}}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := b.Close(); err != nil {
		tb.Fatal(err)
	}
	return dir, filepath.Join(dir, fileName)
}

// flip flips n random bytes of the file at path outside its two meta
// pages, with the given seed.
func flip(tb testing.TB, path string, n int, seed uint64) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, seed))
	const metas = 2 * 4096
	for range n {
		data[metas+r.IntN(len(data)-metas)] ^= byte(1 + r.IntN(255))
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// TestOpenDamaged: a cut-short, overwritten or rewritten store file
// is refused at open with an error naming the file, saying what is wrong
// and what to do; the file is kept as it was, and the process never
// crashes (each Open runs in a child process, which a crash would end).
func TestOpenDamaged(t *testing.T) {
	if dir := os.Getenv(openChildEnv); dir != "" {
		openChild(dir)
		return
	}
	page := int64(os.Getpagesize())
	tests := []struct {
		name   string
		damage func(t *testing.T, path string)
		want   string
	}{
		{"last page in use cut off", func(t *testing.T, path string) {
			os.Truncate(path, (highWater(t, path)-1)*page)
		}, "cut short"},
		{"cut inside the last page in use", func(t *testing.T, path string) {
			os.Truncate(path, highWater(t, path)*page-100)
		}, "cut short"},
		{"cut in half", func(t *testing.T, path string) {
			os.Truncate(path, highWater(t, path)*page/2)
		}, "cut short"},
		{"not a store file", func(t *testing.T, path string) {
			os.WriteFile(path, []byte(strings.Repeat("not bbolt\n", 2000)), 0o600)
		}, "neither meta page"},
		{"root page overwritten", func(t *testing.T, path string) {
			f, _ := os.OpenFile(path, os.O_WRONLY, 0)
			defer f.Close()
			f.WriteAt(make([]byte, page), 3*page) // every page from 2 on is in the tree or free
			f.WriteAt(make([]byte, page), 2*page)
		}, "damaged"},
		{"a page's id damaged", func(t *testing.T, path string) {
			// Everything else about the page is right: bbolt's own walk
			// at open would panic in a goroutine of its own.
			writeUint64(t, path, bucketRoot(t, path, messageBucket)*uint64(page), 1<<40)
		}, "says it is page"},
		{"meta rewritten with its checksum, root at another page", func(t *testing.T, path string) {
			rewriteMeta(t, path, 16, bucketRoot(t, path, messageBucket), true)
		}, `leads to no "meta" bucket`},
		{"meta rewritten with its checksum, root at the log's tree", func(t *testing.T, path string) {
			rewriteMeta(t, path, 16, bucketRoot(t, path, logBucket), true)
		}, `leads to no "meta" bucket`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, path := damagedDir(t)
			tt.damage(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			msg, isDamaged := openInChild(t, dir)
			if !isDamaged {
				t.Fatalf("Open of a damaged file: %s; want an error wrapping ErrDamaged", msg)
			}
			for _, want := range []string{path, tt.want, "`changecast backup`", "`changecast check " + path + "`", "keep this file"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
				t.Errorf("the damaged file was changed or removed (%v)", err)
			}
		})
	}
}

// openChildEnv names the data directory a test's child process opens.
const openChildEnv = "CHANGECAST_BOLT_OPEN_DIR"

// openInChild opens the store in dir in a child process running the
// current top-level test, which must start by calling openChild when
// openChildEnv is set. It returns what the child reports: "opened", or
// the error of Open and whether it wraps ErrDamaged. A child that
// crashes fails the test.
func openInChild(tb testing.TB, dir string) (msg string, isDamaged bool) {
	tb.Helper()
	top, _, _ := strings.Cut(tb.Name(), "/")
	cmd := exec.Command(os.Args[0], "-test.run=^"+top+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), openChildEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	got, ok := strings.CutPrefix(string(out), "open: ")
	if err != nil || !ok {
		tb.Fatalf("the child opening the store crashed or failed (%v):\n%.4000s", err, out)
	}
	got, _, _ = strings.Cut(got, "\n")
	if rest, ok := strings.CutPrefix(got, "damaged: "); ok {
		return rest, true
	}
	return got, false
}

// openChild opens the store in dir, reads through it, closes it and
// prints one line for openInChild.
func openChild(dir string) {
	b, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	switch {
	case errors.Is(err, ErrDamaged):
		fmt.Println("open: damaged:", err)
	case err != nil:
		fmt.Println("open: failed:", err)
	default:
		ctx := context.Background()
		for i := range 7 {
			b.ListMessages(ctx, fmt.Sprintf("room-%d", i), "", store.MaxListLimit)
		}
		b.ListOrders(ctx, store.OrderQuery{Limit: store.MaxListLimit})
		b.Close()
		fmt.Println("open: opened")
	}
}

// bucketRoot returns the root page of the top-level bucket name in the
// closed store file at path (0 for an inline bucket).
func bucketRoot(tb testing.TB, path string, name []byte) uint64 {
	tb.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var root uint64
	db.View(func(tx *bbolt.Tx) error {
		root = uint64(tx.Bucket(name).Root())
		return nil
	})
	if root == 0 {
		tb.Fatalf("bucket %s is inline", name)
	}
	return root
}

// writeUint64 writes v little-endian at offset at of the file at path.
func writeUint64(tb testing.TB, path string, at, v uint64) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(binary.LittleEndian.AppendUint64(nil, v), int64(at)); err != nil {
		tb.Fatal(err)
	}
}

// rewriteMeta sets the uint64 at offset field of the meta with the
// higher transaction id (the one bbolt uses) of the file at path to v,
// and its checksum to match if sum is true (a meta rewritten on purpose)
// or leaves it (a torn write).
func rewriteMeta(tb testing.TB, path string, field int, v uint64, sum bool) {
	tb.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	ps := int(readMeta(data).pageSize)
	at := pageHeaderSize
	if readMeta(data[ps:]).txid > readMeta(data).txid {
		at += ps
	}
	m := data[at : at+metaSize]
	binary.LittleEndian.PutUint64(m[field:], v)
	if sum {
		h := fnv.New64a()
		h.Write(m[:metaChecksumAt])
		binary.LittleEndian.PutUint64(m[metaChecksumAt:], h.Sum64())
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// TestOpenDamagedRandom flips 200 random bytes outside the meta pages,
// for many seeds: the store either refuses the file at open or opens it
// and answers every read with data or an error. Reaching the end of the
// test means the process never crashed.
func TestOpenDamagedRandom(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	dir, path := damagedDir(t)
	clean, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	refused := 0
	const seeds = 40
	for seed := range uint64(seeds) {
		if err := os.WriteFile(path, clean, 0o600); err != nil {
			t.Fatal(err)
		}
		flip(t, path, 200, seed)
		b, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			if !errors.Is(err, ErrDamaged) {
				t.Errorf("seed %d: got %v, want an error wrapping ErrDamaged", seed, err)
			}
			refused++
			continue
		}
		// Opened: damage in values (which bbolt does not checksum) shows
		// as errors on the reads that meet it.
		for i := range 7 {
			b.ListMessages(ctx, fmt.Sprintf("room-%d", i), "", store.MaxListLimit)
		}
		b.CatchUp(ctx, []string{store.RoomTopic("room-1")}, b.pos(0), mustHead(t, b), func(store.Change) error { return nil })
		b.PostMessage(ctx, "room-1", "alice", "after")
		if err := b.Close(); err != nil {
			t.Logf("seed %d: close: %v", seed, err)
		}
	}
	t.Logf("%d of %d damaged files refused at open", refused, seeds)
}

// TestDamagedAtRunTime: pages damaged under an open store fail the
// reads that meet them, with an error, and the process stays up.
func TestDamagedAtRunTime(t *testing.T) {
	dir, path := damagedDir(t)
	b := testOpen(t, dir, Options{}, nil)
	ctx := context.Background()
	if _, err := b.ListMessages(ctx, "room-1", "", store.MaxListLimit); err != nil {
		t.Fatal(err)
	}
	// Cut the file under the mapping: reading its pages is now a SIGBUS.
	if err := os.Truncate(path, 3*int64(os.Getpagesize())); err != nil {
		t.Fatal(err)
	}
	_, err := b.ListMessages(ctx, "room-1", "", store.MaxListLimit)
	if !errors.Is(err, ErrDamaged) {
		t.Errorf("ListMessages on a cut file: got %v, want an error wrapping ErrDamaged", err)
	}
	_, err = b.GetOrder(ctx, "0123456789abcdef01234567")
	if !errors.Is(err, ErrDamaged) {
		t.Errorf("GetOrder on a cut file: got %v, want an error wrapping ErrDamaged", err)
	}
	if err := b.Ping(ctx); err == nil {
		t.Errorf("Ping on a cut file: got nil, want an error")
	}
}

// highWater returns the number of pages the store file at path uses
// (bbolt's high-water page id); the file beyond them is unused room to grow.
func highWater(tb testing.TB, path string) int64 {
	tb.Helper()
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var buf [pageHeaderSize + metaSize]byte
	if _, err := f.ReadAt(buf[:], 0); err != nil {
		tb.Fatal(err)
	}
	return int64(readMeta(buf[:]).pgid)
}

// TestOpenCutSlack: a file cut short by a page of its unused room to
// grow has lost nothing: it opens with every change.
func TestOpenCutSlack(t *testing.T) {
	dir, path := damagedDir(t)
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	page := int64(os.Getpagesize())
	if st.Size()-page < highWater(t, path)*page {
		t.Fatalf("no unused page at the end of %d bytes", st.Size())
	}
	if err := os.Truncate(path, st.Size()-page); err != nil {
		t.Fatal(err)
	}
	b := testOpen(t, dir, Options{}, nil)
	if n := len(wholeLog(t, b)); n != 800 {
		t.Errorf("log has %d changes, want 800", n)
	}
	mustPost(t, b, "lobby", "after")
}

// TestOpenMissingFile: a missing file is a fresh store.
func TestOpenMissingFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new")
	b := testOpen(t, dir, Options{}, nil)
	if head := mustHead(t, b); !strings.HasSuffix(head, "-0000000000000000") {
		t.Errorf("head of a fresh store: got %s", head)
	}
}

// limitFileSize sets this process's RLIMIT_FSIZE soft limit (writes
// past it fail with EFBIG) and returns a function restoring the old one.
// It affects the whole process, so tests using it must not run in parallel.
func limitFileSize(tb testing.TB, limit uint64) (restore func()) {
	tb.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		tb.Fatal(err)
	}
	lim := old
	lim.Cur = limit
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		tb.Fatal(err)
	}
	var once bool
	restore = func() {
		if !once {
			once = true
			if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
				tb.Fatal(err)
			}
		}
	}
	tb.Cleanup(restore)
	return restore
}

// TestPingReportsFailingWrites: while writes fail (here the file may
// not grow, as on a full disk) Ping fails; once writes can succeed again,
// Ping's own probe write makes it healthy without any other write.
func TestPingReportsFailingWrites(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	dir := t.TempDir()
	b := testOpen(t, dir, Options{}, clock.Now)
	ctx := context.Background()
	mustPost(t, b, "lobby", "before")
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping of a healthy store: %v", err)
	}
	st, err := os.Stat(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatal(err)
	}
	restore := limitFileSize(t, uint64(st.Size()))
	var failed error
	for i := 0; failed == nil && i < 1000; i++ {
		_, failed = b.PostMessage(ctx, "lobby", "alice", strings.Repeat("y", store.MaxTextLen))
	}
	if failed == nil {
		t.Fatal("no write failed with the file size limited")
	}
	t.Logf("write failed: %v", failed)
	if err := b.Ping(ctx); err == nil {
		t.Fatal("Ping after a failed write: got nil, want an error")
	}
	restore()
	clock.Advance(probeInterval)
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping once writes can succeed: %v", err)
	}
	mustPost(t, b, "lobby", "after")
}

// BenchmarkCheckFile measures the start-up check, bbolt's own Tx.Check
// and bbolt's open (which, with NoFreelistSync, walks the tree too), on a
// store file of BOLT_CHECK_MB megabytes (default 64) of messages.
func BenchmarkCheckFile(b *testing.B) {
	mb := 64
	if s := os.Getenv("BOLT_CHECK_MB"); s != "" {
		fmt.Sscan(s, &mb)
	}
	path := filepath.Join(b.TempDir(), fileName)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoSync: true, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	text := []byte(strings.Repeat("m", 200))
	var seq uint64
	for st, _ := os.Stat(path); st.Size() < int64(mb)<<20; st, _ = os.Stat(path) {
		err := db.Update(func(tx *bbolt.Tx) error {
			for _, name := range [][]byte{metaBucket, topicBucket, orderBucket, byCustomer, activeBucket} {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
			if err := tx.Bucket(metaBucket).Put(keyFormat, seqKey(formatVersion)); err != nil {
				return err
			}
			rooms, _ := tx.CreateBucketIfNotExists(messageBucket)
			log, _ := tx.CreateBucketIfNotExists(logBucket)
			for range 10000 {
				seq++
				id := fmt.Sprintf("%08x%016x", 0x65000000, seq)
				if err := rooms.Put(messageKey(fmt.Sprintf("room-%d", seq%100), id), text); err != nil {
					return err
				}
				if err := log.Put(seqKey(seq), text); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	db.Close()
	st, _ := os.Stat(path)
	b.Logf("file %d MB, %d records", st.Size()>>20, 2*seq)
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if err := checkFile(path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bbolt Tx.Check", func(b *testing.B) {
		for b.Loop() {
			if problems, err := bboltCheck(path, nil); err != nil || len(problems) > 0 {
				b.Fatal(err, problems)
			}
		}
	})
	b.Run("bbolt.Open", func(b *testing.B) {
		for b.Loop() {
			db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
			if err != nil {
				b.Fatal(err)
			}
			db.Close()
		}
	})
}
