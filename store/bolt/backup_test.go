package bolt

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"go.etcd.io/bbolt"

	"changecast/store"
)

// backupTo writes b's backup into a new data directory and returns it.
func backupTo(tb testing.TB, b *Store) (dir string, n int64) {
	tb.Helper()
	dir = tb.TempDir()
	f, err := os.Create(filepath.Join(dir, fileName))
	if err != nil {
		tb.Fatal(err)
	}
	n, err = b.Backup(context.Background(), f)
	if err != nil {
		tb.Fatalf("Backup: %v", err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return dir, n
}

// TestBackupWhileWriting takes a backup while writers run and checks the
// copy: Inspect accepts it, it holds every write acknowledged before the
// backup began, and its log is the original's up to the copy's head,
// position for position, so a client's ids resume on it.
func TestBackupWhileWriting(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	ctx := context.Background()
	// Records larger than a page, so the copy holds overflow pages.
	big := strings.Repeat("\U0001F600", store.MaxTextLen-10)
	for i := range 50 {
		mustPost(t, b, "before", fmt.Sprintf("%d %s", i, big))
		mustOrder(t, b, fmt.Sprintf("c%d", i))
	}

	var (
		stop  = make(chan struct{})
		wg    sync.WaitGroup
		acked sync.Map // message id → text, once PostMessage returned
		done  atomic.Int64
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m, err := b.PostMessage(ctx, "during", "alice", fmt.Sprintf("w%d-%d %s", w, i, big[:4*(i%500+1)]))
				if err != nil {
					t.Errorf("PostMessage: %v", err)
					return
				}
				acked.Store(m.ID, m.Text)
				done.Add(1)
			}
		})
	}
	waitFor(t, "writes under way", func() bool { return done.Load() >= 20 })
	// Every write acknowledged now must be in the copy.
	var before []string
	acked.Range(func(k, _ any) bool { before = append(before, k.(string)); return true })
	headBefore := mustHead(t, b)
	dir, n := backupTo(t, b)
	atBackup := done.Load()
	waitFor(t, "writes after the backup", func() bool { return done.Load() >= atBackup+20 })
	close(stop)
	wg.Wait()

	r, err := Inspect(filepath.Join(dir, fileName))
	if err != nil {
		t.Fatalf("Inspect of the copy: %v", err)
	}
	if r.Size != n || r.Format != formatVersion || r.Deployment != b.deployment || r.Orders != 50 || r.ActiveOrders != 50 {
		t.Errorf("Inspect: %+v; want %d bytes, format %d, deployment %s, 50 orders all active", r, n, formatVersion, b.deployment)
	}
	if r.Head < headBefore || r.Last != r.Head || r.First != b.pos(1) || r.Messages != r.Changes-50 {
		t.Errorf("Inspect: %+v; want the log from %s to its head, not before %s, one change per message and order", r, b.pos(1), headBefore)
	}

	c := testOpen(t, dir, Options{}, nil)
	inCopy := roomMessages(t, c, "during")
	for _, id := range before {
		if text, _ := acked.Load(id); inCopy[id] != text {
			t.Errorf("message %s, acknowledged before the backup, is not in the copy", id)
		}
	}
	orig, cp := wholeLog(t, b), wholeLog(t, c)
	if len(cp) == 0 || len(cp) > len(orig) {
		t.Fatalf("the copy's log has %d changes, the original %d", len(cp), len(orig))
	}
	for i := range cp {
		if cp[i].Pos != orig[i].Pos || cp[i].Topic != orig[i].Topic || !sameMessage(cp[i].Message, orig[i].Message) {
			t.Fatalf("change %d: the copy has %s %s, the original %s %s", i, cp[i].Pos, cp[i].Topic, orig[i].Pos, orig[i].Topic)
		}
	}
	if got := mustHead(t, c); got != cp[len(cp)-1].Pos {
		t.Errorf("the copy's head is %s, its last change %s", got, cp[len(cp)-1].Pos)
	}
	// A client resuming on the copy from a position before the backup
	// gets exactly the copy's later changes.
	got, err := catchUp(t, c, []string{store.RoomTopic("during")}, headBefore, mustHead(t, c))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, ch := range cp {
		if ch.Pos > headBefore && ch.Topic == store.RoomTopic("during") {
			want = append(want, ch.Pos)
		}
	}
	if !slices.Equal(positions(got), want) {
		t.Errorf("CatchUp on the copy from %s: %d changes, want %d", headBefore, len(got), len(want))
	}
	t.Logf("backup of %d bytes while %d writes ran (%d acknowledged before it); the copy holds %d changes, the original %d",
		n, done.Load(), len(before), len(cp), len(orig))
}

// roomMessages returns every message of room by id, text as value.
func roomMessages(tb testing.TB, b *Store, room string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	for before := ""; ; {
		ms, err := b.ListMessages(context.Background(), room, before, store.MaxListLimit)
		if err != nil {
			tb.Fatal(err)
		}
		for _, m := range ms {
			out[m.ID] = m.Text
		}
		if len(ms) < store.MaxListLimit {
			return out
		}
		before = ms[0].ID
	}
}

func sameMessage(a, b *store.Message) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ID == b.ID && a.Text == b.Text && a.Author == b.Author && a.Room == b.Room
}

// TestBackupStops checks Backup's errors: a cancelled context and a
// closed store.
func TestBackupStops(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	mustPost(t, b, "r", "hello")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var buf bytes.Buffer
	if _, err := b.Backup(ctx, &buf); !errors.Is(err, context.Canceled) {
		t.Errorf("Backup with a cancelled context: got %v, want context.Canceled", err)
	}
	b.Close()
	if _, err := b.Backup(context.Background(), &buf); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Backup after Close: got %v, want ErrClosed", err)
	}
}

// TestInspect checks what Inspect reports of a store it knows the
// content of, and that it reads without writing: the file is the same
// afterwards, a missing file stays missing, and a file an open store
// holds is refused.
func TestInspect(t *testing.T) {
	dir := t.TempDir()
	b := testOpen(t, dir, Options{}, nil)
	o1 := mustOrder(t, b, "ann")
	mustOrder(t, b, "bob")
	if _, err := b.UpdateOrderStatus(context.Background(), o1.ID, store.StatusCancelled, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 7 {
		mustPost(t, b, fmt.Sprintf("room-%d", i%2), "hi")
	}
	path := filepath.Join(dir, fileName)
	if _, err := Inspect(path); err == nil || !strings.Contains(err.Error(), "running server") {
		t.Errorf("Inspect of a file an open store holds: got %v, want it refused", err)
	}
	head := mustHead(t, b)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	sum := func() [32]byte {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(data)
	}
	st0, _ := os.Stat(path)
	sum0 := sum()
	r, err := Inspect(path)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	want := Report{Path: path, Size: st0.Size(), PageSize: os.Getpagesize(), Format: formatVersion, Deployment: b.deployment,
		Orders: 2, ActiveOrders: 1, Messages: 7, Changes: 10, First: b.pos(1), Last: b.pos(10), Head: head}
	if r != want {
		t.Errorf("Inspect:\n got %+v\nwant %+v", r, want)
	}
	for _, line := range []string{"format 2", "orders: 2 (1 active)", "messages: 7", "10 changes, " + b.pos(1) + ".." + b.pos(10)} {
		if !strings.Contains(r.String(), line) {
			t.Errorf("report %q does not say %q", r.String(), line)
		}
	}
	if st1, _ := os.Stat(path); sum() != sum0 || !st1.ModTime().Equal(st0.ModTime()) {
		t.Errorf("Inspect changed the file")
	}

	missing := filepath.Join(t.TempDir(), "none.db")
	if _, err := Inspect(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Inspect of a missing file: got %v, want ErrNotExist", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Inspect created %s", missing)
	}

	// Damage: cut short, and a file that is not a store.
	cut := filepath.Join(t.TempDir(), "cut.db")
	data, _ := os.ReadFile(path)
	if err := os.WriteFile(cut, data[:highWater(t, path)*int64(os.Getpagesize())/2], 0o600); err != nil {
		t.Fatal(err)
	}
	notStore := filepath.Join(t.TempDir(), "text.db")
	if err := os.WriteFile(notStore, bytes.Repeat([]byte("not a store\n"), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{cut, notStore} {
		if _, err := Inspect(p); !errors.Is(err, ErrDamaged) {
			t.Errorf("Inspect(%s): got %v, want ErrDamaged", filepath.Base(p), err)
		}
	}
}

// TestInspectFormat1 inspects a format 1 file, which has no order
// indexes: Inspect counts its active orders from the orders themselves,
// and reports the same after a server brings the file to format 2.
func TestInspectFormat1(t *testing.T) {
	dir := t.TempDir()
	b := testOpen(t, dir, Options{}, nil)
	for i := range 5 {
		o := mustOrder(t, b, fmt.Sprintf("c%d", i))
		if i%2 == 0 {
			if _, err := b.UpdateOrderStatus(context.Background(), o.ID, store.StatusCancelled, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	b.Close()
	path := filepath.Join(dir, fileName)
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{byCustomer, activeBucket} {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(metaBucket).Put(keyFormat, seqKey(1))
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(path)
	if err != nil || r.Format != 1 || r.Orders != 5 || r.ActiveOrders != 2 {
		t.Fatalf("Inspect of format 1: %+v, %v; want format 1, 5 orders, 2 active", r, err)
	}
	testOpen(t, dir, Options{}, nil).Close()
	r, err = Inspect(path)
	if err != nil || r.Format != formatVersion || r.Orders != 5 || r.ActiveOrders != 2 {
		t.Errorf("Inspect after a server opened it: %+v, %v; want format %d, 5 orders, 2 active", r, err, formatVersion)
	}
}

// TestRestoreMovesOn: a store opened from a copy marked by MarkRestore
// moves its log past every position the original made after the copy; a
// client holding one of those is told its history is lost, while a client
// from before the copy resumes exactly, new changes included, and a
// second open moves nothing.
func TestRestoreMovesOn(t *testing.T) {
	ctx := context.Background()
	orig := testOpen(t, "", Options{}, nil)
	head := func(b *Store) string {
		t.Helper()
		pos, err := b.Head(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return pos
	}
	mustPost(t, orig, "r", "one")
	beforeCopy := head(orig)
	mustPost(t, orig, "r", "two")
	copied := head(orig)
	dir, _ := backupTo(t, orig)
	mustPost(t, orig, "r", "three (lost)")
	afterCopy := head(orig)
	mustPost(t, orig, "r", "four (lost)")
	if err := MarkRestore(filepath.Join(dir, fileName)); err != nil {
		t.Fatalf("MarkRestore: %v", err)
	}
	if r, err := Inspect(filepath.Join(dir, fileName)); err != nil {
		t.Fatalf("Inspect of a marked copy: %v", err)
	} else if r.Messages != 2 {
		t.Fatalf("the copy holds %d messages, want 2", r.Messages)
	}

	restored := testOpen(t, dir, Options{}, nil)
	moved := head(restored)
	if moved <= afterCopy || moved <= copied {
		t.Fatalf("restored head %s is not past the original's %s", moved, afterCopy)
	}
	// The restored store writes its own changes; the first would have
	// taken the position of "three (lost)" without the move.
	mustPost(t, restored, "r", "five")
	mustPost(t, restored, "r", "six")

	texts := func(after string) ([]string, error) {
		var got []string
		err := restored.CatchUp(ctx, []string{store.RoomTopic("r")}, after, head(restored), func(c store.Change) error {
			got = append(got, c.Message.Text)
			return nil
		})
		return got, err
	}
	if got, err := texts(beforeCopy); err != nil || !slices.Equal(got, []string{"two", "five", "six"}) {
		t.Errorf("resume from before the copy: %q, %v; want two, five, six", got, err)
	}
	if got, err := texts(copied); err != nil || !slices.Equal(got, []string{"five", "six"}) {
		t.Errorf("resume from the copy's head: %q, %v; want five, six", got, err)
	}
	if err := restored.CheckPosition(afterCopy); err != nil {
		t.Errorf("CheckPosition(%s): %v; a lost position is well-formed and behind the head", afterCopy, err)
	}
	if got, err := texts(afterCopy); !errors.Is(err, store.ErrHistoryLost) {
		t.Errorf("resume from a position made after the copy: %q, %v; want ErrHistoryLost", got, err)
	}
	errStop := errors.New("stop")
	if err := restored.Follow(ctx, afterCopy, func(store.Batch) error { return errStop }); !errors.Is(err, store.ErrHistoryLost) {
		t.Errorf("Follow from a lost position: %v; want ErrHistoryLost", err)
	}

	// Reopened, it moves nothing more.
	if err := restored.Close(); err != nil {
		t.Fatal(err)
	}
	again := testOpen(t, dir, Options{}, nil)
	last := head(again)
	mustPost(t, again, "r", "seven")
	if got, want := head(again), again.pos(again.head.Load()); got != want || again.head.Load() != mustSeq(t, again, last)+1 {
		t.Fatalf("after a reopen the next position is %s (head was %s): want the next one, no second move", got, last)
	}
}

// mustSeq returns the sequence number of pos.
func mustSeq(tb testing.TB, b *Store, pos string) uint64 {
	tb.Helper()
	seq, err := b.parsePos(pos)
	if err != nil {
		tb.Fatal(err)
	}
	return seq
}
