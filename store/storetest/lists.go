package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"changecast/store"
)

var confCustomers atomic.Int64

// confCustomer returns a customer name no other case uses, named as
// identity providers name subjects (with `|` and `/`), so every list case
// round-trips such names.
func confCustomer() string { return fmt.Sprintf("auth0|list/%d", confCustomers.Add(1)) }

func confOrderFor(tb testing.TB, b store.Backend, customer string) store.Order {
	tb.Helper()
	o, err := b.CreateOrder(context.Background(), customer, []store.Item{{SKU: "soup", Qty: 1}})
	if err != nil {
		tb.Fatalf("CreateOrder(%s): %v", customer, err)
	}
	return o
}

// confListCatchUp writes order changes of two customers and a message and
// checks the list topics: Follow's order changes carry the lists
// "orders" and "customers/<customer>" (the contract's topic names, spelled
// out), and CatchUp on list topics, alone or mixed with order topics,
// gives each matching change once, in log order, from any position.
func confListCatchUp(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	ctx := context.Background()
	start, err := b.Head(ctx)
	if err != nil {
		t.Fatalf("Head: %v", err)
	}
	ann, bob, nobody := confCustomer(), confCustomer(), confCustomer()
	room := confRoom()
	a1 := confOrderFor(t, b, ann)
	b1 := confOrderFor(t, b, bob)
	confUpdate(t, b, a1.ID, store.StatusPreparing)
	confPost(t, b, room, "between")
	a2 := confOrderFor(t, b, ann)
	confUpdate(t, b, b1.ID, store.StatusPreparing)
	confUpdate(t, b, a2.ID, store.StatusCancelled)
	last := confUpdate(t, b, b1.ID, store.StatusOutForDelivery)
	batches := confFollow(t, b, start, func(c store.Change) bool {
		return c.Order != nil && c.Order.ID == last.ID && c.Order.Version == last.Version
	})
	all := confChanges(batches, store.OrderTopic(a1.ID), store.OrderTopic(b1.ID), store.OrderTopic(a2.ID), store.RoomTopic(room))
	// The writes above, in order: order, customer, version (0 = the message).
	type step struct {
		order    string
		customer string
		version  int64
	}
	steps := []step{{a1.ID, ann, 1}, {b1.ID, bob, 1}, {a1.ID, ann, 2}, {"", "", 0}, {a2.ID, ann, 1}, {b1.ID, bob, 2}, {a2.ID, ann, 2}, {b1.ID, bob, 3}}
	if len(all) != len(steps) {
		t.Fatalf("Follow saw %d changes, want %d:\n%s", len(all), len(steps), strings.Join(confDescribe(all), "\n"))
	}
	for i, s := range steps {
		c := all[i]
		if s.order == "" {
			if c.Message == nil || c.Lists != nil {
				t.Errorf("change %d: got %s lists %q, want the message with no lists", i, confDescribe(all[i:i+1]), c.Lists)
			}
			continue
		}
		want := []string{"orders", "customers/" + s.customer}
		if c.Order == nil || c.Order.ID != s.order || c.Order.Version != s.version || !slices.Equal(c.Lists, want) {
			t.Errorf("change %d: got %s lists %q, want order %s v%d lists %q", i, confDescribe(all[i:i+1]), c.Lists, s.order, s.version, want)
		}
	}
	until := all[len(all)-1].Pos
	// pick returns the changes of all whose index is in idx, as CatchUp
	// must give them.
	pick := func(idx ...int) []string {
		var out []store.Change
		for _, i := range idx {
			out = append(out, all[i])
		}
		return confDescribe(out)
	}
	for _, tc := range []struct {
		name   string
		after  string
		topics []string
		want   []string
	}{
		{"orders", start, []string{"orders"}, pick(0, 1, 2, 4, 5, 6, 7)},
		{"one customer", start, []string{"customers/" + ann}, pick(0, 2, 4, 6)},
		{"the other customer", start, []string{"customers/" + bob}, pick(1, 5, 7)},
		{"a customer without orders", start, []string{"customers/" + nobody}, nil},
		{"orders and one of them", start, []string{store.OrderTopic(a1.ID), "orders"}, pick(0, 1, 2, 4, 5, 6, 7)},
		{"orders, a customer, an order and the room", start, []string{"customers/" + ann, store.OrderTopic(a2.ID), "orders", store.RoomTopic(room)}, pick(0, 1, 2, 3, 4, 5, 6, 7)},
		{"a customer and its order", start, []string{store.OrderTopic(a2.ID), "customers/" + ann}, pick(0, 2, 4, 6)},
		{"a customer and another's order", start, []string{"customers/" + ann, store.OrderTopic(b1.ID)}, pick(0, 1, 2, 4, 5, 6, 7)},
		{"both customers", start, []string{"customers/" + bob, "customers/" + ann}, pick(0, 1, 2, 4, 5, 6, 7)},
		{"a customer from the middle", all[2].Pos, []string{"customers/" + ann}, pick(4, 6)},
		{"orders from the middle", all[3].Pos, []string{"orders", "customers/" + bob}, pick(4, 5, 6, 7)},
		{"orders to the middle", start, []string{"orders"}, nil}, // until = all[4].Pos, set below
	} {
		to := until
		if tc.name == "orders to the middle" {
			to, tc.want = all[4].Pos, pick(0, 1, 2, 4)
		}
		got := confDescribe(confCatchUp(t, b, tc.topics, tc.after, to))
		if !slices.Equal(got, tc.want) {
			t.Errorf("CatchUp %s %q: got\n%s\nwant\n%s", tc.name, tc.topics, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
		}
	}
	for _, bad := range []string{"customers/", "customers/a\x00b", "orders/", "order"} {
		err := b.CatchUp(ctx, []string{bad}, start, until, func(store.Change) error { return nil })
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("CatchUp on %q: got %v, want ErrInvalid", bad, err)
		}
	}
}

// Sizes of confOrderLists: more active orders than an orders snapshot
// holds, and more of one customer's than its snapshot holds.
const (
	listOrdersX = store.SnapshotActiveOrders + 5
	listPage    = 7
)

// confOrderLists checks the list topics' snapshots and ListOrders against
// orders written here: newest first, the orders snapshot the newest 200
// active orders, a customer's its 50 newest of any status, and ListOrders'
// filters, default and bounds of limit, and before cursor. The orders
// written here are the newest in the store, so the expectations about
// every customer's orders name only those.
func confOrderLists(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	ctx := context.Background()
	x, y, nobody := confCustomer(), confCustomer(), confCustomer()
	var created []store.Order // every order, oldest first, as it is now
	y1 := confOrderFor(t, b, y)
	created = append(created, y1)
	for range listOrdersX {
		created = append(created, confOrderFor(t, b, x))
	}
	y2 := confOrderFor(t, b, y)
	created = append(created, y2)
	set := func(i int, statuses ...string) {
		for _, s := range statuses {
			created[i] = confUpdate(t, b, created[i].ID, s)
		}
	}
	set(len(created)-2, store.StatusCancelled)                                                    // x's newest
	set(100, store.StatusPreparing, store.StatusCancelled)                                        // one in the middle
	set(len(created)-1, store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered) // y2
	set(len(created)-3, store.StatusPreparing, store.StatusOutForDelivery)                        // still active
	active := func(o store.Order) bool {
		return o.Status != "delivered" && o.Status != "cancelled"
	}
	// newest returns the newest n of the orders keep accepts, newest first.
	newest := func(n int, keep func(store.Order) bool) []string {
		var out []string
		for i := len(created) - 1; i >= 0 && len(out) < n; i-- {
			if keep(created[i]) {
				out = append(out, created[i].ID+" "+created[i].Status)
			}
		}
		return out
	}
	of := func(c string) func(store.Order) bool { return func(o store.Order) bool { return o.Customer == c } }
	any := func(store.Order) bool { return true }
	describe := func(os []store.Order) []string {
		out := []string{}
		for _, o := range os {
			out = append(out, o.ID+" "+o.Status)
		}
		return out
	}

	topics := []string{"orders", "customers/" + x, "customers/" + y, "customers/" + nobody}
	snaps, _, err := b.Snapshot(ctx, topics)
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	if len(snaps) != len(topics) {
		t.Fatalf("Snapshot gave %d snapshots, want %d", len(snaps), len(topics))
	}
	for i, want := range [][]string{
		newest(200, active),
		newest(50, of(x)),
		newest(50, of(y)),
		{},
	} {
		s := snaps[i]
		if s.Topic != topics[i] || s.Orders == nil || s.Order != nil || s.Messages != nil {
			t.Errorf("snapshot %d: topic %s, orders nil %v, order %v, messages %v; want %s with only orders", i, s.Topic, s.Orders == nil, s.Order, s.Messages, topics[i])
		}
		if got := describe(s.Orders); !slices.Equal(got, want) {
			t.Errorf("snapshot of %s: got %d orders\n%s\nwant %d\n%s", topics[i], len(got), strings.Join(got, "\n"), len(want), strings.Join(want, "\n"))
		}
	}
	// y's snapshot holds its two orders whole, as they are now.
	if wantY := []store.Order{created[len(created)-1], created[0]}; len(snaps[2].Orders) == len(wantY) {
		for i, o := range snaps[2].Orders {
			confSameOrder(t, fmt.Sprintf("snapshot of %s, order %d", topics[2], i), o, wantY[i])
		}
	}

	list := func(q store.OrderQuery) []string {
		t.Helper()
		os, err := b.ListOrders(ctx, q)
		if err != nil {
			t.Fatalf("ListOrders(%+v): %v", q, err)
		}
		if os == nil {
			t.Errorf("ListOrders(%+v) = nil, want a list", q)
		}
		return describe(os)
	}
	mid := created[150].ID
	for _, tc := range []struct {
		q    store.OrderQuery
		want []string
	}{
		{store.OrderQuery{}, newest(50, any)},
		{store.OrderQuery{Limit: 200}, newest(200, any)},
		{store.OrderQuery{Limit: 1}, newest(1, any)},
		{store.OrderQuery{Active: true}, newest(50, active)},
		{store.OrderQuery{Active: true, Limit: 3}, newest(3, active)},
		{store.OrderQuery{Customer: y}, newest(50, of(y))},
		{store.OrderQuery{Customer: y, Active: true}, []string{y1.ID + " placed"}},
		{store.OrderQuery{Customer: x, Limit: 200}, newest(200, of(x))},
		{store.OrderQuery{Customer: nobody}, []string{}},
		{store.OrderQuery{Customer: x, Before: mid, Limit: 2}, []string{created[149].ID + " " + created[149].Status, created[148].ID + " " + created[148].Status}},
		{store.OrderQuery{Customer: x, Before: created[1].ID}, []string{}},
		{store.OrderQuery{Customer: x, Active: true, Before: created[102].ID, Limit: 3}, []string{created[101].ID + " placed", created[99].ID + " placed", created[98].ID + " placed"}},
	} {
		if got := list(tc.q); !slices.Equal(got, tc.want) {
			t.Errorf("ListOrders(%+v): got %d\n%s\nwant %d\n%s", tc.q, len(got), strings.Join(got, "\n"), len(tc.want), strings.Join(tc.want, "\n"))
		}
	}
	// Paging a customer's orders with the cursor gives each once, newest
	// first; so does paging its active ones.
	for _, activeOnly := range []bool{false, true} {
		var got []string
		q := store.OrderQuery{Customer: x, Active: activeOnly, Limit: listPage}
		for range listOrdersX {
			page, err := b.ListOrders(ctx, q)
			if err != nil {
				t.Fatalf("ListOrders(%+v): %v", q, err)
			}
			if len(page) > listPage {
				t.Fatalf("ListOrders(%+v) gave %d, more than the limit", q, len(page))
			}
			got = append(got, describe(page)...)
			if len(page) < listPage {
				break
			}
			q.Before = page[len(page)-1].ID
		}
		keep := of(x)
		if activeOnly {
			keep = func(o store.Order) bool { return o.Customer == x && active(o) }
		}
		if want := newest(len(created), keep); !slices.Equal(got, want) {
			t.Errorf("paging %s (active %v) by %d: got %d orders, want %d", x, activeOnly, listPage, len(got), len(want))
		}
	}
	for _, q := range []store.OrderQuery{
		{Limit: 201}, {Limit: -1}, {Before: "zz"}, {Before: strings.ToUpper(mid)}, {Customer: "a\x01"}, {Customer: strings.Repeat("c", store.MaxNameLen+1)},
	} {
		if _, err := b.ListOrders(ctx, q); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ListOrders(%+v): got %v, want ErrInvalid", q, err)
		}
	}
}
