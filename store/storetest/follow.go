package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"changecast/store"
)

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
			if b.ComparePositions(c.Pos, prev) <= 0 {
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
		if b.ComparePositions(bt.Checkpoint, prev) < 0 {
			t.Errorf("Follow %d: checkpoint %s before the batch's last change %s", i, bt.Checkpoint, prev)
		} else {
			prev = bt.Checkpoint
		}
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
		batches := confFollow(t, b, after, func(c store.Change) bool { return b.ComparePositions(c.Pos, last) >= 0 })
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
