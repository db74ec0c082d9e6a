package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"changecast/store"
)

// Sizes of confSnapshotMatchesLog: enough orders and updates that many
// commits happen while the snapshots are taken, so that a write whose
// state and change commit apart is seen between the two.
const (
	snapOrders      = 16
	snapPosts       = 60
	snapTakers      = 2
	snapMaxSnapshot = 4000 // snapshots kept for checking; the takers stop there
	// snapMaxLarge bounds the snapshots kept with the largest records,
	// each about 1 MiB (50 messages of 16 KB, 16 orders of 100 items).
	snapMaxLarge = 64
)

// snapTaken is one snapshot and its position.
type snapTaken struct {
	snaps []store.Snapshot
	pos   string
}

// confSnapshotMatchesLog takes snapshots while orders are updated and
// messages posted concurrently, and checks each against the log: the
// contract says a snapshot reflects every change up to its position and
// none after it, so replaying the log (CatchUp from before the first
// write) up to the snapshot's position must give the snapshot's state. An
// order's version is 1 plus its updates, so it must equal the number of
// its changes in that replay. A write whose state and change commit in
// two transactions shows up as a snapshot between them.
func confSnapshotMatchesLog(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	ctx := context.Background()
	start, err := b.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	room := confRoom()
	topics := []string{store.RoomTopic(room)}
	keep := snapMaxSnapshot
	if h.large {
		keep = snapMaxLarge
	}
	var orders []store.Order
	for range snapOrders {
		o := confCreateOrder(t, b)
		orders = append(orders, o)
		topics = append(topics, store.OrderTopic(o.ID))
	}

	var (
		takes    = make(chan snapTaken, keep)
		first    = make(chan struct{}) // the writers start after the first snapshot
		stop     = make(chan struct{}) // the writers are done
		takers   sync.WaitGroup
		writers  sync.WaitGroup
		onceDone sync.Once
	)
	for range snapTakers {
		takers.Go(func() {
			defer onceDone.Do(func() { close(first) })
			for {
				snaps, pos, err := b.Snapshot(ctx, topics)
				if err != nil {
					t.Errorf("Snapshot: %v", err)
					return
				}
				select {
				case takes <- snapTaken{snaps, pos}:
				default:
					return // enough to check
				}
				onceDone.Do(func() { close(first) })
				select {
				case <-stop:
					return
				default:
				}
			}
		})
	}
	<-first
	statuses := []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered}
	for _, o := range orders {
		writers.Go(func() {
			for i, st := range statuses {
				// Check-and-set on the version it must have: each update
				// is the order's next one.
				if _, err := b.UpdateOrderStatus(ctx, o.ID, st, int64(1+i)); err != nil {
					t.Errorf("UpdateOrderStatus(%s, %s, %d): %v", o.ID, st, 1+i, err)
					return
				}
			}
		})
	}
	writers.Go(func() {
		for i := range snapPosts {
			if _, err := b.PostMessage(ctx, room, "bob", fmt.Sprintf("m%d", i)); err != nil {
				t.Errorf("PostMessage: %v", err)
				return
			}
		}
	})
	writers.Wait()
	close(stop)
	takers.Wait()
	close(takes)
	if t.Failed() {
		t.FailNow()
	}
	// One more, after every write: it must hold the final state.
	final, finalPos, err := b.Snapshot(ctx, topics)
	if err != nil {
		t.Fatalf("Snapshot after the writes: %v", err)
	}

	replays := map[string][]store.Change{} // by position: CatchUp from start to it
	replay := func(pos string) []store.Change {
		if cs, ok := replays[pos]; ok {
			return cs
		}
		cs := confCatchUp(t, b, topics, start, pos)
		replays[pos] = cs
		return cs
	}
	check := func(what string, tk snapTaken) {
		t.Helper()
		if len(tk.snaps) != len(topics) {
			t.Fatalf("%s at %s: %d topics, want %d", what, tk.pos, len(tk.snaps), len(topics))
		}
		log := replay(tk.pos)
		for i, topic := range topics {
			s := tk.snaps[i]
			if s.Topic != topic {
				t.Fatalf("%s at %s: topic %d is %s, want %s", what, tk.pos, i, s.Topic, topic)
			}
			var changes []store.Change
			for _, c := range log {
				if c.Topic == topic {
					changes = append(changes, c)
				}
			}
			if i == 0 {
				var want []string
				for _, c := range changes {
					want = append(want, c.Message.ID+" "+c.Message.Text)
				}
				want = want[max(0, len(want)-store.SnapshotMessages):]
				var got []string
				for _, m := range s.Messages {
					got = append(got, m.ID+" "+m.Text)
				}
				if !slices.Equal(got, want) {
					t.Fatalf("%s at %s: room holds\n%v\nthe log up to that position gives\n%v", what, tk.pos, got, want)
				}
				continue
			}
			if len(changes) == 0 || s.Order == nil {
				t.Fatalf("%s at %s: order %s is %+v with %d changes in the log; the order was created before", what, tk.pos, topic, s.Order, len(changes))
			}
			if s.Order.Version != int64(len(changes)) {
				t.Fatalf("%s at %s: order %s has version %d (status %s), but the log up to that position holds %d of its changes:\n%v",
					what, tk.pos, topic, s.Order.Version, s.Order.Status, len(changes), confDescribe(changes))
			}
			confSameOrder(t, fmt.Sprintf("%s at %s: order %s against its last change", what, tk.pos, topic), *s.Order, *changes[len(changes)-1].Order)
		}
	}

	n := 0
	for tk := range takes {
		check("snapshot", tk)
		n++
	}
	check("final snapshot", snapTaken{final, finalPos})
	for i, s := range final[1:] {
		if s.Order.Status != store.StatusDelivered || s.Order.Version != int64(1+len(statuses)) {
			t.Errorf("final snapshot: order %s is %s version %d, want %s version %d", orders[i].ID, s.Order.Status, s.Order.Version, store.StatusDelivered, 1+len(statuses))
		}
	}
	if got := len(final[0].Messages); got != min(snapPosts, store.SnapshotMessages) {
		t.Errorf("final snapshot: room holds %d messages, want %d", got, min(snapPosts, store.SnapshotMessages))
	}
	// The first snapshot was taken before any update: the check above
	// compared at least that one and the final one, and more in between.
	if n == 0 || len(replays) < 2 {
		t.Fatalf("checked %d snapshots at %d positions; want some before the writes and the final one", n, len(replays))
	}
	t.Logf("checked %d snapshots at %d positions against the log", n+1, len(replays))
}
