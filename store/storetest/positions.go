package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"changecast/store"
)

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
