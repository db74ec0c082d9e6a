package streamsource

import (
	"encoding/json"
	"errors"
	"testing"

	"changecast/store"
	"changecast/store/bolt"
	"changecast/stream"
)

// openSource opens an embedded store in a temporary directory and returns
// it with its Source.
func openSource(t *testing.T) (*bolt.Store, stream.Source) {
	t.Helper()
	b, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatalf("bolt.Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, New(b)
}

// TestEncoding checks the event names and payloads of a change and of the
// snapshots of an order and a room, as the API names them.
func TestEncoding(t *testing.T) {
	b, src := openSource(t)
	ctx := t.Context()
	start, err := src.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	o, err := b.CreateOrder(ctx, "ann", []store.Item{{SKU: "pizza", Qty: 1}})
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	if _, err := b.PostMessage(ctx, "lobby", "bob", "hi"); err != nil {
		t.Fatalf("PostMessage: %v", err)
	}
	head, err := src.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	orderTopic, roomTopic := store.OrderTopic(o.ID), store.RoomTopic("lobby")
	var events []stream.Event
	err = src.CatchUp(ctx, []string{orderTopic, roomTopic}, start, head, func(ev stream.Event) error {
		events = append(events, ev)
		return nil
	})
	if err != nil {
		t.Fatalf("CatchUp: %v", err)
	}
	snaps, pos, err := src.Snapshot(ctx, []string{orderTopic, store.RoomTopic("empty")})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if pos != head {
		t.Errorf("Snapshot position = %s, want the head %s", pos, head)
	}
	events = append(events, snaps...)

	want := []struct {
		name  string // the contract's event name, not the constant under test
		topic string
		keys  []string
	}{
		{"order", orderTopic, []string{"topic", "op", "order"}},
		{"message", roomTopic, []string{"topic", "op", "message"}},
		{"snapshot", orderTopic, []string{"topic", "order"}},
		{"snapshot", store.RoomTopic("empty"), []string{"topic", "messages"}},
	}
	if len(events) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(events), len(want), events)
	}
	for i, w := range want {
		ev := events[i]
		var payload map[string]json.RawMessage
		if err := json.Unmarshal(ev.Data, &payload); err != nil {
			t.Fatalf("event %d: payload %s: %v", i, ev.Data, err)
		}
		if string(ev.Name) != w.name || ev.Topic != w.topic || len(payload) != len(w.keys) {
			t.Errorf("event %d: got %s on %s with %s, want %s on %s with keys %v", i, ev.Name, ev.Topic, ev.Data, w.name, w.topic, w.keys)
		}
		for _, k := range w.keys {
			if _, ok := payload[k]; !ok {
				t.Errorf("event %d (%s): payload %s has no %q", i, ev.Name, ev.Data, k)
			}
		}
	}
	// An empty room's snapshot holds an empty list, not null.
	if got := string(snaps[1].Data); got != `{"topic":"rooms/empty","messages":[]}` {
		t.Errorf("empty room snapshot = %s, want an empty messages list", got)
	}
}

// TestPositionErrors checks that the store's position errors come out as
// the stream's, with the store's still in the chain.
func TestPositionErrors(t *testing.T) {
	_, src := openSource(t)
	err := src.CheckPosition("garbage")
	if !errors.Is(err, stream.ErrInvalidPosition) || !errors.Is(err, store.ErrInvalidPosition) {
		t.Errorf("CheckPosition(garbage) = %v, want stream.ErrInvalidPosition wrapping store.ErrInvalidPosition", err)
	}
	err = src.CatchUp(t.Context(), []string{store.RoomTopic("lobby")}, "garbage", "garbage", func(stream.Event) error { return nil })
	if !errors.Is(err, stream.ErrInvalidPosition) {
		t.Errorf("CatchUp from garbage = %v, want stream.ErrInvalidPosition", err)
	}
}
