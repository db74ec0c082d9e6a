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
}

// Run runs every case of the suite against h, each as a subtest of t.
func Run(t *testing.T, h Harness) {
	cases := []struct {
		name string
		run  func(t *testing.T, h Harness)
	}{
		{"write and read back", confWriteRead},
		{"errors", confErrors},
		{"follow sees writes in order", confFollowOrder},
		{"resume from any position", confResume},
		{"snapshot then follow", confSnapshotFollow},
		{"garbage position", confGarbagePosition},
		{"history lost", confHistoryLost},
		{"restart", confRestart},
		{"close stops follow", confCloseStopsFollow},
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
		!got.CreatedAt.Equal(want.CreatedAt) || !got.UpdatedAt.Equal(want.UpdatedAt) {
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

func confWriteRead(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	ctx := context.Background()
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	o := confCreateOrder(t, b)
	if !store.ValidOrderID(o.ID) || o.Status != store.StatusPlaced || o.Version != 1 || o.Customer != "ann" || len(o.Items) != 2 {
		t.Errorf("CreateOrder: got %+v, want a placed order, version 1, with 2 items", o)
	}
	got, err := b.GetOrder(ctx, o.ID)
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	confSameOrder(t, "GetOrder after CreateOrder", got, o)

	u, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 1)
	if err != nil {
		t.Fatalf("UpdateOrderStatus: %v", err)
	}
	if u.Status != store.StatusPreparing || u.Version != 2 || u.UpdatedAt.Before(o.UpdatedAt) || !u.CreatedAt.Equal(o.CreatedAt) {
		t.Errorf("UpdateOrderStatus: got %+v, want preparing, version 2, updatedAt not before %v", u, o.UpdatedAt)
	}
	got, err = b.GetOrder(ctx, o.ID)
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	confSameOrder(t, "GetOrder after UpdateOrderStatus", got, u)

	room := confRoom()
	var posted []store.Message
	for _, text := range []string{"a", "b", "c", "d"} {
		m := confPost(t, b, room, text)
		if !store.ValidOrderID(m.ID) || m.Room != room || m.Author != "bob" || m.Text != text {
			t.Errorf("PostMessage: got %+v", m)
		}
		posted = append(posted, m)
	}
	texts := func(ms []store.Message) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.Text)
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		before string
		limit  int
		want   string
	}{
		{"", 2, "c,d"},
		{"", store.MaxListLimit, "a,b,c,d"},
		{posted[3].ID, 2, "b,c"},
		{posted[1].ID, 10, "a"},
		{posted[0].ID, 10, ""},
	}
	for _, tt := range tests {
		ms, err := b.ListMessages(ctx, room, tt.before, tt.limit)
		if err != nil {
			t.Fatalf("ListMessages(%q, %d): %v", tt.before, tt.limit, err)
		}
		if got := texts(ms); got != tt.want {
			t.Errorf("ListMessages(before %q, %d): got %q, want %q", tt.before, tt.limit, got, tt.want)
		}
	}
	ms, err := b.ListMessages(ctx, room, "", 1)
	if err != nil || len(ms) != 1 || ms[0].ID != posted[3].ID || !ms[0].CreatedAt.Equal(posted[3].CreatedAt) {
		t.Errorf("ListMessages newest: got %+v, %v, want %+v", ms, err, posted[3])
	}
	if ms, err := b.ListMessages(ctx, confRoom(), "", 10); err != nil || len(ms) != 0 {
		t.Errorf("ListMessages of an empty room: got %v, %v, want none", ms, err)
	}
}

func confErrors(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	ctx := context.Background()
	o := confCreateOrder(t, b)
	missing := "0123456789abcdef01234567"
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"get missing order", func() error { _, err := b.GetOrder(ctx, missing); return err }, store.ErrNotFound},
		{"get malformed id", func() error { _, err := b.GetOrder(ctx, "not-an-id"); return err }, store.ErrNotFound},
		{"update missing order", func() error { _, err := b.UpdateOrderStatus(ctx, missing, store.StatusPreparing, 0); return err }, store.ErrNotFound},
		{"update malformed id", func() error { _, err := b.UpdateOrderStatus(ctx, "X", store.StatusPreparing, 0); return err }, store.ErrNotFound},
		{"version mismatch", func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 7); return err }, store.ErrVersionMismatch},
		{"version checked first", func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusDelivered, 7); return err }, store.ErrVersionMismatch},
		{"unknown status", func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, "eaten", 0); return err }, store.ErrInvalid},
		{"transition not allowed", func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusDelivered, 1); return err }, store.ErrConflict},
		{"order without customer", func() error { _, err := b.CreateOrder(ctx, "", []store.Item{{SKU: "a", Qty: 1}}); return err }, store.ErrInvalid},
		{"order without items", func() error { _, err := b.CreateOrder(ctx, "ann", nil); return err }, store.ErrInvalid},
		{"item quantity", func() error { _, err := b.CreateOrder(ctx, "ann", []store.Item{{SKU: "a", Qty: 0}}); return err }, store.ErrInvalid},
		{"bad room", func() error { _, err := b.PostMessage(ctx, "No Room", "bob", "hi"); return err }, store.ErrInvalid},
		{"empty text", func() error { _, err := b.PostMessage(ctx, confRoom(), "bob", ""); return err }, store.ErrInvalid},
		{"no author", func() error { _, err := b.PostMessage(ctx, confRoom(), "", "hi"); return err }, store.ErrInvalid},
		{"limit 0", func() error { _, err := b.ListMessages(ctx, confRoom(), "", 0); return err }, store.ErrInvalid},
		{"limit too big", func() error { _, err := b.ListMessages(ctx, confRoom(), "", store.MaxListLimit+1); return err }, store.ErrInvalid},
		{"malformed before", func() error { _, err := b.ListMessages(ctx, confRoom(), "nope", 10); return err }, store.ErrInvalid},
		{"snapshot bad topic", func() error { _, _, err := b.Snapshot(ctx, []string{"orders/nope"}); return err }, store.ErrInvalid},
	}
	for _, tt := range tests {
		if err := tt.call(); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	got, err := b.GetOrder(ctx, o.ID)
	if err != nil || got.Version != 1 || got.Status != store.StatusPlaced {
		t.Errorf("order after failed updates: got %+v, %v, want it unchanged", got, err)
	}

	c := h.Storage(t)(t)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := c.GetOrder(ctx, o.ID); !errors.Is(err, store.ErrClosed) {
		t.Errorf("GetOrder after Close: got %v, want ErrClosed", err)
	}
	if _, err := c.CreateOrder(ctx, "ann", []store.Item{{SKU: "a", Qty: 1}}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("CreateOrder after Close: got %v, want ErrClosed", err)
	}
	if err := c.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close: got %v, want ErrClosed", err)
	}
}

func confFollowOrder(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	room := confRoom()
	o := confCreateOrder(t, b)
	head, err := b.Head(context.Background())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if err := b.CheckPosition(head); err != nil {
		t.Fatalf("CheckPosition(Head()): %v", err)
	}
	topics := []string{store.OrderTopic(o.ID), store.RoomTopic(room)}

	// Two followers from the same position, started before the writes:
	// the same changes with the same positions, like two processes.
	type result struct {
		batches []store.Batch
		err     error
	}
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	ready := make(chan struct{}, 2)
	results := make([]chan result, 2)
	errDone := errors.New("done")
	for i := range results {
		results[i] = make(chan result, 1)
		go func() {
			var batches []store.Batch
			first := true
			err := b.Follow(ctx, head, func(bt store.Batch) error {
				batches = append(batches, bt)
				if first {
					first = false
					ready <- struct{}{}
				}
				for _, c := range bt.Changes {
					if c.Message != nil && c.Message.Text == "end" && c.Topic == store.RoomTopic(room) {
						return errDone
					}
				}
				return nil
			})
			results[i] <- result{batches, err}
		}()
	}
	for range results {
		confAwait(t, ready, "Follow's first batch")
	}
	confUpdate(t, b, o.ID, store.StatusPreparing)
	confPost(t, b, room, "hello")
	confUpdate(t, b, o.ID, store.StatusCancelled)
	confPost(t, b, room, "end")

	var seen [2][]string
	for i, ch := range results {
		r := <-ch
		if !errors.Is(r.err, errDone) {
			t.Fatalf("Follow %d: got %v, want it to reach the last write", i, r.err)
		}
		if len(r.batches[0].Changes) != 0 || r.batches[0].Checkpoint != head {
			t.Errorf("Follow %d: first batch %+v, want empty with checkpoint %s", i, r.batches[0], head)
		}
		confCheckBatches(t, b, i, head, r.batches)
		changes := confChanges(r.batches, topics...)
		confCheckFollowed(t, i, changes, topics)
		seen[i] = confDescribe(changes)
	}
	if !slices.Equal(seen[0], seen[1]) {
		t.Errorf("two followers disagree:\n%s\n--\n%s", strings.Join(seen[0], "\n"), strings.Join(seen[1], "\n"))
	}
}

// confCheckBatches checks follower i's batches, read from head: positions
// increase and are valid, changes have a time, and each checkpoint is at
// or after its batch's last change.
func confCheckBatches(t *testing.T, b store.Backend, i int, head string, batches []store.Batch) {
	t.Helper()
	prev := head
	for _, bt := range batches {
		for _, c := range bt.Changes {
			if c.Pos <= prev {
				t.Errorf("Follow %d: position %s does not come after %s", i, c.Pos, prev)
			}
			if err := b.CheckPosition(c.Pos); err != nil {
				t.Errorf("Follow %d: CheckPosition(%s): %v", i, c.Pos, err)
			}
			if c.Time.IsZero() {
				t.Errorf("Follow %d: change %s has no time", i, c.Pos)
			}
			prev = c.Pos
		}
		if bt.Checkpoint < prev {
			t.Errorf("Follow %d: checkpoint %s before the batch's last change %s", i, bt.Checkpoint, prev)
		}
		prev = max(prev, bt.Checkpoint)
	}
}

// confCheckFollowed checks that follower i saw the writes of
// confFollowOrder on topics, in order.
func confCheckFollowed(t *testing.T, i int, changes []store.Change, topics []string) {
	t.Helper()
	var got []string
	for _, c := range changes {
		switch {
		case c.Order != nil:
			got = append(got, fmt.Sprintf("%s %s v%d %s", c.Topic, c.Op, c.Order.Version, c.Order.Status))
		case c.Message != nil:
			got = append(got, fmt.Sprintf("%s %s %s", c.Topic, c.Op, c.Message.Text))
		}
	}
	// The order was created before Head, so its insert is not here.
	want := []string{
		topics[0] + " " + store.OpReplace + " v2 preparing",
		topics[1] + " insert hello",
		topics[0] + " " + store.OpReplace + " v3 cancelled",
		topics[1] + " insert end",
	}
	if len(got) != len(want) {
		t.Fatalf("Follow %d: got\n%s\nwant\n%s", i, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for j := range want {
		// Backends may name an order's status change update or replace.
		if strings.Replace(got[j], " "+store.OpUpdate+" ", " "+store.OpReplace+" ", 1) != want[j] {
			t.Errorf("Follow %d change %d: got %q, want %q", i, j, got[j], want[j])
		}
	}
}

func confResume(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	head, topics, changes := confHistory(t, b)
	want := confDescribe(changes)
	positions := append([]string{head}, func() (ps []string) {
		for _, c := range changes {
			ps = append(ps, c.Pos)
		}
		return ps
	}()...)
	last := positions[len(positions)-1]
	for i, after := range positions[:len(positions)-1] {
		batches := confFollow(t, b, after, func(c store.Change) bool { return c.Pos >= last })
		if got := confDescribe(confChanges(batches, topics...)); !slices.Equal(got, want[i:]) {
			t.Errorf("Follow from position %d: got\n%s\nwant\n%s", i, strings.Join(got, "\n"), strings.Join(want[i:], "\n"))
		}
		for j := i + 1; j < len(positions); j++ {
			got := confDescribe(confCatchUp(t, b, topics, after, positions[j]))
			if !slices.Equal(got, want[i:j]) {
				t.Errorf("CatchUp(%d, %d): got\n%s\nwant\n%s", i, j, strings.Join(got, "\n"), strings.Join(want[i:j], "\n"))
			}
		}
		// One topic only.
		var room []string
		for _, c := range changes[i:] {
			if c.Topic == topics[1] {
				room = append(room, confDescribe([]store.Change{c})...)
			}
		}
		if got := confDescribe(confCatchUp(t, b, topics[1:], after, last)); !slices.Equal(got, room) {
			t.Errorf("CatchUp(room only, %d): got %v, want %v", i, got, room)
		}
	}
	// A topic without changes finishes too.
	if got := confCatchUp(t, b, []string{store.RoomTopic(confRoom())}, head, last); len(got) != 0 {
		t.Errorf("CatchUp of a quiet room: got %v, want nothing", confDescribe(got))
	}
	if got := confCatchUp(t, b, topics, last, head); len(got) != 0 {
		t.Errorf("CatchUp with until before after: got %v, want nothing", confDescribe(got))
	}
}

func confSnapshotFollow(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	ctx := context.Background()
	room := confRoom()
	o := confCreateOrder(t, b)
	topics := []string{store.OrderTopic(o.ID), store.RoomTopic(room), store.OrderTopic("0123456789abcdef01234567")}

	// Some writes come before the snapshot; the rest run while it is
	// taken, so that they may land on either side of its position.
	statuses := []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered}
	const before, posts = 5, 20
	for i := 0; i < before; i++ {
		confPost(t, b, room, fmt.Sprintf("m%d", i))
	}
	confUpdate(t, b, o.ID, statuses[0])
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := before; i <= posts; i++ {
			if _, err := b.PostMessage(ctx, room, "bob", fmt.Sprintf("m%d", i)); err != nil {
				t.Errorf("PostMessage: %v", err)
				return
			}
			if j := i - before + 1; j < len(statuses) {
				if _, err := b.UpdateOrderStatus(ctx, o.ID, statuses[j], 0); err != nil {
					t.Errorf("UpdateOrderStatus: %v", err)
					return
				}
			}
		}
	}()
	snaps, pos, err := b.Snapshot(ctx, topics)
	<-writerDone
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if err := b.CheckPosition(pos); err != nil {
		t.Fatalf("CheckPosition(snapshot position): %v", err)
	}
	if len(snaps) != 3 || snaps[0].Topic != topics[0] || snaps[1].Topic != topics[1] || snaps[2].Topic != topics[2] {
		t.Fatalf("Snapshot topics: got %+v, want one per topic in order", snaps)
	}
	if snaps[2].Order != nil {
		t.Errorf("snapshot of a missing order: got %+v, want nil", snaps[2].Order)
	}
	if snaps[0].Order == nil {
		t.Fatalf("snapshot of order %s: nil", o.ID)
	}
	end := confPost(t, b, confRoom(), "end")
	batches := confFollow(t, b, pos, func(c store.Change) bool { return c.Message != nil && c.Message.ID == end.ID })

	// The order: the snapshot's version, then every later version once.
	v := snaps[0].Order.Version
	for _, c := range confChanges(batches, topics[0]) {
		if c.Order.Version != v+1 {
			t.Errorf("order change after the snapshot: got version %d, want %d (snapshot had %d)", c.Order.Version, v+1, snaps[0].Order.Version)
		}
		v = c.Order.Version
	}
	if want := int64(1 + len(statuses)); v != want {
		t.Errorf("order version after snapshot and follow: got %d, want %d", v, want)
	}
	// The room: snapshot messages then followed ones, each message once.
	var texts []string
	for _, m := range snaps[1].Messages {
		texts = append(texts, m.Text)
	}
	for _, c := range confChanges(batches, topics[1]) {
		texts = append(texts, c.Message.Text)
	}
	var want []string
	for i := 0; i <= posts; i++ {
		want = append(want, fmt.Sprintf("m%d", i))
	}
	if !slices.Equal(texts, want) {
		t.Errorf("room messages from snapshot then follow:\n got %v\nwant %v", texts, want)
	}
	t.Logf("snapshot held order version %d and %d of %d messages", snaps[0].Order.Version, len(snaps[1].Messages), posts+1)
}

func confGarbagePosition(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	ctx := context.Background()
	head, err := b.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	topics := []string{store.RoomTopic(confRoom())}
	for _, pos := range []string{"", "garbage", "not a position\n", strings.Repeat("8", 600), "\x00"} {
		if err := b.CheckPosition(pos); !errors.Is(err, store.ErrInvalidPosition) {
			t.Errorf("CheckPosition(%.20q): got %v, want ErrInvalidPosition", pos, err)
		}
		called := false
		err := b.Follow(ctx, pos, func(store.Batch) error { called = true; return errors.New("followed") })
		if !errors.Is(err, store.ErrInvalidPosition) || called {
			t.Errorf("Follow(%.20q): got %v (fn called %v), want ErrInvalidPosition", pos, err, called)
		}
		if err := b.CatchUp(ctx, topics, pos, head, func(store.Change) error { return nil }); !errors.Is(err, store.ErrInvalidPosition) {
			t.Errorf("CatchUp(%.20q): got %v, want ErrInvalidPosition", pos, err)
		}
	}
}

func confHistoryLost(t *testing.T, h Harness) {
	b, lost := h.LoseHistory(t)
	ctx, cancel := context.WithTimeout(context.Background(), Wait)
	defer cancel()
	if err := b.CheckPosition(lost); err != nil {
		t.Errorf("CheckPosition of a lost position: got %v, want nil (it only checks the shape)", err)
	}
	err := b.Follow(ctx, lost, func(bt store.Batch) error { return errors.New("followed a lost position") })
	if !errors.Is(err, store.ErrHistoryLost) {
		t.Errorf("Follow(lost): got %v, want ErrHistoryLost", err)
	}
	head, err := b.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	err = b.CatchUp(ctx, []string{store.RoomTopic(confRoom())}, lost, head, func(store.Change) error { return nil })
	if !errors.Is(err, store.ErrHistoryLost) {
		t.Errorf("CatchUp(lost): got %v, want ErrHistoryLost", err)
	}
}

func confRestart(t *testing.T, h Harness) {
	open := h.Storage(t)
	b := open(t)
	head, topics, changes := confHistory(t, b)
	want := confDescribe(changes)
	last := changes[len(changes)-1].Pos
	_, id, _ := store.ParseTopic(topics[0])
	before, err := b.GetOrder(context.Background(), id)
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	b = open(t)
	after, err := b.GetOrder(context.Background(), id)
	if err != nil {
		t.Fatalf("GetOrder after reopening: %v", err)
	}
	confSameOrder(t, "order after reopening", after, before)
	for _, p := range []string{head, changes[2].Pos, last} {
		if err := b.CheckPosition(p); err != nil {
			t.Errorf("CheckPosition(%s) after reopening: %v", p, err)
		}
	}
	batches := confFollow(t, b, head, func(c store.Change) bool { return c.Pos >= last })
	if got := confDescribe(confChanges(batches, topics...)); !slices.Equal(got, want) {
		t.Errorf("Follow after reopening: got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := confDescribe(confCatchUp(t, b, topics, changes[2].Pos, last)); !slices.Equal(got, want[3:]) {
		t.Errorf("CatchUp after reopening: got %v, want %v", got, want[3:])
	}
	newHead, err := b.Head(context.Background())
	if err != nil {
		t.Fatalf("Head after reopening: %v", err)
	}
	if newHead < last {
		t.Errorf("Head after reopening %s is before the last change %s", newHead, last)
	}
	m := confPost(t, b, topics[1][len(store.RoomTopicPrefix):], "after restart")
	batches = confFollow(t, b, last, func(c store.Change) bool { return c.Message != nil && c.Message.ID == m.ID })
	got := confChanges(batches, topics[1])
	if len(got) != 1 || got[0].Pos <= last {
		t.Errorf("a write after reopening: got %v, want one change after %s", confDescribe(got), last)
	}
}

func confCloseStopsFollow(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	head, err := b.Head(context.Background())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		first := true
		done <- b.Follow(context.Background(), head, func(store.Batch) error {
			if first {
				first = false
				close(ready)
			}
			return nil
		})
	}()
	confAwait(t, ready, "Follow's first batch")
	if err := b.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("Follow after Close: got %v, want ErrClosed", err)
		}
	case <-time.After(Wait):
		t.Fatal("Follow still running after Close returned")
	}
}
