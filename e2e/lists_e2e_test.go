package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"changecast/internal/sseclient"
	"changecast/protocol"
	"changecast/store"
	"changecast/store/bolt"
)

// listSnapshot is the data of a list topic's snapshot.
type listSnapshot = protocol.ListSnapshot

// change names an order event as "<order id>:<status>".
func change(tb testing.TB, ev sseclient.Event) string {
	tb.Helper()
	p := payload(tb, ev)
	if ev.Name != "order" || p.Order == nil || p.Topic != store.OrderTopic(p.Order.ID) {
		tb.Fatalf("got %s %s, want an order event on the order's own topic", ev.Name, ev.Data)
	}
	return p.Order.ID + ":" + p.Order.Status
}

// TestListsEndToEnd: the board (`orders`) and "my orders"
// (`customers/<sub>`) across creates and status changes; a dropped stream
// resumed with exactly the changes it missed, in order, once, from memory
// and (after a restart) from the log; and a position the log no longer
// holds answered with `reset` and a fresh snapshot.
func TestListsEndToEnd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := newE2EServer(t, map[string]string{"DATA_DIR": dir})
	old := createOrder(t, s.URL, "alice")
	done := createOrder(t, s.URL, "bob")
	for _, st := range []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered} {
		setStatus(t, s.URL, done.ID, st)
	}
	board := "topic=orders"
	mine := "topic=" + url.QueryEscape(store.CustomerTopic("alice"))
	both := board + "&topic=" + url.QueryEscape(store.OrderTopic(old.ID))

	type stream struct {
		name, query string
		snap        func(listSnapshot) bool
		match       func(cust string) bool
	}
	streams := []stream{
		{"board", board, func(l listSnapshot) bool {
			return l.Topic == "orders" && len(l.Orders) == 1 && l.Orders[0].ID == old.ID // active only
		}, func(string) bool { return true }},
		{"my orders", mine, func(l listSnapshot) bool {
			return l.Topic == "customers/alice" && len(l.Orders) == 1 && l.Orders[0].ID == old.ID
		}, func(c string) bool { return c == "alice" }},
		{"board and one order", both, nil, func(string) bool { return true }},
	}
	var ws []*collector
	var lastIDs []string
	for _, st := range streams {
		w := watch(t, s.URL+"/api/events?"+st.query, "")
		first := w.WaitN(t, 1)[0]
		var l listSnapshot
		if err := jsonUnmarshal(first.Data, &l); err != nil || first.Name != "snapshot" || (st.snap != nil && !st.snap(l)) || l.Orders == nil {
			t.Fatalf("%s: first event %s %s; want the list's snapshot", st.name, first.Name, first.Data)
		}
		ws = append(ws, w)
	}

	// Creates and status changes of both customers.
	var log []struct{ cust, change string }
	write := func(round int) {
		for i := range 3 {
			cust := "alice"
			if i == 1 {
				cust = "bob"
			}
			o := createOrder(t, s.URL, cust)
			log = append(log, struct{ cust, change string }{cust, o.ID + ":placed"})
			o = setStatus(t, s.URL, o.ID, store.StatusPreparing)
			log = append(log, struct{ cust, change string }{cust, o.ID + ":preparing"})
		}
		setStatus(t, s.URL, old.ID, []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered}[round])
		log = append(log, struct{ cust, change string }{"alice", old.ID + ":" + []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered}[round]})
	}
	want := func(st stream, from int) []string {
		var out []string
		for _, c := range log[from:] {
			if st.match(c.cust) {
				out = append(out, c.change)
			}
		}
		return out
	}
	// check waits for len(want) events after skip and fails unless they
	// are exactly want's changes, in order: a repeat would displace one.
	check := func(name string, w *collector, skip int, want []string) string {
		t.Helper()
		evs := w.WaitN(t, skip+len(want))
		checkOrdered(t, evs[skip:])
		for i, ev := range evs[skip:] {
			if got := change(t, ev); got != want[i] {
				t.Fatalf("%s: event %d = %s; want exactly %v in order:%s", name, i, got, want, describe(evs[skip:]))
			}
		}
		return evs[len(evs)-1].ID
	}
	write(0)
	for i, st := range streams {
		snaps := 1
		if st.query == both {
			snaps = 2
		}
		lastIDs = append(lastIDs, check(st.name+" live", ws[i], snaps, want(st, 0)))
		ws[i].Stop(t)
	}

	// Dropped: N changes missed, resumed from memory.
	from := len(log)
	write(1)
	for i, st := range streams {
		w := watch(t, s.URL+"/api/events?"+st.query, lastIDs[i])
		lastIDs[i] = check(st.name+" resumed from memory", w, 0, want(st, from))
		w.Stop(t)
	}

	// A restart: memory is empty, the log has every change.
	s.Stop(t)
	from = len(log)
	s = newE2EServer(t, map[string]string{"DATA_DIR": dir})
	write(2)
	for i, st := range streams {
		w := watch(t, s.URL+"/api/events?"+st.query, lastIDs[i])
		check(st.name+" caught up from the log", w, 0, want(st, from))
		w.Stop(t)
	}

	// History lost: the log is pruned past the streams' positions.
	s.Stop(t)
	pruneLog(t, dir, lastIDs[0])
	s = newE2EServer(t, map[string]string{"DATA_DIR": dir})
	for i, st := range streams {
		w := watch(t, s.URL+"/api/events?"+st.query, lastIDs[i])
		topics := 1
		if st.query == both {
			topics = 2
		}
		evs := w.WaitN(t, 2*topics)
		for j, ev := range evs {
			p := payload(t, ev)
			if (j < topics && (ev.Name != "reset" || p.Reason != "history-lost")) || (j >= topics && ev.Name != "snapshot") {
				t.Fatalf("%s resumed after pruning: %s; want reset history-lost then a snapshot per topic", st.name, describe(evs))
			}
		}
		var l listSnapshot
		if err := jsonUnmarshal(evs[topics].Data, &l); err != nil || (st.snap != nil && l.Orders == nil) {
			t.Fatalf("%s: snapshot %s", st.name, evs[topics].Data)
		}
		w.Stop(t)
	}
}

// pruneLog opens the embedded store in dir keeping one change and waits
// until it no longer holds the change after pos.
func pruneLog(tb testing.TB, dir, pos string) {
	tb.Helper()
	b, err := bolt.Open(dir, bolt.Options{RetainCount: 1, RetainAge: time.Nanosecond, PruneInterval: 10 * time.Millisecond})
	if err != nil {
		tb.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		head, err := b.Head(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		err = b.CatchUp(ctx, []string{store.OrderListTopic}, pos, head, func(store.Change) error { return nil })
		if errors.Is(err, store.ErrHistoryLost) {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("log not pruned past %s: %v", pos, fmt.Sprint(err))
		}
	}
}
