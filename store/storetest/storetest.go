// Package storetest is the conformance suite: one set of cases every
// store.Backend passes. Each backend's tests call Run with a Harness that
// opens that backend; the cases use only the Backend contract.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"changecast/store"
)

// Wait bounds every wait for a change to arrive. It guards against a
// hang; it asserts nothing about speed.
const Wait = 30 * time.Second

// Harness adapts one backend to the suite.
type Harness struct {
	// Storage returns an opener for fresh storage: each call of the
	// opener opens a store on that same storage (a reopen after Close
	// sees what the earlier store wrote). The opener registers the
	// store's Close with t.Cleanup.
	Storage func(t *testing.T) func(t *testing.T) store.Backend
	// LoseHistory returns a store and a position whose history the store
	// no longer has, or skips the test saying why it cannot.
	LoseHistory func(t *testing.T) (store.Backend, string)

	// large is set on the run with the largest records (withLargest).
	large bool
}

// Run runs every case of the suite against h, each as a subtest of t,
// then every case again under the subtest "largest records", writing the
// largest records the API accepts (see largest).
func Run(t *testing.T, h Harness) {
	run(t, h)
	t.Run("largest records", func(t *testing.T) { run(t, h.withLargest()) })
}

// run runs every case against h.
func run(t *testing.T, h Harness) {
	cases := []struct {
		name string
		run  func(t *testing.T, h Harness)
	}{
		{"write and read back", confWriteRead},
		{"errors", confErrors},
		{"order history", confOrderHistory},
		{"follow sees writes in order", confFollowOrder},
		{"resume from any position", confResume},
		{"snapshot then follow", confSnapshotFollow},
		{"snapshot matches the log under concurrent writes", confSnapshotMatchesLog},
		{"garbage position", confGarbagePosition},
		{"history lost", confHistoryLost},
		{"restart", confRestart},
		{"close stops follow", confCloseStopsFollow},
		{"list topics in follow and catch-up", confListCatchUp},
		{"order lists: snapshots and ListOrders", confOrderLists},
		{"positions compare in log order", confPositionOrder},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, h) })
	}
}

var confRooms atomic.Int64

// confRoom returns a room name no other case uses.
func confRoom() string { return fmt.Sprintf("conf-%d", confRooms.Add(1)) }

func confCreateOrder(tb testing.TB, b store.Backend) store.Order {
	tb.Helper()
	o, err := b.CreateOrder(context.Background(), "ann", []store.Item{{SKU: "pizza", Qty: 2}, {SKU: "cola", Qty: 1}})
	if err != nil {
		tb.Fatalf("CreateOrder: %v", err)
	}
	return o
}

func confPost(tb testing.TB, b store.Backend, room, text string) store.Message {
	tb.Helper()
	m, err := b.PostMessage(context.Background(), room, "bob", text)
	if err != nil {
		tb.Fatalf("PostMessage: %v", err)
	}
	return m
}

func confUpdate(tb testing.TB, b store.Backend, id, status string) store.Order {
	tb.Helper()
	o, err := b.UpdateOrderStatus(context.Background(), id, status, 0)
	if err != nil {
		tb.Fatalf("UpdateOrderStatus(%s): %v", status, err)
	}
	return o
}

func confSameOrder(tb testing.TB, what string, got, want store.Order) {
	tb.Helper()
	if got.ID != want.ID || got.Customer != want.Customer || got.Status != want.Status ||
		got.Version != want.Version || !slices.Equal(got.Items, want.Items) ||
		!got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) ||
		!slices.EqualFunc(got.History, want.History, func(g, w store.StatusChange) bool { return g.Status == w.Status && g.At.Equal(w.At) }) {
		tb.Errorf("%s: got %+v, want %+v", what, got, want)
	}
}

// confFollow follows b from after until done reports true for a change (of
// any topic) and returns the batches seen. It fails the test if that takes
// longer than Wait.
func confFollow(tb testing.TB, b store.Backend, after string, done func(store.Change) bool) []store.Batch {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	var batches []store.Batch
	errDone := errors.New("done")
	err := b.Follow(ctx, after, func(bt store.Batch) error {
		batches = append(batches, bt)
		for _, c := range bt.Changes {
			if done(c) {
				return errDone
			}
		}
		return nil
	})
	if !errors.Is(err, errDone) {
		tb.Fatalf("Follow(%.40s): got %v, want to see the change waited for", after, err)
	}
	return batches
}

// confAwait waits for a value on ch, failing the test after Wait.
func confAwait[T any](tb testing.TB, ch <-chan T, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(Wait):
		tb.Fatalf("no %s within %v", what, Wait)
		panic("unreachable")
	}
}

// confChanges flattens batches to the changes on topics, in order.
func confChanges(batches []store.Batch, topics ...string) []store.Change {
	var out []store.Change
	for _, bt := range batches {
		for _, c := range bt.Changes {
			if slices.Contains(topics, c.Topic) {
				out = append(out, c)
			}
		}
	}
	return out
}

// confCatchUp returns what CatchUp gives for topics in (after, until].
func confCatchUp(tb testing.TB, b store.Backend, topics []string, after, until string) []store.Change {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	var out []store.Change
	if err := b.CatchUp(ctx, topics, after, until, func(c store.Change) error {
		out = append(out, c)
		return nil
	}); err != nil {
		tb.Fatalf("CatchUp(%.40s, %.40s): %v", after, until, err)
	}
	return out
}

// confDescribe renders changes as "pos topic op version/text" lines.
func confDescribe(cs []store.Change) []string {
	var out []string
	for _, c := range cs {
		s := c.Pos + " " + c.Topic + " " + c.Op
		if c.Order != nil {
			s += fmt.Sprintf(" v%d", c.Order.Version)
		}
		if c.Message != nil {
			s += " " + c.Message.Text
		}
		out = append(out, s)
	}
	return out
}

// confHistory writes a mix of changes on one order and one room and returns
// the position before them and the changes as Follow reports them.
func confHistory(t *testing.T, b store.Backend) (head string, topics []string, changes []store.Change) {
	t.Helper()
	ctx := context.Background()
	head, err := b.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	room := confRoom()
	o := confCreateOrder(t, b)
	confPost(t, b, room, "one")
	confUpdate(t, b, o.ID, store.StatusPreparing)
	confPost(t, b, room, "two")
	confUpdate(t, b, o.ID, store.StatusOutForDelivery)
	last := confPost(t, b, room, "three")
	topics = []string{store.OrderTopic(o.ID), store.RoomTopic(room)}
	batches := confFollow(t, b, head, func(c store.Change) bool { return c.Message != nil && c.Message.ID == last.ID })
	changes = confChanges(batches, topics...)
	if len(changes) != 6 {
		t.Fatalf("Follow from Head saw %d changes on its topics, want 6:\n%s", len(changes), strings.Join(confDescribe(changes), "\n"))
	}
	return head, topics, changes
}
