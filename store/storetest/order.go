package storetest

import (
	"context"
	"testing"

	"changecast/store"
)

// StatusPaths gives, for every order status, the moves that take a new
// (placed) order there, in order.
func StatusPaths() map[string][]string {
	return map[string][]string{
		store.StatusPlaced:         nil,
		store.StatusPreparing:      {store.StatusPreparing},
		store.StatusOutForDelivery: {store.StatusPreparing, store.StatusOutForDelivery},
		store.StatusDelivered:      {store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered},
		store.StatusCancelled:      {store.StatusCancelled},
	}
}

// confPositionOrder: ComparePositions orders positions like the log:
// Head before the changes made after it, each change before the next,
// checkpoints at or after their batch's changes, a position equal to
// itself; and it is antisymmetric. Callers compare positions only
// through it (MongoDB's do not all order as strings).
func confPositionOrder(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	head, topics, changes := confHistory(t, b)
	if len(changes) < 2 {
		t.Fatalf("%d changes on %v, want several", len(changes), topics)
	}
	positions := []string{head}
	for _, c := range changes {
		positions = append(positions, c.Pos)
	}
	for i, a := range positions {
		for j, c := range positions {
			got := b.ComparePositions(a, c)
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if sign(got) != want {
				t.Errorf("ComparePositions(#%d %.40s, #%d %.40s) = %d, want the sign %d", i, a, j, c, got, want)
			}
		}
	}
	last := changes[len(changes)-1].Pos
	newHead, err := b.Head(context.Background())
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	if b.ComparePositions(newHead, last) < 0 {
		t.Errorf("Head %.40s after the writes comes before their last change %.40s", newHead, last)
	}
	for _, bt := range confFollow(t, b, head, func(c store.Change) bool { return c.Pos == last }) {
		for _, c := range bt.Changes {
			if b.ComparePositions(bt.Checkpoint, c.Pos) < 0 {
				t.Errorf("checkpoint %.40s before its batch's change %.40s", bt.Checkpoint, c.Pos)
			}
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
