package bolt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"changecast/store"
	"changecast/store/storetest"
)

// maxWait bounds every wait for something to happen in these tests. It
// guards against hangs; it asserts nothing about speed.
const maxWait = 30 * time.Second

// fakeClock is a settable clock for retention and id tests.
type fakeClock struct{ t atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.t.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.t.Add(int64(d)) }

// testOpen opens a store in dir (a fresh temporary one if "") and
// closes it when the test ends.
func testOpen(tb testing.TB, dir string, opts Options, now func() time.Time) *Store {
	tb.Helper()
	if dir == "" {
		dir = tb.TempDir()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.PruneInterval == 0 {
		opts.PruneInterval = time.Hour // tests prune explicitly
	}
	if now == nil {
		now = time.Now
	}
	b, err := open(dir, opts, now)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

func mustOrder(tb testing.TB, b *Store, customer string) store.Order {
	tb.Helper()
	o, err := b.CreateOrder(context.Background(), customer, []store.Item{{SKU: "pizza", Qty: 1}})
	if err != nil {
		tb.Fatalf("CreateOrder: %v", err)
	}
	return o
}

func mustPost(tb testing.TB, b *Store, room, text string) store.Message {
	tb.Helper()
	m, err := b.PostMessage(context.Background(), room, "alice", text)
	if err != nil {
		tb.Fatalf("PostMessage: %v", err)
	}
	return m
}

// post posts a message from any goroutine, reporting a failure with
// tb.Errorf (FailNow may only be called from the test's goroutine).
func post(tb testing.TB, b *Store, room, text string) {
	tb.Helper()
	if _, err := b.PostMessage(context.Background(), room, "alice", text); err != nil {
		tb.Errorf("PostMessage: %v", err)
	}
}

func mustHead(tb testing.TB, b *Store) string {
	tb.Helper()
	h, err := b.Head(context.Background())
	if err != nil {
		tb.Fatalf("Head: %v", err)
	}
	return h
}

// wholeLog returns every change the log holds, in order.
func wholeLog(tb testing.TB, b *Store) []store.Change {
	tb.Helper()
	var all []store.Change
	err := b.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(logBucket).ForEach(func(k, v []byte) error {
			c, err := b.decodeChange(decodeUint(k), v)
			all = append(all, c)
			return err
		})
	})
	if err != nil {
		tb.Fatalf("read log: %v", err)
	}
	return all
}

// catchUp returns what CatchUp yields, or its error.
func catchUp(tb testing.TB, b *Store, topics []string, after, until string) ([]store.Change, error) {
	tb.Helper()
	var got []store.Change
	err := b.CatchUp(context.Background(), topics, after, until, func(c store.Change) error {
		got = append(got, c)
		return nil
	})
	return got, err
}

// countKeys returns how many keys a bucket holds.
func countKeys(tb testing.TB, b *Store, bucket []byte) int {
	tb.Helper()
	n := 0
	if err := b.db.View(func(tx *bbolt.Tx) error {
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return n
}

func positions(changes []store.Change) []string {
	var ps []string
	for _, c := range changes {
		ps = append(ps, c.Pos)
	}
	return ps
}

func TestOrders(t *testing.T) {
	ctx := context.Background()
	b := testOpen(t, "", Options{}, nil)

	items := []store.Item{{SKU: "pizza", Qty: 2}, {SKU: "cola", Qty: 1}}
	o, err := b.CreateOrder(ctx, "alice", items)
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	if !store.ValidOrderID(o.ID) || o.Customer != "alice" || o.Status != store.StatusPlaced || o.Version != 1 ||
		!reflect.DeepEqual(o.Items, items) || o.CreatedAt.IsZero() || !o.UpdatedAt.Equal(o.CreatedAt) {
		t.Fatalf("CreateOrder = %+v, want a placed version-1 order of alice with %v", o, items)
	}
	items[0].Qty = 99 // the store keeps its own copy
	got, err := b.GetOrder(ctx, o.ID)
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	if !reflect.DeepEqual(got, o) {
		t.Fatalf("GetOrder = %+v, want %+v", got, o)
	}

	o2 := mustOrder(t, b, "bob")
	if o2.ID <= o.ID {
		t.Errorf("second order id %s, want above %s", o2.ID, o.ID)
	}

	up, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 0)
	if err != nil {
		t.Fatalf("UpdateOrderStatus: %v", err)
	}
	if up.Status != store.StatusPreparing || up.Version != 2 || up.UpdatedAt.Before(up.CreatedAt) || !up.CreatedAt.Equal(o.CreatedAt) {
		t.Fatalf("UpdateOrderStatus = %+v, want preparing version 2", up)
	}
	if got, _ := b.GetOrder(ctx, o.ID); !reflect.DeepEqual(got, up) {
		t.Fatalf("GetOrder after update = %+v, want %+v", got, up)
	}

	for _, tc := range []struct {
		name     string
		customer string
		items    []store.Item
	}{
		{"no customer", "", []store.Item{{SKU: "a", Qty: 1}}},
		{"no items", "alice", nil},
		{"zero qty", "alice", []store.Item{{SKU: "a", Qty: 0}}},
		{"too many", "alice", []store.Item{{SKU: "a", Qty: store.MaxQty + 1}}},
		{"no sku", "alice", []store.Item{{Qty: 1}}},
		{"control char", "al\nice", []store.Item{{SKU: "a", Qty: 1}}},
	} {
		if _, err := b.CreateOrder(ctx, tc.customer, tc.items); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CreateOrder %s: got %v, want ErrInvalid", tc.name, err)
		}
	}

	for _, id := range []string{"", "x", strings.Repeat("0", 24), strings.ToUpper(o.ID), o.ID + "0", "../../etc/passwd"} {
		if _, err := b.GetOrder(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("GetOrder(%q): got %v, want ErrNotFound", id, err)
		}
		if _, err := b.UpdateOrderStatus(ctx, id, store.StatusPreparing, 0); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("UpdateOrderStatus(%q): got %v, want ErrNotFound", id, err)
		}
	}
	if err := b.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestStatusMachine(t *testing.T) {
	ctx := context.Background()
	b := testOpen(t, "", Options{}, nil)
	paths := storetest.StatusPaths()
	allowed := map[[2]string]bool{
		{store.StatusPlaced, store.StatusPreparing}:         true,
		{store.StatusPlaced, store.StatusCancelled}:         true,
		{store.StatusPreparing, store.StatusOutForDelivery}: true,
		{store.StatusPreparing, store.StatusCancelled}:      true,
		{store.StatusOutForDelivery, store.StatusDelivered}: true,
	}
	to := []string{store.StatusPlaced, store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered, store.StatusCancelled, "lost", ""}
	for from, path := range paths {
		for _, next := range to {
			t.Run(from+"→"+next, func(t *testing.T) {
				o := mustOrder(t, b, "alice")
				for _, s := range path {
					var err error
					if o, err = b.UpdateOrderStatus(ctx, o.ID, s, 0); err != nil {
						t.Fatalf("walk to %s: %v", s, err)
					}
				}
				got, err := b.UpdateOrderStatus(ctx, o.ID, next, 0)
				var want error
				switch {
				case !store.ValidStatus(next):
					want = store.ErrInvalid
				case !allowed[[2]string{from, next}]:
					want = store.ErrConflict
				}
				if want != nil {
					if !errors.Is(err, want) {
						t.Fatalf("got %v, want %v", err, want)
					}
					if cur, _ := b.GetOrder(ctx, o.ID); cur.Status != from || cur.Version != o.Version {
						t.Fatalf("after refused update: got %s v%d, want %s v%d", cur.Status, cur.Version, from, o.Version)
					}
					return
				}
				if err != nil || got.Status != next || got.Version != o.Version+1 {
					t.Fatalf("got %+v, %v, want status %s version %d", got, err, next, o.Version+1)
				}
			})
		}
	}
}

func TestIfMatch(t *testing.T) {
	ctx := context.Background()
	b := testOpen(t, "", Options{}, nil)
	o := mustOrder(t, b, "alice")
	for _, tc := range []struct {
		name    string
		status  string
		version int64
		want    error
	}{
		{"stale version", store.StatusPreparing, 2, store.ErrVersionMismatch},
		{"mismatch before conflict", store.StatusDelivered, 7, store.ErrVersionMismatch},
		{"mismatch before unknown status", "lost", 7, store.ErrVersionMismatch},
		{"negative version", store.StatusPreparing, -1, store.ErrInvalid},
		{"matching version", store.StatusPreparing, 1, nil},
		{"same version again", store.StatusOutForDelivery, 1, store.ErrVersionMismatch},
		{"any version", store.StatusOutForDelivery, 0, nil},
		{"current version", store.StatusDelivered, 3, nil},
	} {
		got, err := b.UpdateOrderStatus(ctx, o.ID, tc.status, tc.version)
		if tc.want != nil {
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			}
			continue
		}
		if err != nil || got.Status != tc.status {
			t.Errorf("%s: got %+v, %v, want status %s", tc.name, got, err, tc.status)
		}
	}
	if got, _ := b.GetOrder(ctx, o.ID); got.Version != 4 {
		t.Errorf("final version %d, want 4", got.Version)
	}
}

func TestMessages(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	b := testOpen(t, "", Options{}, clock.Now)

	var want, neighbours []store.Message
	for i := range 10 {
		want = append(want, mustPost(t, b, "a", fmt.Sprint("m", i)))
		neighbours = append(neighbours, mustPost(t, b, "ab", "neighbour")) // a room whose name extends "a"
		mustPost(t, b, "a-b", "neighbour")                                 // and one sorting just before it
		if i == 5 {
			clock.Advance(-time.Hour) // ids keep growing when the clock steps back
		}
	}
	for i := 1; i < len(want); i++ {
		if want[i].ID <= want[i-1].ID {
			t.Fatalf("message id %s not above the previous %s", want[i].ID, want[i-1].ID)
		}
	}
	if m := want[0]; !store.ValidOrderID(m.ID) || m.Room != "a" || m.Author != "alice" || m.Text != "m0" || m.CreatedAt.IsZero() {
		t.Fatalf("PostMessage = %+v", m)
	}

	for _, tc := range []struct {
		name   string
		before string
		limit  int
		want   []store.Message
	}{
		{"newest three", "", 3, want[7:]},
		{"page before", want[7].ID, 3, want[4:7]},
		{"short last page", want[2].ID, 3, want[:2]},
		{"before the first", want[0].ID, 3, []store.Message{}},
		{"everything", "", store.MaxListLimit, want},
		{"before an id between messages", neighbours[5].ID, 2, want[4:6]},
	} {
		got, err := b.ListMessages(ctx, "a", tc.before, tc.limit)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	if got, err := b.ListMessages(ctx, "empty", "", 10); err != nil || got == nil || len(got) != 0 {
		t.Errorf("unknown room: got %v, %v, want an empty list", got, err)
	}

	for _, tc := range []struct {
		name, room, before string
		limit              int
	}{
		{"zero limit", "a", "", 0},
		{"limit too big", "a", "", store.MaxListLimit + 1},
		{"malformed before", "a", "zz", 10},
		{"upper-case before", "a", strings.ToUpper(want[1].ID), 10},
		{"bad room", "A", "", 10},
	} {
		if _, err := b.ListMessages(ctx, tc.room, tc.before, tc.limit); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ListMessages %s: got %v, want ErrInvalid", tc.name, err)
		}
	}
	for _, tc := range []struct{ name, room, author, text string }{
		{"bad room", "Lobby", "alice", "hi"},
		{"no author", "a", "", "hi"},
		{"empty text", "a", "alice", ""},
		{"long text", "a", "alice", strings.Repeat("x", store.MaxTextLen+1)},
		{"invalid utf-8", "a", "alice", "\xff"},
	} {
		if _, err := b.PostMessage(ctx, tc.room, tc.author, tc.text); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("PostMessage %s: got %v, want ErrInvalid", tc.name, err)
		}
	}
}

func TestChangesMatchWrites(t *testing.T) {
	ctx := context.Background()
	b := testOpen(t, "", Options{}, nil)
	start := mustHead(t, b)
	o := mustOrder(t, b, "alice")
	up, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := mustPost(t, b, "lobby", "hi")
	// Refused writes log nothing.
	b.UpdateOrderStatus(ctx, o.ID, store.StatusDelivered, 0)
	b.UpdateOrderStatus(ctx, o.ID, store.StatusCancelled, 1)
	b.PostMessage(ctx, "lobby", "", "x")

	log := wholeLog(t, b)
	want := []store.Change{
		// An order change is also on the orders list and its customer's.
		{Topic: store.OrderTopic(o.ID), Lists: []string{"orders", "customers/alice"}, Op: store.OpInsert, Order: &o, Time: o.CreatedAt},
		{Topic: store.OrderTopic(o.ID), Lists: []string{"orders", "customers/alice"}, Op: store.OpUpdate, Order: &up, Time: up.UpdatedAt},
		{Topic: store.RoomTopic("lobby"), Op: store.OpInsert, Message: &m, Time: m.CreatedAt},
	}
	if len(log) != len(want) {
		t.Fatalf("log has %d changes, want %d: %+v", len(log), len(want), log)
	}
	// A position is "<deployment>-<seq>" (see logformat.go): the empty log is
	// seq 0, and the writes that committed are seq 1, 2, 3.
	dep, seq0, ok := strings.Cut(start, "-")
	if !ok || len(dep) != 8 || seq0 != strings.Repeat("0", 16) {
		t.Fatalf("Head of an empty store = %q, want 8 hex, a dash and 16 zeros", start)
	}
	for i := range want {
		want[i].Pos = fmt.Sprintf("%s-%016x", dep, i+1)
		if !reflect.DeepEqual(log[i], want[i]) {
			t.Errorf("change %d: got %+v, want %+v", i, log[i], want[i])
		}
	}
	if h, last := mustHead(t, b), want[len(want)-1].Pos; h != last {
		t.Errorf("Head = %s, want the last change %s", h, last)
	}
}

// holdWrites takes bbolt's write lock so the committer stalls, and
// returns a function that waits until n writes are queued or taken, then
// releases the lock.
func holdWrites(tb testing.TB, b *Store) (release func(n int)) {
	tb.Helper()
	tx, err := b.db.Begin(true)
	if err != nil {
		tb.Fatal(err)
	}
	base := b.taken.Load()
	return func(n int) {
		tb.Helper()
		deadline := time.Now().Add(maxWait)
		for int(b.taken.Load()-base)+len(b.queue) < n {
			if time.Now().After(deadline) {
				tb.Fatalf("only %d of %d writes reached the committer", int(b.taken.Load()-base)+len(b.queue), n)
			}
			time.Sleep(time.Millisecond)
		}
		if err := tx.Rollback(); err != nil {
			tb.Fatal(err)
		}
	}
}

func TestGroupCommitIsolatesFailures(t *testing.T) {
	ctx := context.Background()
	b := testOpen(t, "", Options{}, nil)
	o := mustOrder(t, b, "alice")
	start := mustHead(t, b)
	commits := b.commits.Load()

	type result struct {
		name string
		err  error
	}
	writes := map[string]func() error{
		"conflict": func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusDelivered, 0); return err },
		"mismatch": func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusCancelled, 9); return err },
		"missing": func() error {
			_, err := b.UpdateOrderStatus(ctx, strings.Repeat("ab", 12), store.StatusCancelled, 0)
			return err
		},
		"update": func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 1); return err },
	}
	for i := range 12 {
		writes[fmt.Sprint("post", i)] = func() error { _, err := b.PostMessage(ctx, "lobby", "bob", fmt.Sprint(i)); return err }
	}
	wantErr := map[string]error{"conflict": store.ErrConflict, "mismatch": store.ErrVersionMismatch, "missing": store.ErrNotFound}

	release := holdWrites(t, b)
	results := make(chan result, len(writes))
	for name, w := range writes {
		go func() { results <- result{name, w()} }()
	}
	release(len(writes))
	for range writes {
		r := <-results
		if want := wantErr[r.name]; !errors.Is(r.err, want) || (want == nil && r.err != nil) {
			t.Errorf("%s: got %v, want %v", r.name, r.err, want)
		}
	}
	if n := b.commits.Load() - commits; n > 2 {
		t.Errorf("%d writes took %d commits, want at most 2 (one stalled, then the rest together)", len(writes), n)
	}

	got, err := catchUp(t, b, []string{store.OrderTopic(o.ID), store.RoomTopic("lobby")}, start, mustHead(t, b))
	if err != nil {
		t.Fatal(err)
	}
	posts, updates := 0, 0
	for _, c := range got {
		switch {
		case c.Message != nil:
			posts++
		case c.Order != nil && c.Op == store.OpUpdate && c.Order.Status == store.StatusPreparing:
			updates++
		default:
			t.Errorf("unexpected change %+v", c)
		}
	}
	if posts != 12 || updates != 1 || len(wholeLog(t, b)) != 14 {
		t.Errorf("log holds %d posts and %d updates (%d changes in all), want 12, 1 and 14", posts, updates, len(wholeLog(t, b)))
	}
}

func TestCancelledWriteNotApplied(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	// Hold bbolt's write lock so the write cannot commit; wait until it has
	// reached the committer, cancel it, and only then let the group run.
	release := holdWrites(t, b)
	done := make(chan error, 1)
	go func() { _, err := b.PostMessage(ctx, "lobby", "bob", "never"); done <- err }()
	deadline := time.Now().Add(maxWait)
	for b.taken.Load() == 0 && len(b.queue) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("write never queued")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	release(0)
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if n := len(wholeLog(t, b)); n != 0 {
		t.Fatalf("log has %d changes, want 0", n)
	}
	if msgs, _ := b.ListMessages(context.Background(), "lobby", "", 10); len(msgs) != 0 {
		t.Fatalf("got messages %v, want none", msgs)
	}
}

func TestPositions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	empty := mustHead(t, b)
	if err := b.CheckPosition(empty); err != nil {
		t.Fatalf("CheckPosition(empty log head %q): %v", empty, err)
	}
	mustOrder(t, b, "alice")
	mustPost(t, b, "lobby", "one")
	mustPost(t, b, "lobby", "two")
	before := positions(wholeLog(t, b))
	head := mustHead(t, b)
	if !slices.IsSorted(before) || before[0] <= empty || head != before[len(before)-1] {
		t.Fatalf("positions %v after empty %s with head %s: want increasing, head last", before, empty, head)
	}
	for _, p := range before {
		if len(p) > 512 || strings.ContainsAny(p, "\r\n\x00") {
			t.Fatalf("position %q is not a valid SSE id", p)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	b = testOpen(t, dir, Options{}, nil)
	if h := mustHead(t, b); h != head {
		t.Fatalf("Head after reopen = %s, want %s", h, head)
	}
	for _, p := range append(before, empty) {
		if err := b.CheckPosition(p); err != nil {
			t.Errorf("CheckPosition(%s) after reopen: %v", p, err)
		}
	}
	m := mustPost(t, b, "lobby", "three")
	after := positions(wholeLog(t, b))
	if !slices.Equal(after[:len(before)], before) || after[len(after)-1] <= head || !slices.IsSorted(after) {
		t.Fatalf("positions after reopen %v, want %v then one more", after, before)
	}
	got, err := catchUp(t, b, []string{store.RoomTopic("lobby")}, empty, mustHead(t, b))
	if err != nil || len(got) != 3 || got[2].Message.ID != m.ID {
		t.Fatalf("CatchUp after reopen: got %d changes, %v; want 3 ending with %s", len(got), err, m.ID)
	}

	// Another deployment's positions are refused, and ours by it.
	other := testOpen(t, "", Options{}, nil)
	mustPost(t, other, "lobby", "elsewhere")
	if other.deployment != b.deployment {
		if err := b.CheckPosition(mustHead(t, other)); !errors.Is(err, store.ErrInvalidPosition) {
			t.Errorf("CheckPosition(other deployment): got %v, want ErrInvalidPosition", err)
		}
	}
	forged := []byte(head)
	forged[0] = "01"[b2i(forged[0] == '0')]
	if err := b.CheckPosition(string(forged)); !errors.Is(err, store.ErrInvalidPosition) {
		t.Errorf("CheckPosition(%s, another deployment id): got %v, want ErrInvalidPosition", forged, err)
	}
	if err := b.Follow(ctx, string(forged), func(store.Batch) error { return nil }); !errors.Is(err, store.ErrInvalidPosition) {
		t.Errorf("Follow(another deployment): got %v, want ErrInvalidPosition", err)
	}
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

func TestBadPositions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), maxWait) // a Follow that wrongly starts ends
	defer cancel()
	b := testOpen(t, "", Options{}, nil)
	mustPost(t, b, "lobby", "hi")
	head := mustHead(t, b)
	dep := b.deployment
	for _, pos := range []string{
		"",
		"x",
		dep,
		dep + "-",
		dep + "-0",
		dep + "-0000000000000002",  // ahead of the head
		dep + "-ffffffffffffffff",  // far ahead
		dep + "-000000000000000A",  // upper case
		dep + "-00000000000000001", // too long
		dep + "_0000000000000001",
		strings.ToUpper(dep) + "-0000000000000001",
		dep + "-000000000000000\x00",
		dep + "-00000000000000g1",
		"82613f6d4f0e0000000000012b022c0100296e5a1004", // a MongoDB resume token
		head + "\n",
		" " + head,
		strings.Repeat("0", 600),
	} {
		if pos == head {
			continue // the upper-cased deployment id of an all-digit one
		}
		if err := b.CheckPosition(pos); !errors.Is(err, store.ErrInvalidPosition) {
			t.Errorf("CheckPosition(%q): got %v, want ErrInvalidPosition", pos, err)
		}
		if err := b.Follow(ctx, pos, func(store.Batch) error { return nil }); !errors.Is(err, store.ErrInvalidPosition) {
			t.Errorf("Follow(%q): got %v, want ErrInvalidPosition", pos, err)
		}
		if _, err := catchUp(t, b, []string{store.RoomTopic("lobby")}, pos, head); !errors.Is(err, store.ErrInvalidPosition) {
			t.Errorf("CatchUp(after %q): got %v, want ErrInvalidPosition", pos, err)
		}
		if _, err := catchUp(t, b, []string{store.RoomTopic("lobby")}, head, pos); !errors.Is(err, store.ErrInvalidPosition) {
			t.Errorf("CatchUp(until %q): got %v, want ErrInvalidPosition", pos, err)
		}
	}
	if err := b.CheckPosition(head); err != nil {
		t.Errorf("CheckPosition(head): %v", err)
	}
}

// follower runs Follow in a goroutine and hands its batches over.
type follower struct {
	batches chan store.Batch
	done    chan error
	cancel  context.CancelFunc
}

func startFollow(tb testing.TB, b *Store, after string) *follower {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{batches: make(chan store.Batch), done: make(chan error, 1), cancel: cancel}
	go func() {
		f.done <- b.Follow(ctx, after, func(batch store.Batch) error {
			select {
			case f.batches <- batch:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	tb.Cleanup(func() {
		cancel()
		<-f.done
	})
	return f
}

// next returns the follower's next batch.
func (f *follower) next(tb testing.TB) store.Batch {
	tb.Helper()
	select {
	case batch := <-f.batches:
		return batch
	case err := <-f.done:
		tb.Fatalf("Follow ended: %v", err)
	case <-time.After(maxWait):
		tb.Fatal("no batch from Follow")
	}
	return store.Batch{}
}

// changes collects n changes from the follower, checking checkpoints.
func (f *follower) changes(tb testing.TB, n int) []store.Change {
	tb.Helper()
	var got []store.Change
	for len(got) < n {
		batch := f.next(tb)
		if len(batch.Changes) == 0 || batch.Checkpoint != batch.Changes[len(batch.Changes)-1].Pos {
			tb.Fatalf("batch %+v: want changes and the last one's position as checkpoint", batch)
		}
		got = append(got, batch.Changes...)
	}
	if len(got) != n {
		tb.Fatalf("got %d changes, want %d", len(got), n)
	}
	return got
}

func TestFollow(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	for i := range 5 {
		mustPost(t, b, "lobby", fmt.Sprint(i))
	}
	log := wholeLog(t, b)
	after := log[1].Pos

	f := startFollow(t, b, after)
	if first := f.next(t); len(first.Changes) != 0 || first.Checkpoint != after {
		t.Fatalf("first batch %+v, want empty with checkpoint %s", first, after)
	}
	if got := f.changes(t, 3); !reflect.DeepEqual(got, log[2:]) {
		t.Fatalf("Follow from %s: got %v, want %v", after, got, log[2:])
	}

	// It wakes on new commits, including ones from concurrent writers.
	o := mustOrder(t, b, "alice")
	if got := f.changes(t, 1); got[0].Order == nil || got[0].Order.ID != o.ID || got[0].Op != store.OpInsert {
		t.Fatalf("after CreateOrder: got %+v", got[0])
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() { post(t, b, "busy", fmt.Sprint(w)) })
	}
	got := f.changes(t, 8)
	wg.Wait()
	if want := wholeLog(t, b)[6:]; !reflect.DeepEqual(got, want) {
		t.Fatalf("after concurrent posts: got %v, want %v", got, want)
	}

	f.cancel()
	select {
	case err := <-f.done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Follow after cancel: got %v, want context.Canceled", err)
		}
		f.done <- err // for cleanup
	case <-time.After(maxWait):
		t.Fatal("Follow did not return after cancel")
	}
}

func TestFollowFromEmptyAndClose(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	f := startFollow(t, b, mustHead(t, b))
	f.next(t)
	m := mustPost(t, b, "lobby", "first")
	if got := f.changes(t, 1); got[0].Message == nil || *got[0].Message != m {
		t.Fatalf("got %+v, want message %+v", got[0], m)
	}
	b.Close()
	select {
	case err := <-f.done:
		if !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Follow after Close: got %v, want ErrClosed", err)
		}
		f.done <- err
	case <-time.After(maxWait):
		t.Fatal("Follow did not return after Close")
	}
}

func TestFollowFnError(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	mustPost(t, b, "lobby", "x")
	stop := errors.New("stop")
	calls := 0
	err := b.Follow(context.Background(), positionAt(b, 0), func(batch store.Batch) error {
		calls++
		if len(batch.Changes) > 0 {
			return stop
		}
		return nil
	})
	if err != stop || calls != 2 {
		t.Fatalf("got %v after %d calls, want fn's error after 2", err, calls)
	}
}

// positionAt returns the position of sequence number seq.
func positionAt(b *Store, seq uint64) string { return b.pos(seq) }

func TestCatchUp(t *testing.T) {
	ctx := context.Background()
	b := testOpen(t, "", Options{}, nil)
	start := mustHead(t, b)
	o := mustOrder(t, b, "alice")
	if _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 0); err != nil {
		t.Fatal(err)
	}
	// More than one read chunk of the topics, interleaved with others.
	rooms := []string{"lobby", "kitchen", "lobby-2", "l"}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 150 {
				post(t, b, rooms[(w+i)%len(rooms)], fmt.Sprint(w, "-", i))
			}
		})
	}
	wg.Wait()
	var want []store.Change
	log := wholeLog(t, b)
	topics := []string{store.RoomTopic("lobby"), store.OrderTopic(o.ID), store.RoomTopic("lobby")}
	for _, c := range log {
		if c.Topic == store.RoomTopic("lobby") || c.Topic == store.OrderTopic(o.ID) {
			want = append(want, c)
		}
	}
	head := mustHead(t, b)
	got, err := catchUp(t, b, topics, start, head)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("CatchUp(all): got %d changes, %v; want %d", len(got), err, len(want))
	}

	// after and until bound it: after < pos <= until.
	after, until := want[10].Pos, want[200].Pos
	got, err = catchUp(t, b, topics, after, until)
	if err != nil || !reflect.DeepEqual(got, want[11:201]) {
		t.Fatalf("CatchUp(%s, %s]: got %d changes, %v; want %d", after, until, len(got), err, 190)
	}
	if got, err := catchUp(t, b, topics, until, after); err != nil || len(got) != 0 {
		t.Fatalf("CatchUp with until before after: got %d, %v; want none", len(got), err)
	}
	if got, err := catchUp(t, b, nil, start, head); err != nil || len(got) != 0 {
		t.Fatalf("CatchUp of no topics: got %d, %v; want none", len(got), err)
	}
	if got, err := catchUp(t, b, []string{store.RoomTopic("nobody")}, start, head); err != nil || len(got) != 0 {
		t.Fatalf("CatchUp of a quiet topic: got %d, %v; want none", len(got), err)
	}
	if _, err := catchUp(t, b, []string{"rooms/Bad"}, start, head); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("CatchUp of a bad topic: got %v, want ErrInvalid", err)
	}
	stop := errors.New("stop")
	if err := b.CatchUp(ctx, topics, start, head, func(store.Change) error { return stop }); err != stop {
		t.Fatalf("CatchUp with failing fn: got %v, want its error", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	n := 0
	err = b.CatchUp(cctx, topics, start, head, func(store.Change) error {
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n >= len(want) {
		t.Fatalf("CatchUp cancelled after 3: got %v after %d changes, want context.Canceled before the end", err, n)
	}
}

func TestRetentionByCount(t *testing.T) {
	ctx := context.Background()
	b := testOpen(t, "", Options{RetainCount: 10}, nil)
	start := mustHead(t, b)
	for i := range 30 {
		mustPost(t, b, fmt.Sprint("room", i%3), fmt.Sprint(i))
	}
	log := wholeLog(t, b)
	head := mustHead(t, b)
	n, err := b.prune(ctx)
	if err != nil || n != 20 {
		t.Fatalf("prune: deleted %d, %v; want 20", n, err)
	}
	if n, err := b.prune(ctx); err != nil || n != 0 {
		t.Fatalf("second prune: deleted %d, %v; want 0", n, err)
	}
	if got := wholeLog(t, b); !reflect.DeepEqual(got, log[20:]) {
		t.Fatalf("log after prune holds %d changes, want the newest 10", len(got))
	}
	if n := countKeys(t, b, topicBucket); n != 10 {
		t.Fatalf("topic index holds %d entries, want 10", n)
	}
	topics := []string{store.RoomTopic("room0"), store.RoomTopic("room1"), store.RoomTopic("room2")}
	for _, pos := range []string{start, log[0].Pos, log[18].Pos} {
		if err := b.CheckPosition(pos); err != nil {
			t.Errorf("CheckPosition(%s): %v (it does not check retention)", pos, err)
		}
		if err := b.Follow(ctx, pos, func(store.Batch) error { return nil }); !errors.Is(err, store.ErrHistoryLost) {
			t.Errorf("Follow(%s): got %v, want ErrHistoryLost", pos, err)
		}
		if _, err := catchUp(t, b, topics, pos, head); !errors.Is(err, store.ErrHistoryLost) {
			t.Errorf("CatchUp(%s): got %v, want ErrHistoryLost", pos, err)
		}
	}
	// The last pruned change's position still resumes: nothing after it is lost.
	got, err := catchUp(t, b, topics, log[19].Pos, head)
	if err != nil || !reflect.DeepEqual(got, log[20:]) {
		t.Fatalf("CatchUp from the pruned mark: got %d, %v; want the 10 kept", len(got), err)
	}
	f := startFollow(t, b, log[19].Pos)
	f.next(t)
	if got := f.changes(t, 10); !reflect.DeepEqual(got, log[20:]) {
		t.Fatalf("Follow from the pruned mark: got %v", got)
	}
}

func TestRetentionByAge(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	b := testOpen(t, "", Options{RetainAge: 24 * time.Hour}, clock.Now)
	for i := range 5 {
		mustPost(t, b, "lobby", fmt.Sprint("old", i))
	}
	clock.Advance(23 * time.Hour)
	if n, err := b.prune(ctx); err != nil || n != 0 {
		t.Fatalf("prune within the age: deleted %d, %v; want 0", n, err)
	}
	for i := range 3 {
		mustPost(t, b, "lobby", fmt.Sprint("new", i))
	}
	clock.Advance(2 * time.Hour)
	log := wholeLog(t, b)
	if n, err := b.prune(ctx); err != nil || n != 5 {
		t.Fatalf("prune: deleted %d, %v; want the 5 old changes", n, err)
	}
	head := mustHead(t, b)
	if _, err := catchUp(t, b, []string{store.RoomTopic("lobby")}, log[3].Pos, head); !errors.Is(err, store.ErrHistoryLost) {
		t.Fatalf("CatchUp from a pruned change: got %v, want ErrHistoryLost", err)
	}
	if got, err := catchUp(t, b, []string{store.RoomTopic("lobby")}, log[4].Pos, head); err != nil || len(got) != 3 {
		t.Fatalf("CatchUp from the pruned mark: got %d, %v; want 3", len(got), err)
	}
	// Messages themselves are kept; only their changes age out.
	if msgs, _ := b.ListMessages(ctx, "lobby", "", 10); len(msgs) != 8 {
		t.Fatalf("ListMessages after prune: %d messages, want 8", len(msgs))
	}
	clock.Advance(48 * time.Hour)
	if n, err := b.prune(ctx); err != nil || n != 3 {
		t.Fatalf("prune of everything: deleted %d, %v; want 3", n, err)
	}
	if got, err := catchUp(t, b, []string{store.RoomTopic("lobby")}, head, head); err != nil || len(got) != 0 {
		t.Fatalf("CatchUp at the head of an emptied log: %d, %v", len(got), err)
	}
	f := startFollow(t, b, head)
	f.next(t)
	mustPost(t, b, "lobby", "after")
	f.changes(t, 1)
}

func TestPrunerRunsOnInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := testOpen(t, "", Options{RetainCount: 3, PruneInterval: time.Minute}, nil)
		for i := range 10 {
			mustPost(t, b, "lobby", fmt.Sprint(i))
		}
		synctest.Wait()
		if n := len(wholeLog(t, b)); n != 10 {
			t.Fatalf("before the interval: %d changes, want 10", n)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(wholeLog(t, b)); n != 3 {
			t.Fatalf("after the interval: %d changes, want 3", n)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestFollowOvertakenByPruner(t *testing.T) {
	ctx := context.Background()
	b := testOpen(t, "", Options{RetainCount: 1}, nil)
	start := mustHead(t, b)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 2 * readChunk / 8 {
				post(t, b, "lobby", fmt.Sprint(w, i))
			}
		})
	}
	wg.Wait()
	seen := 0
	err := b.Follow(ctx, start, func(batch store.Batch) error {
		if len(batch.Changes) > 0 && seen == 0 {
			// Prune while the follower is behind, with no read transaction open.
			if _, err := b.prune(ctx); err != nil {
				return err
			}
		}
		seen += len(batch.Changes)
		return nil
	})
	if !errors.Is(err, store.ErrHistoryLost) || seen == 0 || seen >= 2*readChunk {
		t.Fatalf("Follow overtaken by the pruner: got %v after %d changes, want ErrHistoryLost after one chunk", err, seen)
	}
}

func TestSnapshot(t *testing.T) {
	ctx := context.Background()
	b := testOpen(t, "", Options{}, nil)
	start := mustHead(t, b)
	snaps, pos, err := b.Snapshot(ctx, []string{store.RoomTopic("lobby"), store.OrderTopic(strings.Repeat("0", 24))})
	if err != nil || pos != start || len(snaps) != 2 || snaps[0].Messages == nil || len(snaps[0].Messages) != 0 || snaps[1].Order != nil {
		t.Fatalf("Snapshot of nothing: %+v, %s, %v", snaps, pos, err)
	}
	if _, _, err := b.Snapshot(ctx, []string{"rooms/"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Snapshot of a bad topic: got %v, want ErrInvalid", err)
	}

	o := mustOrder(t, b, "alice")
	topics := []string{store.OrderTopic(o.ID), store.RoomTopic("lobby")}
	type taken struct {
		snaps []store.Snapshot
		pos   string
	}
	var (
		wg    sync.WaitGroup
		stop  = make(chan struct{})
		first = make(chan struct{}) // the writers start after the first snapshot
		takes = make(chan taken, 1000)
	)
	var sg sync.WaitGroup
	sg.Go(func() {
		var once sync.Once
		defer once.Do(func() { close(first) })
		for {
			snaps, pos, err := b.Snapshot(ctx, topics)
			if err != nil {
				t.Error(err)
				return
			}
			takes <- taken{snaps, pos}
			once.Do(func() { close(first) })
			select {
			case <-stop:
				return
			default:
				if len(takes) == cap(takes)-1 {
					return
				}
			}
		}
	})
	<-first
	for w := range 4 {
		wg.Go(func() {
			for i := range 40 {
				post(t, b, "lobby", fmt.Sprint(w, "-", i))
				if w == 0 && i%10 == 9 {
					next := map[string]string{store.StatusPlaced: store.StatusPreparing, store.StatusPreparing: store.StatusOutForDelivery, store.StatusOutForDelivery: store.StatusDelivered}
					cur, _ := b.GetOrder(ctx, o.ID)
					if s, ok := next[cur.Status]; ok {
						b.UpdateOrderStatus(ctx, o.ID, s, 0)
					}
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	sg.Wait()
	// One more after every write, so the check covers the final state.
	final, finalPos, err := b.Snapshot(ctx, topics)
	if err != nil {
		t.Fatal(err)
	}
	takes <- taken{final, finalPos}
	close(takes)

	checked, seenAt := 0, map[string]bool{}
	for tk := range takes {
		seenAt[tk.pos] = true
		// Replaying the log up to the snapshot's position must give its contents.
		changes, err := catchUp(t, b, topics, start, tk.pos)
		if err != nil {
			t.Fatal(err)
		}
		var order *store.Order
		var msgs []store.Message
		orderChanges := 0
		for _, c := range changes {
			if c.Order != nil {
				order = c.Order
				orderChanges++
			} else {
				msgs = append(msgs, *c.Message)
			}
		}
		msgs = msgs[max(0, len(msgs)-store.SnapshotMessages):]
		if !reflect.DeepEqual(tk.snaps[0].Order, order) {
			t.Fatalf("snapshot at %s: order %+v, log says %+v", tk.pos, tk.snaps[0].Order, order)
		}
		// Version 1 at creation, one more per update, each update logged.
		if tk.snaps[0].Order == nil || tk.snaps[0].Order.Version != int64(orderChanges) {
			t.Fatalf("snapshot at %s: order %+v, but the log up to there holds %d of its changes", tk.pos, tk.snaps[0].Order, orderChanges)
		}
		if len(msgs) == 0 {
			msgs = []store.Message{}
		}
		if !reflect.DeepEqual(tk.snaps[1].Messages, msgs) {
			t.Fatalf("snapshot at %s: %d messages, log says %d", tk.pos, len(tk.snaps[1].Messages), len(msgs))
		}
		checked++
	}
	// The first snapshot came before any post and the last after all
	// of them: at least those two states were checked.
	if len(seenAt) < 2 || !seenAt[mustHead(t, b)] {
		t.Errorf("checked %d snapshots at %d positions, want the final head %s among at least 2", checked, len(seenAt), mustHead(t, b))
	}
	if o := final[0].Order; o == nil || o.Status != store.StatusDelivered || o.Version != 4 {
		t.Errorf("final snapshot: order %+v, want delivered at version 4", o)
	}
	if n := len(final[1].Messages); n != store.SnapshotMessages {
		t.Errorf("final snapshot: %d messages, want the last %d of 160", n, store.SnapshotMessages)
	}
	t.Logf("checked %d snapshots at %d positions", checked, len(seenAt))
}

func TestClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	dir := t.TempDir()
	b, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler), PruneInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	o := mustOrder(t, b, "alice")
	head := mustHead(t, b)
	follow := make(chan error, 1)
	go func() { follow <- b.Follow(ctx, head, func(store.Batch) error { return nil }) }()

	// A second process (here: a second open) cannot take the directory.
	if b2, err := Open(dir, Options{}); err == nil {
		b2.Close()
		t.Fatal("second Open of the same directory succeeded")
	}

	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-follow; !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Follow across Close: got %v, want ErrClosed", err)
	}
	calls := map[string]error{
		"Close":             b.Close(),
		"Ping":              b.Ping(ctx),
		"CreateOrder":       errOf(b.CreateOrder(ctx, "alice", []store.Item{{SKU: "a", Qty: 1}})),
		"GetOrder":          errOf(b.GetOrder(ctx, o.ID)),
		"UpdateOrderStatus": errOf(b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 0)),
		"PostMessage":       errOf(b.PostMessage(ctx, "lobby", "bob", "hi")),
		"ListMessages":      errOf(b.ListMessages(ctx, "lobby", "", 10)),
		"Head":              errOf(b.Head(ctx)),
		"Follow":            b.Follow(ctx, head, func(store.Batch) error { return nil }),
		"CatchUp":           b.CatchUp(ctx, []string{store.RoomTopic("lobby")}, head, head, func(store.Change) error { return nil }),
		"Snapshot":          errOf2(b.Snapshot(ctx, []string{store.RoomTopic("lobby")})),
		"CheckPosition":     b.CheckPosition(head[:deploymentLen+1] + "00000000000000ff"),
	}
	for name, err := range calls {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", name, err)
		}
	}
}

func errOf[T any](_ T, err error) error { return err }

func errOf2[T, U any](_ T, _ U, err error) error { return err }

func TestOpenOptions(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{RetainCount: -1}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("negative RetainCount: got %v, want ErrInvalid", err)
	}
	b := testOpen(t, t.TempDir()+"/nested/dir", Options{Logger: slog.New(slog.DiscardHandler)}, nil)
	want := Options{RetainCount: 1_000_000, RetainAge: 7 * 24 * time.Hour, PruneInterval: time.Hour, Logger: b.opts.Logger}
	if b.opts != want {
		t.Errorf("options = %+v, want %+v", b.opts, want)
	}
}

func FuzzCheckPosition(f *testing.F) {
	b := testOpen(f, "", Options{}, nil)
	mustPost(f, b, "lobby", "hi")
	head := mustHead(f, b)
	for _, s := range []string{"", head, positionAt(b, 0), positionAt(b, 2), "0000000-00000000000000001", head + "x", strings.ToUpper(head)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pos string) {
		err := b.CheckPosition(pos)
		if err == nil {
			if !strings.HasPrefix(pos, b.deployment+"-") || len(pos) != posLen || pos > head {
				t.Fatalf("CheckPosition(%q) accepted a position this store never made (head %s)", pos, head)
			}
			return
		}
		if !errors.Is(err, store.ErrInvalidPosition) {
			t.Fatalf("CheckPosition(%q): got %v, want ErrInvalidPosition", pos, err)
		}
	})
}

// TestSurvivesKill runs a writer in a child process, kills it with
// SIGKILL in the middle of writing, and checks that every write the child
// saw acknowledged is in the reopened store and its log.
func TestSurvivesKill(t *testing.T) {
	if dir := os.Getenv("CHANGECAST_BOLT_KILL_DIR"); dir != "" {
		killChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSurvivesKill$")
	cmd.Env = append(os.Environ(), "CHANGECAST_BOLT_KILL_DIR="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	sc := bufio.NewScanner(out)
	for sc.Scan() && len(acked) < 300 {
		if id, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
			acked = append(acked, id)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if len(acked) < 300 {
		t.Fatalf("child acknowledged only %d writes", len(acked))
	}

	b := testOpen(t, dir, Options{}, nil)
	have := map[string]bool{}
	for _, c := range wholeLog(t, b) {
		have[c.Message.ID] = true
	}
	msgs := map[string]bool{}
	for w := range 8 {
		for before := ""; ; {
			list, err := b.ListMessages(context.Background(), fmt.Sprint("kill", w), before, store.MaxListLimit)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) == 0 {
				break
			}
			for _, m := range list {
				msgs[m.ID] = true
			}
			before = list[0].ID
		}
	}
	for _, id := range acked {
		if !have[id] || !msgs[id] {
			t.Fatalf("acknowledged message %s lost (in log %t, in room %t)", id, have[id], msgs[id])
		}
	}
	// The reopened store keeps writing after the last surviving change.
	head := mustHead(t, b)
	if m := mustPost(t, b, "kill0", "after"); m.ID <= acked[len(acked)-1] {
		t.Fatalf("id after restart %s, want above %s", m.ID, acked[len(acked)-1])
	}
	if h := mustHead(t, b); h <= head {
		t.Fatalf("head after restart %s, want above %s", h, head)
	}
	t.Logf("%d acknowledged writes survived, %d changes in the log", len(acked), len(have))
}

// killChild writes messages from 8 goroutines until killed, printing
// each acknowledged id.
func killChild(dir string) {
	b, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				m, err := b.PostMessage(context.Background(), fmt.Sprint("kill", w), "child", fmt.Sprint(i))
				if err != nil {
					fmt.Println("post:", err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Println("acked", m.ID)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func TestOldest(t *testing.T) {
	b, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, ok, err := b.Oldest(t.Context()); ok || err != nil {
		t.Fatalf("Oldest of an empty log = %v, %v; want none", ok, err)
	}
	before := time.Now().Add(-time.Second)
	m, err := b.PostMessage(t.Context(), "lobby", "ann", "first")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.PostMessage(t.Context(), "lobby", "ann", "second"); err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.Oldest(t.Context())
	if err != nil || !ok || !got.Equal(m.CreatedAt) || got.Before(before) {
		t.Fatalf("Oldest = %v, %v, %v; want the first message's time %v", got, ok, err, m.CreatedAt)
	}
}

// TestEmptyRoomSnapshotAllocatesLittle: every stream of a room asks for
// its snapshot when it connects; an empty room's must not allocate room
// for a full one (5 KiB a stream, garbage at once, when thousands of
// streams connect together).
func TestEmptyRoomSnapshotAllocatesLittle(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	mustPost(t, b, "other", "hello")
	const calls = 1000
	var before, after runtime.MemStats
	err := b.db.View(func(tx *bbolt.Tx) error {
		runtime.ReadMemStats(&before)
		for range calls {
			msgs, err := lastMessages(tx, "empty", "", store.SnapshotMessages)
			if err != nil || msgs == nil || len(msgs) != 0 {
				return fmt.Errorf("got %v, %v; want an empty list", msgs, err)
			}
		}
		runtime.ReadMemStats(&after)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if per := (after.TotalAlloc - before.TotalAlloc) / calls; per > 512 {
		t.Errorf("an empty room's snapshot allocates %d bytes; want at most 512", per)
	}
}
