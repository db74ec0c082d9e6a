package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

// boltWait bounds every wait for something to happen in these tests. It
// guards against hangs; it asserts nothing about speed.
const boltWait = 30 * time.Second

// boltClock is a settable clock for retention and id tests.
type boltClock struct{ t atomic.Int64 }

func newBoltClock(t time.Time) *boltClock {
	c := &boltClock{}
	c.t.Store(t.UnixNano())
	return c
}

func (c *boltClock) Now() time.Time          { return time.Unix(0, c.t.Load()) }
func (c *boltClock) Advance(d time.Duration) { c.t.Add(int64(d)) }

// boltTestOpen opens a store in dir (a fresh temporary one if "") and
// closes it when the test ends.
func boltTestOpen(tb testing.TB, dir string, opts BoltOptions, now func() time.Time) *Bolt {
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
	b, err := boltOpen(dir, opts, now)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

func boltMustOrder(tb testing.TB, b *Bolt, customer string) Order {
	tb.Helper()
	o, err := b.CreateOrder(context.Background(), customer, []Item{{SKU: "pizza", Qty: 1}})
	if err != nil {
		tb.Fatalf("CreateOrder: %v", err)
	}
	return o
}

func boltMustPost(tb testing.TB, b *Bolt, room, text string) Message {
	tb.Helper()
	m, err := b.PostMessage(context.Background(), room, "alice", text)
	if err != nil {
		tb.Fatalf("PostMessage: %v", err)
	}
	return m
}

// boltPost posts a message from any goroutine, reporting a failure with
// tb.Errorf (FailNow may only be called from the test's goroutine).
func boltPost(tb testing.TB, b *Bolt, room, text string) {
	tb.Helper()
	if _, err := b.PostMessage(context.Background(), room, "alice", text); err != nil {
		tb.Errorf("PostMessage: %v", err)
	}
}

func boltMustHead(tb testing.TB, b *Bolt) string {
	tb.Helper()
	h, err := b.Head(context.Background())
	if err != nil {
		tb.Fatalf("Head: %v", err)
	}
	return h
}

// boltLog returns every change the log holds, in order.
func boltLog(tb testing.TB, b *Bolt) []Change {
	tb.Helper()
	var all []Change
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(boltLogBucket).ForEach(func(k, v []byte) error {
			c, err := b.decodeChange(boltUint(k), v)
			all = append(all, c)
			return err
		})
	})
	if err != nil {
		tb.Fatalf("read log: %v", err)
	}
	return all
}

// boltCatchUp returns what CatchUp yields, or its error.
func boltCatchUp(tb testing.TB, b *Bolt, topics []string, after, until string) ([]Change, error) {
	tb.Helper()
	var got []Change
	err := b.CatchUp(context.Background(), topics, after, until, func(c Change) error {
		got = append(got, c)
		return nil
	})
	return got, err
}

// boltCount returns how many keys a bucket holds.
func boltCount(tb testing.TB, b *Bolt, bucket []byte) int {
	tb.Helper()
	n := 0
	if err := b.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucket).Stats().KeyN
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	return n
}

func boltPositions(changes []Change) []string {
	var ps []string
	for _, c := range changes {
		ps = append(ps, c.Pos)
	}
	return ps
}

func TestBoltOrders(t *testing.T) {
	ctx := context.Background()
	b := boltTestOpen(t, "", BoltOptions{}, nil)

	items := []Item{{SKU: "pizza", Qty: 2}, {SKU: "cola", Qty: 1}}
	o, err := b.CreateOrder(ctx, "alice", items)
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	if !ValidOrderID(o.ID) || o.Customer != "alice" || o.Status != StatusPlaced || o.Version != 1 ||
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

	o2 := boltMustOrder(t, b, "bob")
	if o2.ID <= o.ID {
		t.Errorf("second order id %s, want above %s", o2.ID, o.ID)
	}

	up, err := b.UpdateOrderStatus(ctx, o.ID, StatusPreparing, 0)
	if err != nil {
		t.Fatalf("UpdateOrderStatus: %v", err)
	}
	if up.Status != StatusPreparing || up.Version != 2 || up.UpdatedAt.Before(up.CreatedAt) || !up.CreatedAt.Equal(o.CreatedAt) {
		t.Fatalf("UpdateOrderStatus = %+v, want preparing version 2", up)
	}
	if got, _ := b.GetOrder(ctx, o.ID); !reflect.DeepEqual(got, up) {
		t.Fatalf("GetOrder after update = %+v, want %+v", got, up)
	}

	for _, tc := range []struct {
		name     string
		customer string
		items    []Item
	}{
		{"no customer", "", []Item{{SKU: "a", Qty: 1}}},
		{"no items", "alice", nil},
		{"zero qty", "alice", []Item{{SKU: "a", Qty: 0}}},
		{"too many", "alice", []Item{{SKU: "a", Qty: MaxQty + 1}}},
		{"no sku", "alice", []Item{{Qty: 1}}},
		{"control char", "al\nice", []Item{{SKU: "a", Qty: 1}}},
	} {
		if _, err := b.CreateOrder(ctx, tc.customer, tc.items); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateOrder %s: got %v, want ErrInvalid", tc.name, err)
		}
	}

	for _, id := range []string{"", "x", strings.Repeat("0", 24), strings.ToUpper(o.ID), o.ID + "0", "../../etc/passwd"} {
		if _, err := b.GetOrder(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetOrder(%q): got %v, want ErrNotFound", id, err)
		}
		if _, err := b.UpdateOrderStatus(ctx, id, StatusPreparing, 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("UpdateOrderStatus(%q): got %v, want ErrNotFound", id, err)
		}
	}
	if err := b.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestBoltStatusMachine(t *testing.T) {
	ctx := context.Background()
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	paths := map[string][]string{
		StatusPlaced:         nil,
		StatusPreparing:      {StatusPreparing},
		StatusOutForDelivery: {StatusPreparing, StatusOutForDelivery},
		StatusDelivered:      {StatusPreparing, StatusOutForDelivery, StatusDelivered},
		StatusCancelled:      {StatusCancelled},
	}
	allowed := map[[2]string]bool{
		{StatusPlaced, StatusPreparing}:         true,
		{StatusPlaced, StatusCancelled}:         true,
		{StatusPreparing, StatusOutForDelivery}: true,
		{StatusPreparing, StatusCancelled}:      true,
		{StatusOutForDelivery, StatusDelivered}: true,
	}
	to := []string{StatusPlaced, StatusPreparing, StatusOutForDelivery, StatusDelivered, StatusCancelled, "lost", ""}
	for from, path := range paths {
		for _, next := range to {
			t.Run(from+"→"+next, func(t *testing.T) {
				o := boltMustOrder(t, b, "alice")
				for _, s := range path {
					var err error
					if o, err = b.UpdateOrderStatus(ctx, o.ID, s, 0); err != nil {
						t.Fatalf("walk to %s: %v", s, err)
					}
				}
				got, err := b.UpdateOrderStatus(ctx, o.ID, next, 0)
				var want error
				switch {
				case !ValidStatus(next):
					want = ErrInvalid
				case !allowed[[2]string{from, next}]:
					want = ErrConflict
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

func TestBoltIfMatch(t *testing.T) {
	ctx := context.Background()
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	o := boltMustOrder(t, b, "alice")
	for _, tc := range []struct {
		name    string
		status  string
		version int64
		want    error
	}{
		{"stale version", StatusPreparing, 2, ErrVersionMismatch},
		{"mismatch before conflict", StatusDelivered, 7, ErrVersionMismatch},
		{"mismatch before unknown status", "lost", 7, ErrVersionMismatch},
		{"negative version", StatusPreparing, -1, ErrInvalid},
		{"matching version", StatusPreparing, 1, nil},
		{"same version again", StatusOutForDelivery, 1, ErrVersionMismatch},
		{"any version", StatusOutForDelivery, 0, nil},
		{"current version", StatusDelivered, 3, nil},
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

func TestBoltMessages(t *testing.T) {
	ctx := context.Background()
	clock := newBoltClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	b := boltTestOpen(t, "", BoltOptions{}, clock.Now)

	var want, neighbours []Message
	for i := range 10 {
		want = append(want, boltMustPost(t, b, "a", fmt.Sprint("m", i)))
		neighbours = append(neighbours, boltMustPost(t, b, "ab", "neighbour")) // a room whose name extends "a"
		boltMustPost(t, b, "a-b", "neighbour")                                 // and one sorting just before it
		if i == 5 {
			clock.Advance(-time.Hour) // ids keep growing when the clock steps back
		}
	}
	for i := 1; i < len(want); i++ {
		if want[i].ID <= want[i-1].ID {
			t.Fatalf("message id %s not above the previous %s", want[i].ID, want[i-1].ID)
		}
	}
	if m := want[0]; !ValidOrderID(m.ID) || m.Room != "a" || m.Author != "alice" || m.Text != "m0" || m.CreatedAt.IsZero() {
		t.Fatalf("PostMessage = %+v", m)
	}

	for _, tc := range []struct {
		name   string
		before string
		limit  int
		want   []Message
	}{
		{"newest three", "", 3, want[7:]},
		{"page before", want[7].ID, 3, want[4:7]},
		{"short last page", want[2].ID, 3, want[:2]},
		{"before the first", want[0].ID, 3, []Message{}},
		{"everything", "", MaxListLimit, want},
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
		{"limit too big", "a", "", MaxListLimit + 1},
		{"malformed before", "a", "zz", 10},
		{"upper-case before", "a", strings.ToUpper(want[1].ID), 10},
		{"bad room", "A", "", 10},
	} {
		if _, err := b.ListMessages(ctx, tc.room, tc.before, tc.limit); !errors.Is(err, ErrInvalid) {
			t.Errorf("ListMessages %s: got %v, want ErrInvalid", tc.name, err)
		}
	}
	for _, tc := range []struct{ name, room, author, text string }{
		{"bad room", "Lobby", "alice", "hi"},
		{"no author", "a", "", "hi"},
		{"empty text", "a", "alice", ""},
		{"long text", "a", "alice", strings.Repeat("x", MaxTextLen+1)},
		{"invalid utf-8", "a", "alice", "\xff"},
	} {
		if _, err := b.PostMessage(ctx, tc.room, tc.author, tc.text); !errors.Is(err, ErrInvalid) {
			t.Errorf("PostMessage %s: got %v, want ErrInvalid", tc.name, err)
		}
	}
}

func TestBoltChangesMatchWrites(t *testing.T) {
	ctx := context.Background()
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	start := boltMustHead(t, b)
	o := boltMustOrder(t, b, "alice")
	up, err := b.UpdateOrderStatus(ctx, o.ID, StatusPreparing, 1)
	if err != nil {
		t.Fatal(err)
	}
	m := boltMustPost(t, b, "lobby", "hi")
	// Refused writes log nothing.
	b.UpdateOrderStatus(ctx, o.ID, StatusDelivered, 0)
	b.UpdateOrderStatus(ctx, o.ID, StatusCancelled, 1)
	b.PostMessage(ctx, "lobby", "", "x")

	log := boltLog(t, b)
	want := []Change{
		{Topic: OrderTopic(o.ID), Op: OpInsert, Order: &o, Time: o.CreatedAt},
		{Topic: OrderTopic(o.ID), Op: OpUpdate, Order: &up, Time: up.UpdatedAt},
		{Topic: RoomTopic("lobby"), Op: OpInsert, Message: &m, Time: m.CreatedAt},
	}
	if len(log) != len(want) {
		t.Fatalf("log has %d changes, want %d: %+v", len(log), len(want), log)
	}
	prev := start
	for i := range want {
		want[i].Pos = log[i].Pos
		if !reflect.DeepEqual(log[i], want[i]) {
			t.Errorf("change %d: got %+v, want %+v", i, log[i], want[i])
		}
		if log[i].Pos <= prev {
			t.Errorf("change %d position %s, want above %s", i, log[i].Pos, prev)
		}
		prev = log[i].Pos
	}
	if h := boltMustHead(t, b); h != prev {
		t.Errorf("Head = %s, want the last change %s", h, prev)
	}
}

// boltHoldWrites takes bbolt's write lock so the committer stalls, and
// returns a function that waits until n writes are queued or taken, then
// releases the lock.
func boltHoldWrites(tb testing.TB, b *Bolt) (release func(n int)) {
	tb.Helper()
	tx, err := b.db.Begin(true)
	if err != nil {
		tb.Fatal(err)
	}
	base := b.taken.Load()
	return func(n int) {
		tb.Helper()
		deadline := time.Now().Add(boltWait)
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

func TestBoltGroupCommitIsolatesFailures(t *testing.T) {
	ctx := context.Background()
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	o := boltMustOrder(t, b, "alice")
	start := boltMustHead(t, b)
	commits := b.commits.Load()

	type result struct {
		name string
		err  error
	}
	writes := map[string]func() error{
		"conflict": func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, StatusDelivered, 0); return err },
		"mismatch": func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, StatusCancelled, 9); return err },
		"missing": func() error {
			_, err := b.UpdateOrderStatus(ctx, strings.Repeat("ab", 12), StatusCancelled, 0)
			return err
		},
		"update": func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, StatusPreparing, 1); return err },
	}
	for i := range 12 {
		writes[fmt.Sprint("post", i)] = func() error { _, err := b.PostMessage(ctx, "lobby", "bob", fmt.Sprint(i)); return err }
	}
	wantErr := map[string]error{"conflict": ErrConflict, "mismatch": ErrVersionMismatch, "missing": ErrNotFound}

	release := boltHoldWrites(t, b)
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

	got, err := boltCatchUp(t, b, []string{OrderTopic(o.ID), RoomTopic("lobby")}, start, boltMustHead(t, b))
	if err != nil {
		t.Fatal(err)
	}
	posts, updates := 0, 0
	for _, c := range got {
		switch {
		case c.Message != nil:
			posts++
		case c.Order != nil && c.Op == OpUpdate && c.Order.Status == StatusPreparing:
			updates++
		default:
			t.Errorf("unexpected change %+v", c)
		}
	}
	if posts != 12 || updates != 1 || len(boltLog(t, b)) != 14 {
		t.Errorf("log holds %d posts and %d updates (%d changes in all), want 12, 1 and 14", posts, updates, len(boltLog(t, b)))
	}
}

func TestBoltCancelledWriteNotApplied(t *testing.T) {
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	// Hold bbolt's write lock so the write cannot commit; wait until it has
	// reached the committer, cancel it, and only then let the group run.
	release := boltHoldWrites(t, b)
	done := make(chan error, 1)
	go func() { _, err := b.PostMessage(ctx, "lobby", "bob", "never"); done <- err }()
	deadline := time.Now().Add(boltWait)
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
	if n := len(boltLog(t, b)); n != 0 {
		t.Fatalf("log has %d changes, want 0", n)
	}
	if msgs, _ := b.ListMessages(context.Background(), "lobby", "", 10); len(msgs) != 0 {
		t.Fatalf("got messages %v, want none", msgs)
	}
}

func TestBoltGroupCommitGroups(t *testing.T) {
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	const writers, each = 32, 20
	commits := b.commits.Load()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if _, err := b.PostMessage(context.Background(), fmt.Sprint("room", w), "bob", fmt.Sprint(i)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n := b.commits.Load() - commits
	if n >= writers*each {
		t.Fatalf("%d writes took %d commits, want fewer", writers*each, n)
	}
	if got := len(boltLog(t, b)); got != writers*each {
		t.Fatalf("log has %d changes, want %d", got, writers*each)
	}
	t.Logf("%d writes in %d commits", writers*each, n)
}

func TestBoltPositions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	b, err := OpenBolt(dir, BoltOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	empty := boltMustHead(t, b)
	if err := b.CheckPosition(empty); err != nil {
		t.Fatalf("CheckPosition(empty log head %q): %v", empty, err)
	}
	boltMustOrder(t, b, "alice")
	boltMustPost(t, b, "lobby", "one")
	boltMustPost(t, b, "lobby", "two")
	before := boltPositions(boltLog(t, b))
	head := boltMustHead(t, b)
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

	b = boltTestOpen(t, dir, BoltOptions{}, nil)
	if h := boltMustHead(t, b); h != head {
		t.Fatalf("Head after reopen = %s, want %s", h, head)
	}
	for _, p := range append(before, empty) {
		if err := b.CheckPosition(p); err != nil {
			t.Errorf("CheckPosition(%s) after reopen: %v", p, err)
		}
	}
	m := boltMustPost(t, b, "lobby", "three")
	after := boltPositions(boltLog(t, b))
	if !slices.Equal(after[:len(before)], before) || after[len(after)-1] <= head || !slices.IsSorted(after) {
		t.Fatalf("positions after reopen %v, want %v then one more", after, before)
	}
	got, err := boltCatchUp(t, b, []string{RoomTopic("lobby")}, empty, boltMustHead(t, b))
	if err != nil || len(got) != 3 || got[2].Message.ID != m.ID {
		t.Fatalf("CatchUp after reopen: got %d changes, %v; want 3 ending with %s", len(got), err, m.ID)
	}

	// Another deployment's positions are refused, and ours by it.
	other := boltTestOpen(t, "", BoltOptions{}, nil)
	boltMustPost(t, other, "lobby", "elsewhere")
	if other.deployment != b.deployment {
		if err := b.CheckPosition(boltMustHead(t, other)); !errors.Is(err, ErrInvalidPosition) {
			t.Errorf("CheckPosition(other deployment): got %v, want ErrInvalidPosition", err)
		}
	}
	forged := []byte(head)
	forged[0] = "01"[boltB2i(forged[0] == '0')]
	if err := b.CheckPosition(string(forged)); !errors.Is(err, ErrInvalidPosition) {
		t.Errorf("CheckPosition(%s, another deployment id): got %v, want ErrInvalidPosition", forged, err)
	}
	if err := b.Follow(ctx, string(forged), func(Batch) error { return nil }); !errors.Is(err, ErrInvalidPosition) {
		t.Errorf("Follow(another deployment): got %v, want ErrInvalidPosition", err)
	}
}

func boltB2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

func TestBoltBadPositions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), boltWait) // a Follow that wrongly starts ends
	defer cancel()
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	boltMustPost(t, b, "lobby", "hi")
	head := boltMustHead(t, b)
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
		if err := b.CheckPosition(pos); !errors.Is(err, ErrInvalidPosition) {
			t.Errorf("CheckPosition(%q): got %v, want ErrInvalidPosition", pos, err)
		}
		if err := b.Follow(ctx, pos, func(Batch) error { return nil }); !errors.Is(err, ErrInvalidPosition) {
			t.Errorf("Follow(%q): got %v, want ErrInvalidPosition", pos, err)
		}
		if _, err := boltCatchUp(t, b, []string{RoomTopic("lobby")}, pos, head); !errors.Is(err, ErrInvalidPosition) {
			t.Errorf("CatchUp(after %q): got %v, want ErrInvalidPosition", pos, err)
		}
		if _, err := boltCatchUp(t, b, []string{RoomTopic("lobby")}, head, pos); !errors.Is(err, ErrInvalidPosition) {
			t.Errorf("CatchUp(until %q): got %v, want ErrInvalidPosition", pos, err)
		}
	}
	if err := b.CheckPosition(head); err != nil {
		t.Errorf("CheckPosition(head): %v", err)
	}
}

// boltFollower runs Follow in a goroutine and hands its batches over.
type boltFollower struct {
	batches chan Batch
	done    chan error
	cancel  context.CancelFunc
}

func boltStartFollow(tb testing.TB, b *Bolt, after string) *boltFollower {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &boltFollower{batches: make(chan Batch), done: make(chan error, 1), cancel: cancel}
	go func() {
		f.done <- b.Follow(ctx, after, func(batch Batch) error {
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
func (f *boltFollower) next(tb testing.TB) Batch {
	tb.Helper()
	select {
	case batch := <-f.batches:
		return batch
	case err := <-f.done:
		tb.Fatalf("Follow ended: %v", err)
	case <-time.After(boltWait):
		tb.Fatal("no batch from Follow")
	}
	return Batch{}
}

// changes collects n changes from the follower, checking checkpoints.
func (f *boltFollower) changes(tb testing.TB, n int) []Change {
	tb.Helper()
	var got []Change
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

func TestBoltFollow(t *testing.T) {
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	for i := range 5 {
		boltMustPost(t, b, "lobby", fmt.Sprint(i))
	}
	log := boltLog(t, b)
	after := log[1].Pos

	f := boltStartFollow(t, b, after)
	if first := f.next(t); len(first.Changes) != 0 || first.Checkpoint != after {
		t.Fatalf("first batch %+v, want empty with checkpoint %s", first, after)
	}
	if got := f.changes(t, 3); !reflect.DeepEqual(got, log[2:]) {
		t.Fatalf("Follow from %s: got %v, want %v", after, got, log[2:])
	}

	// It wakes on new commits, including ones from concurrent writers.
	o := boltMustOrder(t, b, "alice")
	if got := f.changes(t, 1); got[0].Order == nil || got[0].Order.ID != o.ID || got[0].Op != OpInsert {
		t.Fatalf("after CreateOrder: got %+v", got[0])
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() { boltPost(t, b, "busy", fmt.Sprint(w)) })
	}
	got := f.changes(t, 8)
	wg.Wait()
	if want := boltLog(t, b)[6:]; !reflect.DeepEqual(got, want) {
		t.Fatalf("after concurrent posts: got %v, want %v", got, want)
	}

	f.cancel()
	select {
	case err := <-f.done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Follow after cancel: got %v, want context.Canceled", err)
		}
		f.done <- err // for cleanup
	case <-time.After(boltWait):
		t.Fatal("Follow did not return after cancel")
	}
}

func TestBoltFollowFromEmptyAndClose(t *testing.T) {
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	f := boltStartFollow(t, b, boltMustHead(t, b))
	f.next(t)
	m := boltMustPost(t, b, "lobby", "first")
	if got := f.changes(t, 1); got[0].Message == nil || *got[0].Message != m {
		t.Fatalf("got %+v, want message %+v", got[0], m)
	}
	b.Close()
	select {
	case err := <-f.done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Follow after Close: got %v, want ErrClosed", err)
		}
		f.done <- err
	case <-time.After(boltWait):
		t.Fatal("Follow did not return after Close")
	}
}

func TestBoltFollowFnError(t *testing.T) {
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	boltMustPost(t, b, "lobby", "x")
	stop := errors.New("stop")
	calls := 0
	err := b.Follow(context.Background(), boltPositionAt(b, 0), func(batch Batch) error {
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

// boltPositionAt returns the position of sequence number seq.
func boltPositionAt(b *Bolt, seq uint64) string { return b.pos(seq) }

func TestBoltCatchUp(t *testing.T) {
	ctx := context.Background()
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	start := boltMustHead(t, b)
	o := boltMustOrder(t, b, "alice")
	if _, err := b.UpdateOrderStatus(ctx, o.ID, StatusPreparing, 0); err != nil {
		t.Fatal(err)
	}
	// More than one read chunk of the topics, interleaved with others.
	rooms := []string{"lobby", "kitchen", "lobby-2", "l"}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 150 {
				boltPost(t, b, rooms[(w+i)%len(rooms)], fmt.Sprint(w, "-", i))
			}
		})
	}
	wg.Wait()
	var want []Change
	log := boltLog(t, b)
	topics := []string{RoomTopic("lobby"), OrderTopic(o.ID), RoomTopic("lobby")}
	for _, c := range log {
		if c.Topic == RoomTopic("lobby") || c.Topic == OrderTopic(o.ID) {
			want = append(want, c)
		}
	}
	head := boltMustHead(t, b)
	got, err := boltCatchUp(t, b, topics, start, head)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("CatchUp(all): got %d changes, %v; want %d", len(got), err, len(want))
	}

	// after and until bound it: after < pos <= until.
	after, until := want[10].Pos, want[200].Pos
	got, err = boltCatchUp(t, b, topics, after, until)
	if err != nil || !reflect.DeepEqual(got, want[11:201]) {
		t.Fatalf("CatchUp(%s, %s]: got %d changes, %v; want %d", after, until, len(got), err, 190)
	}
	if got, err := boltCatchUp(t, b, topics, until, after); err != nil || len(got) != 0 {
		t.Fatalf("CatchUp with until before after: got %d, %v; want none", len(got), err)
	}
	if got, err := boltCatchUp(t, b, nil, start, head); err != nil || len(got) != 0 {
		t.Fatalf("CatchUp of no topics: got %d, %v; want none", len(got), err)
	}
	if got, err := boltCatchUp(t, b, []string{RoomTopic("nobody")}, start, head); err != nil || len(got) != 0 {
		t.Fatalf("CatchUp of a quiet topic: got %d, %v; want none", len(got), err)
	}
	if _, err := boltCatchUp(t, b, []string{"rooms/Bad"}, start, head); !errors.Is(err, ErrInvalid) {
		t.Fatalf("CatchUp of a bad topic: got %v, want ErrInvalid", err)
	}
	stop := errors.New("stop")
	if err := b.CatchUp(ctx, topics, start, head, func(Change) error { return stop }); err != stop {
		t.Fatalf("CatchUp with failing fn: got %v, want its error", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	n := 0
	err = b.CatchUp(cctx, topics, start, head, func(Change) error {
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n >= len(want) {
		t.Fatalf("CatchUp cancelled after 3: got %v after %d changes, want context.Canceled before the end", err, n)
	}
}

func TestBoltRetentionByCount(t *testing.T) {
	ctx := context.Background()
	b := boltTestOpen(t, "", BoltOptions{RetainCount: 10}, nil)
	start := boltMustHead(t, b)
	for i := range 30 {
		boltMustPost(t, b, fmt.Sprint("room", i%3), fmt.Sprint(i))
	}
	log := boltLog(t, b)
	head := boltMustHead(t, b)
	n, err := b.prune(ctx)
	if err != nil || n != 20 {
		t.Fatalf("prune: deleted %d, %v; want 20", n, err)
	}
	if n, err := b.prune(ctx); err != nil || n != 0 {
		t.Fatalf("second prune: deleted %d, %v; want 0", n, err)
	}
	if got := boltLog(t, b); !reflect.DeepEqual(got, log[20:]) {
		t.Fatalf("log after prune holds %d changes, want the newest 10", len(got))
	}
	if n := boltCount(t, b, boltTopicBucket); n != 10 {
		t.Fatalf("topic index holds %d entries, want 10", n)
	}
	topics := []string{RoomTopic("room0"), RoomTopic("room1"), RoomTopic("room2")}
	for _, pos := range []string{start, log[0].Pos, log[18].Pos} {
		if err := b.CheckPosition(pos); err != nil {
			t.Errorf("CheckPosition(%s): %v (it does not check retention)", pos, err)
		}
		if err := b.Follow(ctx, pos, func(Batch) error { return nil }); !errors.Is(err, ErrHistoryLost) {
			t.Errorf("Follow(%s): got %v, want ErrHistoryLost", pos, err)
		}
		if _, err := boltCatchUp(t, b, topics, pos, head); !errors.Is(err, ErrHistoryLost) {
			t.Errorf("CatchUp(%s): got %v, want ErrHistoryLost", pos, err)
		}
	}
	// The last pruned change's position still resumes: nothing after it is lost.
	got, err := boltCatchUp(t, b, topics, log[19].Pos, head)
	if err != nil || !reflect.DeepEqual(got, log[20:]) {
		t.Fatalf("CatchUp from the pruned mark: got %d, %v; want the 10 kept", len(got), err)
	}
	f := boltStartFollow(t, b, log[19].Pos)
	f.next(t)
	if got := f.changes(t, 10); !reflect.DeepEqual(got, log[20:]) {
		t.Fatalf("Follow from the pruned mark: got %v", got)
	}
}

func TestBoltRetentionByAge(t *testing.T) {
	ctx := context.Background()
	clock := newBoltClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	b := boltTestOpen(t, "", BoltOptions{RetainAge: 24 * time.Hour}, clock.Now)
	for i := range 5 {
		boltMustPost(t, b, "lobby", fmt.Sprint("old", i))
	}
	clock.Advance(23 * time.Hour)
	if n, err := b.prune(ctx); err != nil || n != 0 {
		t.Fatalf("prune within the age: deleted %d, %v; want 0", n, err)
	}
	for i := range 3 {
		boltMustPost(t, b, "lobby", fmt.Sprint("new", i))
	}
	clock.Advance(2 * time.Hour)
	log := boltLog(t, b)
	if n, err := b.prune(ctx); err != nil || n != 5 {
		t.Fatalf("prune: deleted %d, %v; want the 5 old changes", n, err)
	}
	head := boltMustHead(t, b)
	if _, err := boltCatchUp(t, b, []string{RoomTopic("lobby")}, log[3].Pos, head); !errors.Is(err, ErrHistoryLost) {
		t.Fatalf("CatchUp from a pruned change: got %v, want ErrHistoryLost", err)
	}
	if got, err := boltCatchUp(t, b, []string{RoomTopic("lobby")}, log[4].Pos, head); err != nil || len(got) != 3 {
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
	if got, err := boltCatchUp(t, b, []string{RoomTopic("lobby")}, head, head); err != nil || len(got) != 0 {
		t.Fatalf("CatchUp at the head of an emptied log: %d, %v", len(got), err)
	}
	f := boltStartFollow(t, b, head)
	f.next(t)
	boltMustPost(t, b, "lobby", "after")
	f.changes(t, 1)
}

func TestBoltPrunerRunsOnInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := boltTestOpen(t, "", BoltOptions{RetainCount: 3, PruneInterval: time.Minute}, nil)
		for i := range 10 {
			boltMustPost(t, b, "lobby", fmt.Sprint(i))
		}
		synctest.Wait()
		if n := len(boltLog(t, b)); n != 10 {
			t.Fatalf("before the interval: %d changes, want 10", n)
		}
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := len(boltLog(t, b)); n != 3 {
			t.Fatalf("after the interval: %d changes, want 3", n)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBoltFollowOvertakenByPruner(t *testing.T) {
	ctx := context.Background()
	b := boltTestOpen(t, "", BoltOptions{RetainCount: 1}, nil)
	start := boltMustHead(t, b)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 2 * boltReadChunk / 8 {
				boltPost(t, b, "lobby", fmt.Sprint(w, i))
			}
		})
	}
	wg.Wait()
	seen := 0
	err := b.Follow(ctx, start, func(batch Batch) error {
		if len(batch.Changes) > 0 && seen == 0 {
			// Prune while the follower is behind, with no read transaction open.
			if _, err := b.prune(ctx); err != nil {
				return err
			}
		}
		seen += len(batch.Changes)
		return nil
	})
	if !errors.Is(err, ErrHistoryLost) || seen == 0 || seen >= 2*boltReadChunk {
		t.Fatalf("Follow overtaken by the pruner: got %v after %d changes, want ErrHistoryLost after one chunk", err, seen)
	}
}

func TestBoltSnapshot(t *testing.T) {
	ctx := context.Background()
	b := boltTestOpen(t, "", BoltOptions{}, nil)
	start := boltMustHead(t, b)
	snaps, pos, err := b.Snapshot(ctx, []string{RoomTopic("lobby"), OrderTopic(strings.Repeat("0", 24))})
	if err != nil || pos != start || len(snaps) != 2 || snaps[0].Messages == nil || len(snaps[0].Messages) != 0 || snaps[1].Order != nil {
		t.Fatalf("Snapshot of nothing: %+v, %s, %v", snaps, pos, err)
	}
	if _, _, err := b.Snapshot(ctx, []string{"rooms/"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Snapshot of a bad topic: got %v, want ErrInvalid", err)
	}

	o := boltMustOrder(t, b, "alice")
	topics := []string{OrderTopic(o.ID), RoomTopic("lobby")}
	type taken struct {
		snaps []Snapshot
		pos   string
	}
	var (
		wg    sync.WaitGroup
		stop  = make(chan struct{})
		takes = make(chan taken, 1000)
	)
	for w := range 4 {
		wg.Go(func() {
			for i := range 40 {
				boltPost(t, b, "lobby", fmt.Sprint(w, "-", i))
				if w == 0 && i%10 == 9 {
					next := map[string]string{StatusPlaced: StatusPreparing, StatusPreparing: StatusOutForDelivery, StatusOutForDelivery: StatusDelivered}
					cur, _ := b.GetOrder(ctx, o.ID)
					if s, ok := next[cur.Status]; ok {
						b.UpdateOrderStatus(ctx, o.ID, s, 0)
					}
				}
			}
		})
	}
	var sg sync.WaitGroup
	sg.Go(func() {
		for {
			snaps, pos, err := b.Snapshot(ctx, topics)
			if err != nil {
				t.Error(err)
				return
			}
			takes <- taken{snaps, pos}
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
	wg.Wait()
	close(stop)
	sg.Wait()
	close(takes)

	checked := 0
	for tk := range takes {
		// Replaying the log up to the snapshot's position must give its contents.
		changes, err := boltCatchUp(t, b, topics, start, tk.pos)
		if err != nil {
			t.Fatal(err)
		}
		var order *Order
		var msgs []Message
		for _, c := range changes {
			if c.Order != nil {
				order = c.Order
			} else {
				msgs = append(msgs, *c.Message)
			}
		}
		msgs = msgs[max(0, len(msgs)-SnapshotMessages):]
		if !reflect.DeepEqual(tk.snaps[0].Order, order) {
			t.Fatalf("snapshot at %s: order %+v, log says %+v", tk.pos, tk.snaps[0].Order, order)
		}
		if len(msgs) == 0 {
			msgs = []Message{}
		}
		if !reflect.DeepEqual(tk.snaps[1].Messages, msgs) {
			t.Fatalf("snapshot at %s: %d messages, log says %d", tk.pos, len(tk.snaps[1].Messages), len(msgs))
		}
		checked++
	}
	t.Logf("checked %d snapshots", checked)
}

func TestBoltClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	dir := t.TempDir()
	b, err := OpenBolt(dir, BoltOptions{Logger: slog.New(slog.DiscardHandler), PruneInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	o := boltMustOrder(t, b, "alice")
	head := boltMustHead(t, b)
	follow := make(chan error, 1)
	go func() { follow <- b.Follow(ctx, head, func(Batch) error { return nil }) }()

	// A second process (here: a second open) cannot take the directory.
	if b2, err := OpenBolt(dir, BoltOptions{}); err == nil {
		b2.Close()
		t.Fatal("second OpenBolt of the same directory succeeded")
	}

	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-follow; !errors.Is(err, ErrClosed) {
		t.Fatalf("Follow across Close: got %v, want ErrClosed", err)
	}
	calls := map[string]error{
		"Close":             b.Close(),
		"Ping":              b.Ping(ctx),
		"CreateOrder":       boltErr(b.CreateOrder(ctx, "alice", []Item{{SKU: "a", Qty: 1}})),
		"GetOrder":          boltErr(b.GetOrder(ctx, o.ID)),
		"UpdateOrderStatus": boltErr(b.UpdateOrderStatus(ctx, o.ID, StatusPreparing, 0)),
		"PostMessage":       boltErr(b.PostMessage(ctx, "lobby", "bob", "hi")),
		"ListMessages":      boltErr(b.ListMessages(ctx, "lobby", "", 10)),
		"Head":              boltErr(b.Head(ctx)),
		"Follow":            b.Follow(ctx, head, func(Batch) error { return nil }),
		"CatchUp":           b.CatchUp(ctx, []string{RoomTopic("lobby")}, head, head, func(Change) error { return nil }),
		"Snapshot":          boltErr2(b.Snapshot(ctx, []string{RoomTopic("lobby")})),
		"CheckPosition":     b.CheckPosition(head[:boltDeploymentLen+1] + "00000000000000ff"),
	}
	for name, err := range calls {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", name, err)
		}
	}
}

func boltErr[T any](_ T, err error) error { return err }

func boltErr2[T, U any](_ T, _ U, err error) error { return err }

func TestBoltOpenOptions(t *testing.T) {
	if _, err := OpenBolt(t.TempDir(), BoltOptions{RetainCount: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative RetainCount: got %v, want ErrInvalid", err)
	}
	b := boltTestOpen(t, t.TempDir()+"/nested/dir", BoltOptions{Logger: slog.New(slog.DiscardHandler)}, nil)
	want := BoltOptions{RetainCount: 1_000_000, RetainAge: 7 * 24 * time.Hour, PruneInterval: time.Hour, Logger: b.opts.Logger}
	if b.opts != want {
		t.Errorf("options = %+v, want %+v", b.opts, want)
	}
}

func FuzzBoltCheckPosition(f *testing.F) {
	b := boltTestOpen(f, "", BoltOptions{}, nil)
	boltMustPost(f, b, "lobby", "hi")
	head := boltMustHead(f, b)
	for _, s := range []string{"", head, boltPositionAt(b, 0), boltPositionAt(b, 2), "0000000-00000000000000001", head + "x", strings.ToUpper(head)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, pos string) {
		err := b.CheckPosition(pos)
		if err == nil {
			if !strings.HasPrefix(pos, b.deployment+"-") || len(pos) != boltPosLen || pos > head {
				t.Fatalf("CheckPosition(%q) accepted a position this store never made (head %s)", pos, head)
			}
			return
		}
		if !errors.Is(err, ErrInvalidPosition) {
			t.Fatalf("CheckPosition(%q): got %v, want ErrInvalidPosition", pos, err)
		}
	})
}

// TestBoltSurvivesKill runs a writer in a child process, kills it with
// SIGKILL in the middle of writing, and checks that every write the child
// saw acknowledged is in the reopened store and its log.
func TestBoltSurvivesKill(t *testing.T) {
	if dir := os.Getenv("CHANGECAST_BOLT_KILL_DIR"); dir != "" {
		boltKillChild(dir)
		return
	}
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBoltSurvivesKill$")
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

	b := boltTestOpen(t, dir, BoltOptions{}, nil)
	have := map[string]bool{}
	for _, c := range boltLog(t, b) {
		have[c.Message.ID] = true
	}
	msgs := map[string]bool{}
	for w := range 8 {
		for before := ""; ; {
			list, err := b.ListMessages(context.Background(), fmt.Sprint("kill", w), before, MaxListLimit)
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
	head := boltMustHead(t, b)
	if m := boltMustPost(t, b, "kill0", "after"); m.ID <= acked[len(acked)-1] {
		t.Fatalf("id after restart %s, want above %s", m.ID, acked[len(acked)-1])
	}
	if h := boltMustHead(t, b); h <= head {
		t.Fatalf("head after restart %s, want above %s", h, head)
	}
	t.Logf("%d acknowledged writes survived, %d changes in the log", len(acked), len(have))
}

// boltKillChild writes messages from 8 goroutines until killed, printing
// each acknowledged id.
func boltKillChild(dir string) {
	b, err := OpenBolt(dir, BoltOptions{Logger: slog.New(slog.DiscardHandler)})
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

func TestBoltOldest(t *testing.T) {
	b, err := OpenBolt(t.TempDir(), BoltOptions{})
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
