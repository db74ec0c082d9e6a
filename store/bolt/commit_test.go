package bolt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"changecast/store"
)

// stallCommitter holds bbolt's write lock and has the committer take one
// write (a post to room "stall"), so that it waits inside that write's
// transaction and every write queued afterwards waits in the queue.
// queued(n) waits until n writes wait in the queue; release lets the
// committer go on: it commits the stalled write alone, then every queued
// write in one group. The stalled write's answer arrives on first.
func stallCommitter(tb testing.TB, b *Store) (queued func(n int), release func(), first <-chan error) {
	tb.Helper()
	unlock := holdWrites(tb, b)
	base := b.taken.Load()
	done := make(chan error, 1)
	go func() {
		_, err := b.PostMessage(context.Background(), "stall", "alice", "stalled")
		done <- err
	}()
	waitFor(tb, "the committer to take the stalled write", func() bool { return b.taken.Load() > base })
	queued = func(n int) {
		tb.Helper()
		waitFor(tb, fmt.Sprintf("%d writes in the queue", n), func() bool { return len(b.queue) >= n })
	}
	return queued, func() { unlock(0) }, done
}

// waitFor polls cond until it holds, failing the test after maxWait.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for deadline := time.Now().Add(maxWait); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			tb.Fatalf("waited %v for %s", maxWait, what)
		}
	}
}

// await returns the value on ch, failing the test after maxWait.
func await[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(maxWait):
		tb.Fatalf("no answer for %s within %v", what, maxWait)
		panic("unreachable")
	}
}

// roomTexts returns the texts of room's messages, oldest first.
func roomTexts(tb testing.TB, b *Store, room string) []string {
	tb.Helper()
	msgs, err := b.ListMessages(context.Background(), room, "", store.MaxListLimit)
	if err != nil {
		tb.Fatalf("ListMessages(%s): %v", room, err)
	}
	var texts []string
	for _, m := range msgs {
		texts = append(texts, m.Text)
	}
	return texts
}

// TestCommitsAreSynced checks that the database is opened to fsync every
// commit (and every growth of the file). bbolt syncs inside Tx.Commit,
// where the store has no hook, so the syscalls themselves are counted
// against acknowledgements by TestAcknowledgedWritesAreSynced in
// e2e, under strace; this is the in-process check.
func TestCommitsAreSynced(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	if b.db.NoSync || b.db.NoGrowSync {
		t.Fatalf("database opened with NoSync=%v, NoGrowSync=%v; every commit must be synced before it is acknowledged", b.db.NoSync, b.db.NoGrowSync)
	}
}

// TestGroupCommitGroups checks the grouping the Store promises: writes
// that queue while a commit is in progress commit together, in one
// transaction, when it ends.
func TestGroupCommitGroups(t *testing.T) {
	const writes = 64 // well under queueSize, which caps a group
	b := testOpen(t, "", Options{}, nil)
	commits := b.commits.Load()
	queued, release, first := stallCommitter(t, b)
	errs := make(chan error, writes)
	for i := range writes {
		go func() { _, err := b.PostMessage(context.Background(), "lobby", "bob", fmt.Sprint(i)); errs <- err }()
	}
	queued(writes)
	release()
	if err := await(t, first, "the stalled write"); err != nil {
		t.Fatalf("stalled write: %v", err)
	}
	for range writes {
		if err := await(t, errs, "a queued write"); err != nil {
			t.Errorf("queued write: %v", err)
		}
	}
	if n := b.commits.Load() - commits; n != 2 {
		t.Errorf("the stalled write and %d writes queued behind it took %d commits, want 2", writes, n)
	}
	if n := len(roomTexts(t, b, "lobby")); n != writes {
		t.Errorf("room holds %d messages, want %d", n, writes)
	}
	if n := len(wholeLog(t, b)); n != writes+1 {
		t.Errorf("log holds %d changes, want %d", n, writes+1)
	}
}

// TestGroupCommitFallback makes a group's transaction fail: a write in
// the middle of the group breaks it with a storage error after writing.
// The contract (commit): each write is then retried alone, so every other
// write commits exactly once, the breaking write fails alone with its
// error and leaves nothing behind, and a write's own error stays its own.
func TestGroupCommitFallback(t *testing.T) {
	ctx := context.Background()
	b := testOpen(t, "", Options{}, nil)
	o := mustOrder(t, b, "alice")
	start := mustHead(t, b)
	commits := b.commits.Load()
	errDisk := errors.New("disk on fire")

	queued, release, first := stallCommitter(t, b)
	type result struct {
		name string
		err  error
	}
	results := make(chan result, 16)
	var want []string // texts of the writes that must commit, in queue order
	n := 0
	enqueue := func(name string, w func() error) {
		go func() { results <- result{name, w()} }()
		n++
		queued(n)
	}
	for i := range 4 {
		text := fmt.Sprint("before", i)
		want = append(want, text)
		enqueue(text, func() error { _, err := b.PostMessage(ctx, "lobby", "bob", text); return err })
	}
	enqueue("mismatch", func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 7); return err })
	enqueue("breaks", func() error {
		return b.submit(ctx, func(t *txn) error {
			seq := t.alloc()
			m := store.Message{ID: t.id(seq), Room: "lobby", Author: "bob", Text: "broken", CreatedAt: t.now}
			t.putJSON(messageBucket, messageKey("lobby", m.ID), &m)
			t.append(seq, &record{Topic: store.RoomTopic("lobby"), Op: store.OpInsert, Message: &m})
			t.err = errDisk
			return nil
		})
	})
	for i := range 4 {
		text := fmt.Sprint("after", i)
		want = append(want, text)
		enqueue(text, func() error { _, err := b.PostMessage(ctx, "lobby", "bob", text); return err })
	}
	release()
	if err := await(t, first, "the stalled write"); err != nil {
		t.Fatalf("stalled write: %v", err)
	}
	for range n {
		r := await(t, results, "a queued write")
		switch r.name {
		case "breaks":
			if !errors.Is(r.err, errDisk) {
				t.Errorf("the write that breaks its transaction: got %v, want its storage error", r.err)
			}
		case "mismatch":
			if !errors.Is(r.err, store.ErrVersionMismatch) {
				t.Errorf("update with a wrong version: got %v, want ErrVersionMismatch", r.err)
			}
		default:
			if r.err != nil {
				t.Errorf("write %s: got %v, want it committed", r.name, r.err)
			}
		}
	}

	if got := roomTexts(t, b, "lobby"); !slices.Equal(got, want) {
		t.Errorf("room holds %q, want %q: each good write once, the broken one not at all", got, want)
	}
	got, err := catchUp(t, b, []string{store.RoomTopic("lobby"), store.OrderTopic(o.ID)}, start, mustHead(t, b))
	if err != nil {
		t.Fatal(err)
	}
	var logged []string
	for _, c := range got {
		if c.Message == nil {
			t.Errorf("log holds %s %s, want only the posts", c.Topic, c.Op)
			continue
		}
		logged = append(logged, c.Message.Text)
	}
	if !slices.Equal(logged, want) {
		t.Errorf("log holds posts %q, want %q", logged, want)
	}
	if cur, err := b.GetOrder(ctx, o.ID); err != nil || cur.Version != 1 || cur.Status != store.StatusPlaced {
		t.Errorf("order after a refused update: %+v, %v; want placed version 1", cur, err)
	}
	// The stalled write, then each of the 8 good writes alone.
	if n := b.commits.Load() - commits; n != 1+uint64(len(want)) {
		t.Errorf("took %d commits, want %d: the stalled write, then each good write retried alone", n, 1+len(want))
	}
	if err := b.Ping(ctx); err != nil {
		t.Errorf("Ping after the last write committed: %v", err)
	}
}

// TestCancelWhileQueued cancels a write while it waits in the queue,
// between two others of the same group: it is not applied and fails with
// its context's error; the others commit, together.
func TestCancelWhileQueued(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	commits := b.commits.Load()
	queued, release, first := stallCommitter(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	post := func(ctx context.Context, text string) <-chan error {
		done := make(chan error, 1)
		go func() { _, err := b.PostMessage(ctx, "lobby", "bob", text); done <- err }()
		return done
	}
	a := post(context.Background(), "a")
	queued(1)
	cancelled := post(ctx, "cancelled")
	queued(2)
	c := post(context.Background(), "c")
	queued(3)
	cancel()
	release()
	if err := await(t, first, "the stalled write"); err != nil {
		t.Fatalf("stalled write: %v", err)
	}
	if err := await(t, cancelled, "the cancelled write"); !errors.Is(err, context.Canceled) {
		t.Errorf("write cancelled in the queue: got %v, want context.Canceled", err)
	}
	for name, ch := range map[string]<-chan error{"a": a, "c": c} {
		if err := await(t, ch, name); err != nil {
			t.Errorf("write %s queued with the cancelled one: %v", name, err)
		}
	}
	if got, want := roomTexts(t, b, "lobby"), []string{"a", "c"}; !slices.Equal(got, want) {
		t.Errorf("room holds %q, want %q", got, want)
	}
	if n := len(wholeLog(t, b)); n != 3 {
		t.Errorf("log holds %d changes, want 3 (stalled, a, c)", n)
	}
	if n := b.commits.Load() - commits; n != 2 {
		t.Errorf("took %d commits, want 2 (the stalled write, then a and c together)", n)
	}
}
