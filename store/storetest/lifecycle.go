package storetest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"changecast/store"
)

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
	batches := confFollow(t, b, head, func(c store.Change) bool { return b.ComparePositions(c.Pos, last) >= 0 })
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
	if b.ComparePositions(newHead, last) < 0 {
		t.Errorf("Head after reopening %s is before the last change %s", newHead, last)
	}
	m := confPost(t, b, topics[1][len(store.RoomTopicPrefix):], "after restart")
	batches = confFollow(t, b, last, func(c store.Change) bool { return c.Message != nil && c.Message.ID == m.ID })
	got := confChanges(batches, topics[1])
	if len(got) != 1 || b.ComparePositions(got[0].Pos, last) <= 0 {
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
