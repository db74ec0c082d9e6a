package mongo

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"changecast/store"
)

// historyBSON is an order's history as stored.
func historyBSON(steps ...store.StatusChange) bson.E {
	a := bson.A{}
	for _, s := range steps {
		a = append(a, bson.D{{Key: "status", Value: s.Status}, {Key: "at", Value: bson.NewDateTimeFromTime(s.At)}})
	}
	return bson.E{Key: "history", Value: a}
}

// sentHistory reads the history out of a document the client sent.
func sentHistory(tb testing.TB, doc bson.Raw) []store.StatusChange {
	tb.Helper()
	v, err := doc.LookupErr("history")
	if err != nil {
		tb.Fatalf("document sent without history: %v", doc)
	}
	var h []store.StatusChange
	if err := v.Unmarshal(&h); err != nil {
		tb.Fatalf("history sent %v: %v", v, err)
	}
	return h
}

func sameHistory(got, want []store.StatusChange) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i].Status != want[i].Status || !got[i].At.Equal(want[i].At) {
			return false
		}
	}
	return true
}

// TestOrderHistoryWrites checks what the store sends: the inserted order
// holds {placed, createdAt}, and the check-and-set replacement of a status
// change holds the whole history read with {new status, updatedAt}
// appended, in the one replace command that carries the version check, so
// the change event's fullDocument carries it.
func TestOrderHistoryWrites(t *testing.T) {
	mm := openMock(t, Options{})
	inserted := bson.D{{Key: "n", Value: int32(1)}, {Key: "ok", Value: 1.0}}
	updated := bson.D{{Key: "n", Value: int32(1)}, {Key: "nModified", Value: int32(1)}, {Key: "ok", Value: 1.0}}
	mm.data.AddResponses(inserted)
	o, err := mm.store.CreateOrder(context.Background(), "ann", []store.Item{{SKU: "pizza", Qty: 2}})
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	wantNew := []store.StatusChange{{Status: store.StatusPlaced, At: o.CreatedAt}}
	if !sameHistory(o.History, wantNew) {
		t.Errorf("CreateOrder: history %v, want %v", o.History, wantNew)
	}
	ins := mm.dataCmds.named("insert")
	if len(ins) != 1 {
		t.Fatalf("inserts: got %d, want 1", len(ins))
	}
	if h := sentHistory(t, ins[0].Body.Lookup("documents", "0").Document()); !sameHistory(h, wantNew) {
		t.Errorf("inserted history %v, want %v", h, wantNew)
	}

	id := bson.NewObjectID()
	t0 := time.Unix(testSec, 0).UTC()
	t1 := t0.Add(time.Minute)
	read := []store.StatusChange{{Status: store.StatusPlaced, At: t0}, {Status: store.StatusPreparing, At: t1}}
	mm.data.AddResponses(
		findReply(ordersCollection, append(orderBSON(id, store.StatusPreparing, 2), historyBSON(read...))),
		updated,
	)
	u, err := mm.store.UpdateOrderStatus(context.Background(), id.Hex(), store.StatusOutForDelivery, 2)
	if err != nil {
		t.Fatalf("UpdateOrderStatus: %v", err)
	}
	want := append(read[:2:2], store.StatusChange{Status: store.StatusOutForDelivery, At: u.UpdatedAt})
	if !sameHistory(u.History, want) {
		t.Errorf("UpdateOrderStatus: history %v, want %v", u.History, want)
	}
	ups := mm.dataCmds.named("update")
	if len(ups) != 1 {
		t.Fatalf("updates: got %d, want 1", len(ups))
	}
	up, _ := ups[0].Body.Lookup("updates", "0").DocumentOK()
	if v, _ := bson.Raw(up).Lookup("q", "version").AsInt64OK(); v != 2 {
		t.Errorf("replace filter %v: want version 2", bson.Raw(up).Lookup("q"))
	}
	repl := bson.Raw(up).Lookup("u").Document()
	elems, _ := repl.Elements()
	for _, e := range elems {
		if strings.HasPrefix(e.Key(), "$") {
			t.Errorf("got operator %s, want a whole replacement document", e.Key())
		}
	}
	if h := sentHistory(t, repl); !sameHistory(h, want) {
		t.Errorf("replacement history %v, want %v", h, want)
	}
	if at, _ := repl.Lookup("updatedAt").TimeOK(); !at.Equal(want[2].At) {
		t.Errorf("replacement updatedAt %v, want the new step's time %v", at, want[2].At)
	}
}

// TestOrderWithoutHistory: an order stored before histories were kept
// reads with an empty history ("history":[] in JSON, as the contract says
// every order carries one), in a change event too, and its next change
// writes a history of that change alone: nothing is made up.
func TestOrderWithoutHistory(t *testing.T) {
	mm := openMock(t, Options{})
	id := bson.NewObjectID()
	updated := bson.D{{Key: "n", Value: int32(1)}, {Key: "nModified", Value: int32(1)}, {Key: "ok", Value: 1.0}}
	mm.data.AddResponses(
		findReply(ordersCollection, orderBSON(id, store.StatusPlaced, 1)),
		findReply(ordersCollection, orderBSON(id, store.StatusPlaced, 1)),
		updated,
	)
	empty := func(what string, o *store.Order) {
		t.Helper()
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if o.History == nil || len(o.History) != 0 || !strings.Contains(string(data), `"history":[]`) {
			t.Errorf("%s: history %#v, JSON %s; want \"history\":[]", what, o.History, data)
		}
	}
	o, err := mm.store.GetOrder(context.Background(), id.Hex())
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	empty("GetOrder", &o)

	raw, err := bson.Marshal(eventDoc(eventTok(2), "replace", ordersCollection, id, orderBSON(id, store.StatusPlaced, 1)))
	if err != nil {
		t.Fatal(err)
	}
	_, _, ch, ok, err := decode(raw)
	if err != nil || !ok || ch.Order == nil {
		t.Fatalf("decode: %+v, %v, %v", ch, ok, err)
	}
	empty("change event", ch.Order)

	u, err := mm.store.UpdateOrderStatus(context.Background(), id.Hex(), store.StatusPreparing, 0)
	if err != nil {
		t.Fatalf("UpdateOrderStatus: %v", err)
	}
	want := []store.StatusChange{{Status: store.StatusPreparing, At: u.UpdatedAt}}
	if !sameHistory(u.History, want) {
		t.Errorf("UpdateOrderStatus: history %v, want %v", u.History, want)
	}
	up, _ := mm.dataCmds.named("update")[0].Body.Lookup("updates", "0").DocumentOK()
	if h := sentHistory(t, bson.Raw(up).Lookup("u").Document()); !sameHistory(h, want) {
		t.Errorf("replacement history %v, want %v", h, want)
	}
}

// TestDecodeOrderHistory: a change event's fullDocument gives the order's
// history as written.
func TestDecodeOrderHistory(t *testing.T) {
	id := bson.NewObjectID()
	t0 := time.Unix(testSec, 0).UTC()
	h := []store.StatusChange{{Status: store.StatusPlaced, At: t0}, {Status: store.StatusPreparing, At: t0.Add(time.Second)}}
	raw, err := bson.Marshal(eventDoc(eventTok(2), "replace", ordersCollection, id, append(orderBSON(id, store.StatusPreparing, 2), historyBSON(h...))))
	if err != nil {
		t.Fatal(err)
	}
	_, _, ch, ok, err := decode(raw)
	if err != nil || !ok || ch.Order == nil {
		t.Fatalf("decode: %+v, %v, %v", ch, ok, err)
	}
	if !sameHistory(ch.Order.History, h) {
		t.Errorf("decoded history %v, want %v", ch.Order.History, h)
	}
}
