package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"changecast/store"
)

// confOrderHistory moves an order through placed → preparing →
// out_for_delivery → delivered and checks the contract's history: every
// status reached, in order, each at the time of its step (createdAt for
// placed, the step's updatedAt after), appended in the same write as the
// change, so each change's order carries the history as of that change
// and a snapshot carries all of it.
func confOrderHistory(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	ctx := context.Background()
	head, err := b.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	o := confCreateOrder(t, b)
	// want[i] is the history after the order's i-th change (version i+1).
	want := [][]store.StatusChange{{{Status: store.StatusPlaced, At: o.CreatedAt}}}
	confSameHistory(t, "CreateOrder", o.History, want[0])
	steps := []store.Order{o}
	for _, st := range []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered} {
		u := confUpdate(t, b, o.ID, st)
		prev := want[len(want)-1]
		next := append(slices.Clip(prev), store.StatusChange{Status: st, At: u.UpdatedAt})
		want = append(want, next)
		confSameHistory(t, "UpdateOrderStatus to "+st, u.History, next)
		steps = append(steps, u)
	}
	full := want[len(want)-1]
	for i := 1; i < len(full); i++ {
		if full[i].At.Before(full[i-1].At) {
			t.Errorf("history: %s at %v is before %s at %v", full[i].Status, full[i].At, full[i-1].Status, full[i-1].At)
		}
	}
	if _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPlaced, 0); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("delivered to placed: got %v, want ErrConflict", err)
	}

	got, err := b.GetOrder(ctx, o.ID)
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	confSameHistory(t, "GetOrder after the last step and a refused one", got.History, full)
	confHistoryJSON(t, got, full)

	snaps, _, err := b.Snapshot(ctx, []string{store.OrderTopic(o.ID)})
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if len(snaps) != 1 || snaps[0].Order == nil {
		t.Fatalf("Snapshot: got %+v, want the order", snaps)
	}
	confSameHistory(t, "Snapshot", snaps[0].Order.History, full)
	confHistoryJSON(t, *snaps[0].Order, full)

	// The change events: each order as of its change carries the history
	// as of that change, whether followed live or caught up later.
	topic := store.OrderTopic(o.ID)
	last := int64(len(steps))
	batches := confFollow(t, b, head, func(c store.Change) bool {
		return c.Topic == topic && c.Order != nil && c.Order.Version == last
	})
	followed := confChanges(batches, topic)
	var until string
	for _, bt := range batches {
		until = bt.Checkpoint
	}
	caught := confCatchUp(t, b, []string{topic}, head, until)
	for what, cs := range map[string][]store.Change{"Follow": followed, "CatchUp": caught} {
		if len(cs) != len(steps) {
			t.Errorf("%s: %d changes of the order, want %d:\n%s", what, len(cs), len(steps), strings.Join(confDescribe(cs), "\n"))
			continue
		}
		for i, c := range cs {
			if c.Order == nil {
				t.Errorf("%s: change %d has no order", what, i)
				continue
			}
			confSameOrder(t, fmt.Sprintf("%s: change %d", what, i), *c.Order, steps[i])
			confSameHistory(t, fmt.Sprintf("%s: change %d (%s)", what, i, c.Order.Status), c.Order.History, want[i])
		}
	}
}

// confSameHistory checks a history entry by entry; times compare as
// instants.
func confSameHistory(tb testing.TB, what string, got, want []store.StatusChange) {
	tb.Helper()
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		same = got[i].Status == want[i].Status && got[i].At.Equal(want[i].At)
	}
	if !same {
		tb.Errorf("%s: history\n%v\nwant\n%v", what, got, want)
	}
}

// confHistoryJSON checks o's JSON as the contract names it: "history" is
// a list of {"status","at"}, at an RFC 3339 timestamp.
func confHistoryJSON(tb testing.TB, o store.Order, want []store.StatusChange) {
	tb.Helper()
	data, err := json.Marshal(o)
	if err != nil {
		tb.Fatalf("encode order: %v", err)
	}
	var doc struct {
		History []map[string]any `json:"history"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		tb.Fatalf("decode order %s: %v", data, err)
	}
	if len(doc.History) != len(want) {
		tb.Fatalf("order JSON %s: %d history entries, want %d", data, len(doc.History), len(want))
	}
	for i, e := range doc.History {
		if keys := slices.Sorted(maps.Keys(e)); !slices.Equal(keys, []string{"at", "status"}) {
			tb.Errorf("order JSON history[%d] has keys %v, want at and status", i, keys)
		}
		at, _ := e["at"].(string)
		ts, err := time.Parse(time.RFC3339, at)
		if err != nil || !ts.Equal(want[i].At) || e["status"] != want[i].Status {
			tb.Errorf("order JSON history[%d] = %v, want status %s at %s (RFC 3339)", i, e, want[i].Status, want[i].At.Format(time.RFC3339Nano))
		}
	}
}
