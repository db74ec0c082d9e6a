package bolt

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"go.etcd.io/bbolt"

	"changecast/store"
)

// stripHistory rewrites every stored order and every logged order change
// without "history", as they were written before histories were kept.
func stripHistory(tb testing.TB, b *Store) {
	tb.Helper()
	strip := func(v []byte, path ...string) ([]byte, error) {
		var doc map[string]any
		if err := json.Unmarshal(v, &doc); err != nil {
			return nil, err
		}
		m := doc
		for _, p := range path {
			inner, ok := m[p].(map[string]any)
			if !ok {
				return v, nil // a message change: nothing to strip
			}
			m = inner
		}
		delete(m, "history")
		return json.Marshal(doc)
	}
	err := b.db.Update(func(tx *bbolt.Tx) error {
		for _, bk := range []struct {
			name []byte
			path []string
		}{{orderBucket, nil}, {logBucket, []string{"order"}}} {
			bucket := tx.Bucket(bk.name)
			type kv struct{ k, v []byte }
			var rewrites []kv
			if err := bucket.ForEach(func(k, v []byte) error {
				nv, err := strip(v, bk.path...)
				rewrites = append(rewrites, kv{append([]byte(nil), k...), nv})
				return err
			}); err != nil {
				return err
			}
			for _, r := range rewrites {
				if err := bucket.Put(r.k, r.v); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("strip history: %v", err)
	}
}

// TestOrderWithoutHistory: an order stored before histories were kept
// reads, snapshots and replays with an empty history, encoded as
// "history":[] (the contract says every order carries one), and its next
// change starts its history with that change alone: nothing is made up
// for the steps whose times were never kept.
func TestOrderWithoutHistory(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	ctx := context.Background()
	head := mustHead(t, b)
	o := mustOrder(t, b, "ann")
	if _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 0); err != nil {
		t.Fatalf("UpdateOrderStatus: %v", err)
	}
	stripHistory(t, b)

	emptyJSON := func(what string, o *store.Order) {
		t.Helper()
		if o == nil {
			t.Fatalf("%s: no order", what)
		}
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if o.History == nil || len(o.History) != 0 || !strings.Contains(string(data), `"history":[]`) {
			t.Errorf("%s: history %#v, JSON %s; want an empty history, \"history\":[]", what, o.History, data)
		}
	}
	got, err := b.GetOrder(ctx, o.ID)
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	emptyJSON("GetOrder", &got)
	snaps, _, err := b.Snapshot(ctx, []string{store.OrderTopic(o.ID)})
	if err != nil || len(snaps) != 1 {
		t.Fatalf("Snapshot: %v, %v", snaps, err)
	}
	emptyJSON("Snapshot", snaps[0].Order)
	changes, err := catchUp(t, b, []string{store.OrderTopic(o.ID)}, head, mustHead(t, b))
	if err != nil || len(changes) != 2 {
		t.Fatalf("CatchUp: %d changes, %v; want 2", len(changes), err)
	}
	for _, c := range changes {
		emptyJSON("CatchUp "+c.Op, c.Order)
	}

	u, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusOutForDelivery, 0)
	if err != nil {
		t.Fatalf("UpdateOrderStatus: %v", err)
	}
	got, err = b.GetOrder(ctx, o.ID)
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	for what, o := range map[string]store.Order{"UpdateOrderStatus": u, "GetOrder after it": got} {
		if len(o.History) != 1 || o.History[0].Status != store.StatusOutForDelivery || !o.History[0].At.Equal(u.UpdatedAt) {
			t.Errorf("%s: history %v, want only out_for_delivery at %v", what, o.History, u.UpdatedAt)
		}
	}
}

// TestAllowedIsNotStored: what store.Order's JSON derives for clients
// (allowed) is not written to the order or its log entries, after a
// create and after an update; the stored form keeps the order's own
// fields, and GetOrder's JSON has allowed.
func TestAllowedIsNotStored(t *testing.T) {
	b := testOpen(t, "", Options{}, nil)
	ctx := context.Background()
	check := func(what string, want int) {
		t.Helper()
		var stored []string
		err := b.db.View(func(tx *bbolt.Tx) error {
			for _, name := range [][]byte{orderBucket, logBucket} {
				if err := tx.Bucket(name).ForEach(func(_, v []byte) error {
					stored = append(stored, string(v))
					return nil
				}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(stored) != want {
			t.Fatalf("after %s: stored %d values, want the order and %d log entries: %q", what, len(stored), want-1, stored)
		}
		for _, v := range stored {
			if !strings.Contains(v, `"status":`) || strings.Contains(v, `"allowed"`) {
				t.Errorf("after %s: stored %s; want the order's fields without allowed", what, v)
			}
		}
	}
	o := mustOrder(t, b, "ann")
	check("CreateOrder", 2)
	if _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 0); err != nil {
		t.Fatalf("UpdateOrderStatus: %v", err)
	}
	check("UpdateOrderStatus", 3)
	got, err := b.GetOrder(ctx, o.ID)
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	data, _ := json.Marshal(got)
	if !strings.Contains(string(data), `"allowed":["out_for_delivery","cancelled"]`) {
		t.Errorf("GetOrder's JSON %s has no allowed moves", data)
	}
}
