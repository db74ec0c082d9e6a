package bolt

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"changecast/store"
)

// format1 is what writeFormat1 wrote: the orders as they stand, newest
// first, and the changes of the log in order.
type format1 struct {
	orders  []store.Order
	changes int
	pos     uint64 // head of the log
}

// statusPaths are the status sequences an order may go through.
var statusPaths = [][]string{
	{store.StatusPlaced},
	{store.StatusPlaced, store.StatusPreparing},
	{store.StatusPlaced, store.StatusPreparing, store.StatusOutForDelivery},
	{store.StatusPlaced, store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered},
	{store.StatusPlaced, store.StatusCancelled},
	{store.StatusPlaced, store.StatusPreparing, store.StatusCancelled},
}

// writeFormat1 writes, with bbolt alone, a store file at path in format
// 1 as changecast wrote it before the order lists (up to commit
// ffd1394's parent): the buckets meta, log, topics, orders and rooms;
// log records without list topics, indexed under their own topic only;
// no order indexes; the format key 1. It holds n orders of customers
// cust-0..cust-3, each taken along a random status path with a change
// per status, the oldest quarter without a history (written before
// histories were kept), and a message per order.
func writeFormat1(tb testing.TB, path string, r *rand.Rand, n int) format1 {
	tb.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	var out format1
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	err = db.Update(func(tx *bbolt.Tx) error {
		b := map[string]*bbolt.Bucket{}
		for _, name := range []string{"meta", "log", "topics", "orders", "rooms"} {
			bk, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			b[name] = bk
		}
		var seq uint64
		logChange := func(topic, op string, o *store.Order, m *store.Message, at time.Time) error {
			seq++
			fields := map[string]any{"topic": topic, "op": op, "time": at}
			if o != nil {
				fields["order"] = o
			} else {
				fields["message"] = m
			}
			rec, err := json.Marshal(fields)
			if err != nil {
				return err
			}
			if err := b["log"].Put(seqKey(seq), rec); err != nil {
				return err
			}
			out.changes++
			return b["topics"].Put(topicKey(topic, seq), []byte{})
		}
		for i := range n {
			at := start.Add(time.Duration(i) * time.Minute)
			o := store.Order{
				ID:        fmt.Sprintf("%08x%016x", uint32(at.Unix()), seq+1),
				Customer:  fmt.Sprintf("cust-%d", r.IntN(4)),
				Items:     []store.Item{{SKU: strings.Repeat("s", 1+r.IntN(store.MaxNameLen)), Qty: 1 + r.IntN(store.MaxQty)}},
				Status:    store.StatusPlaced,
				Version:   1,
				History:   store.NewHistory(at),
				CreatedAt: at,
				UpdatedAt: at,
			}
			old := i < n/4
			if old {
				o.History = []store.StatusChange{}
			}
			if err := logChange(store.OrderTopic(o.ID), store.OpInsert, &o, nil, at); err != nil {
				return err
			}
			for _, status := range statusPaths[r.IntN(len(statusPaths))][1:] {
				at = at.Add(time.Second)
				o.Status, o.Version, o.UpdatedAt = status, o.Version+1, at
				if !old {
					o.History = store.AppendHistory(o.History, status, at)
				}
				if err := logChange(store.OrderTopic(o.ID), store.OpUpdate, &o, nil, at); err != nil {
					return err
				}
			}
			v, err := json.Marshal(o)
			if err != nil {
				return err
			}
			if old {
				// As written before histories were kept: no history key.
				var fields map[string]any
				json.Unmarshal(v, &fields)
				delete(fields, "history")
				v, _ = json.Marshal(fields)
			}
			if err := b["orders"].Put([]byte(o.ID), v); err != nil {
				return err
			}
			out.orders = append(out.orders, o)
			m := store.Message{ID: fmt.Sprintf("%08x%016x", uint32(at.Unix()), seq+1), Room: "lobby", Author: o.Customer, Text: "order " + o.ID, CreatedAt: at}
			mv, err := json.Marshal(m)
			if err != nil {
				return err
			}
			if err := b["rooms"].Put(messageKey(m.Room, m.ID), mv); err != nil {
				return err
			}
			if err := logChange(store.RoomTopic(m.Room), store.OpInsert, nil, &m, at); err != nil {
				return err
			}
		}
		out.pos = seq
		meta := b["meta"]
		for k, v := range map[string][]byte{
			"format":     seqKey(1),
			"deployment": []byte("0a1b2c3d"),
			"seq":        seqKey(seq),
			"clock":      seqKey(uint64(start.Add(time.Duration(n) * time.Minute).Unix())),
		} {
			if err := meta.Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	slices.Reverse(out.orders) // newest first, as ListOrders answers
	return out
}

// TestMigrateFormat1 opens a real format 1 file (written by hand with
// bbolt as changecast wrote it then) and checks that the migration keeps
// every order and fills the order lists: ListOrders answers, for every
// filter, exactly the orders the file held before; the list topics catch
// up on the old changes; the format is 2; and new orders join the lists.
func TestMigrateFormat1(t *testing.T) {
	dir := t.TempDir()
	before := writeFormat1(t, filepath.Join(dir, fileName), rand.New(rand.NewPCG(1, 2)), 120)
	b := testOpen(t, dir, Options{}, nil)

	queries := []store.OrderQuery{{}, {Active: true}}
	for c := range 4 {
		queries = append(queries, store.OrderQuery{Customer: fmt.Sprintf("cust-%d", c)}, store.OrderQuery{Customer: fmt.Sprintf("cust-%d", c), Active: true})
	}
	active := 0
	for _, q := range queries {
		var want []store.Order
		for _, o := range before.orders {
			if (!q.Active || store.Active(o.Status)) && (q.Customer == "" || q.Customer == o.Customer) {
				want = append(want, o)
			}
		}
		if q == (store.OrderQuery{Active: true}) {
			active = len(want)
		}
		got := listAllOrders(t, b, q)
		if !equalJSON(t, got, want) {
			t.Errorf("ListOrders(%+v) after the migration: %d orders, want %d (the file's, newest first)", q, len(got), len(want))
		}
	}
	if active == 0 || active == len(before.orders) {
		t.Fatalf("%d of %d orders active: the test needs both kinds", active, len(before.orders))
	}

	// The list topics catch up on the changes logged before them.
	changes, err := catchUp(t, b, []string{store.OrderListTopic}, b.pos(0), mustHead(t, b))
	if err != nil {
		t.Fatal(err)
	}
	orderChanges := 0
	for _, ch := range wholeLog(t, b) {
		if ch.Order != nil {
			orderChanges++
		}
	}
	if len(changes) != orderChanges || orderChanges == 0 {
		t.Errorf("catch-up on %s: %d changes, want every order change of the log (%d)", store.OrderListTopic, len(changes), orderChanges)
	}
	var format []byte
	b.db.View(func(tx *bbolt.Tx) error {
		format = tx.Bucket(metaBucket).Get(keyFormat)
		return nil
	})
	if decodeUint(format) != formatVersion {
		t.Errorf("format after the migration: %d, want %d", decodeUint(format), formatVersion)
	}

	o := mustOrder(t, b, "cust-0")
	if got := listAllOrders(t, b, store.OrderQuery{Active: true}); len(got) != active+1 || got[0].ID != o.ID {
		t.Errorf("a new order is not first among the active orders")
	}
}

// listAllOrders pages through every order q selects, newest first.
func listAllOrders(tb testing.TB, b *Store, q store.OrderQuery) []store.Order {
	tb.Helper()
	out := []store.Order{}
	q.Limit = 7 // several pages
	for {
		page, err := b.ListOrders(context.Background(), q)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, page...)
		if len(page) < q.Limit {
			return out
		}
		q.Before = page[len(page)-1].ID
	}
}
