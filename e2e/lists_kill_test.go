package e2e

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"changecast/internal/sseclient"
	"changecast/protocol"
	"changecast/store"
)

// listWrite is one order change the test made, as the REST answer told it.
type listWrite struct {
	customer, id string
	version      int64
}

func (w listWrite) String() string { return fmt.Sprintf("%s v%d (%s)", w.id, w.version, w.customer) }

// TestListsAcrossSIGKILL runs the built binary with the embedded store,
// follows the board (`orders`) and alice's orders (`customers/alice`)
// while orders of alice and bob are created and moved along, kills the
// server with SIGKILL, restarts it on the same port and data directory,
// writes more changes, and resumes each stream with Last-Event-ID: each
// gets exactly the changes of its list after its id, in log order, once
// (the board every order's, alice's only alice's), with no reset and no
// second snapshot, then live changes. The expectation is the writes the
// test made (order id and version from the REST answers).
func TestListsAcrossSIGKILL(t *testing.T) {
	t.Parallel()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port, dataDir := freePort(t), t.TempDir()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := startBinary(t, bin, port, dataDir)

	var log []listWrite
	did := func(o store.Order) store.Order {
		t.Helper()
		log = append(log, listWrite{o.Customer, o.ID, o.Version})
		return o
	}
	create := func(cust string) store.Order { t.Helper(); return did(createOrder(t, base, cust)) }
	move := func(o *store.Order, status string) { t.Helper(); *o = did(setStatus(t, base, o.ID, status)) }

	// Before the streams open: what their snapshots hold.
	a0, b0, a1 := create("alice"), create("bob"), create("alice")
	for _, st := range []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered} {
		move(&a1, st)
	}
	before := len(log)

	type list struct {
		name, topic string
		mine        func(cust string) bool
		snapshot    []string // order ids, newest first
	}
	lists := []list{
		// The board: the active orders, newest first.
		{"board", store.OrderListTopic, func(string) bool { return true }, []string{b0.ID, a0.ID}},
		// Alice's: her most recent orders, any status, newest first.
		{"alice's orders", store.CustomerTopic("alice"), func(c string) bool { return c == "alice" }, []string{a1.ID, a0.ID}},
	}
	streamURL := func(l list) string { return base + "/api/events?topic=" + url.QueryEscape(l.topic) }
	// want is the changes of l's list among log[from:].
	want := func(l list, from int) []listWrite {
		var out []listWrite
		for _, w := range log[from:] {
			if l.mine(w.customer) {
				out = append(out, w)
			}
		}
		return out
	}
	// check fails unless evs are exactly want, as order events on each
	// order's own topic, with ids increasing from after.
	check := func(l list, what, after string, evs []sseclient.Event, want []listWrite) {
		t.Helper()
		prev := after
		for i, ev := range evs {
			p := payload(t, ev)
			if ev.Name != "order" || p.Order == nil || p.Topic != store.OrderTopic(p.Order.ID) {
				t.Fatalf("%s %s: event %d is %s %s; want only order events on each order's own topic (no reset, no snapshot):%s", l.name, what, i, ev.Name, ev.Data, describe(evs))
			}
			if !l.mine(p.Order.Customer) {
				t.Fatalf("%s %s: event %d is a change of %s's order %s; the list holds none of %s's orders:%s", l.name, what, i, p.Order.Customer, p.Order.ID, p.Order.Customer, describe(evs))
			}
			if ev.ID <= prev {
				t.Fatalf("%s %s: event %d id %q does not follow %q (a repeat or out of order):%s", l.name, what, i, ev.ID, prev, describe(evs))
			}
			prev = ev.ID
		}
		got := make([]string, len(evs))
		for i, ev := range evs {
			p := payload(t, ev)
			got[i] = listWrite{p.Order.Customer, p.Order.ID, p.Order.Version}.String()
		}
		exp := make([]string, len(want))
		for i, w := range want {
			exp[i] = w.String()
		}
		if strings.Join(got, "\n") != strings.Join(exp, "\n") {
			t.Fatalf("%s %s: got %d changes\n  %s\nwant exactly these %d, in order, once\n  %s", l.name, what, len(got), strings.Join(got, "\n  "), len(exp), strings.Join(exp, "\n  "))
		}
	}

	// Fresh streams: a snapshot, then every change of the list.
	ws := make([]*collector, len(lists))
	snapIDs := make([]string, len(lists))
	for i, l := range lists {
		ws[i] = watch(t, streamURL(l), "")
		first := ws[i].WaitN(t, 1)[0]
		var snap listSnapshot
		if err := jsonUnmarshal(first.Data, &snap); err != nil || first.Name != "snapshot" || first.ID == "" || snap.Topic != l.topic {
			t.Fatalf("%s: first event %s %q %s; want the list's snapshot with its position as id", l.name, first.Name, first.ID, first.Data)
		}
		var ids []string
		for _, o := range snap.Orders {
			ids = append(ids, o.ID)
		}
		if strings.Join(ids, ",") != strings.Join(l.snapshot, ",") {
			t.Fatalf("%s: snapshot orders %v; want %v", l.name, ids, l.snapshot)
		}
		snapIDs[i] = first.ID
	}

	// Before the kill: creates and status changes of both customers.
	a2, b1 := create("alice"), create("bob")
	move(&a0, store.StatusPreparing)
	move(&b0, store.StatusPreparing)
	move(&a2, store.StatusPreparing)
	move(&b1, store.StatusCancelled)
	lastIDs := make([]string, len(lists))
	for i, l := range lists {
		w := want(l, before)
		evs := ws[i].WaitN(t, 1+len(w))
		check(l, "live before the kill", snapIDs[i], evs[1:], w)
		lastIDs[i] = evs[len(evs)-1].ID
	}
	killedAt := len(log)

	// SIGKILL with the streams open; nothing is written while it is down.
	sigkill(t, cmd)
	for _, w := range ws {
		w.Stop(t)
	}
	startBinary(t, bin, port, dataDir)

	// After the restart: new orders of both, and orders from before the
	// kill moved along.
	a3, b2 := create("alice"), create("bob")
	move(&a0, store.StatusOutForDelivery)
	move(&b0, store.StatusOutForDelivery)
	move(&a3, store.StatusPreparing)
	move(&b2, store.StatusPreparing)
	move(&a2, store.StatusCancelled)
	move(&b0, store.StatusDelivered)
	move(&a0, store.StatusDelivered)

	// Resume each stream from its last id before the kill, and from its
	// snapshot's id (every change since the stream opened, across the
	// kill). A change written once the streams are open comes live; it is
	// alice's, so every stream ends with it.
	type resumed struct {
		l            list
		what, lastID string
		from         int
		w            *collector
	}
	var rs []resumed
	for i, l := range lists {
		rs = append(rs,
			resumed{l: l, what: "resumed from its last id before the kill", lastID: lastIDs[i], from: killedAt},
			resumed{l: l, what: "resumed from its snapshot's id", lastID: snapIDs[i], from: before})
	}
	for i := range rs {
		rs[i].w = watch(t, streamURL(rs[i].l), rs[i].lastID)
	}
	for _, r := range rs {
		// Every caught-up change comes before the live one: wait for them
		// (or for anything but an order event, which check reports).
		w := want(r.l, r.from)
		evs := r.w.WaitFor(t, fmt.Sprintf("%s %s: %d caught-up changes", r.l.name, r.what, len(w)), func(evs []sseclient.Event) bool {
			return len(evs) >= len(w) || (len(evs) > 0 && evs[len(evs)-1].Name != "order")
		})
		if len(evs) > len(w) || (len(evs) > 0 && evs[len(evs)-1].Name != "order") {
			check(r.l, r.what, r.lastID, evs, w) // fails: more than the caught-up changes, or not an order
		}
	}
	a4 := create("alice")
	for _, r := range rs {
		w := want(r.l, r.from)
		evs := r.w.WaitFor(t, fmt.Sprintf("%s %s: the live change of %s", r.l.name, r.what, a4.ID), func(evs []sseclient.Event) bool {
			if len(evs) == 0 {
				return false
			}
			var p protocol.Payload
			return jsonUnmarshal(evs[len(evs)-1].Data, &p) == nil && p.Order != nil && p.Order.ID == a4.ID
		})
		check(r.l, r.what, r.lastID, evs, w)
		r.w.Stop(t)
	}
}
