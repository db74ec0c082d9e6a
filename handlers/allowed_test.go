package handlers

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"changecast/store"
	"changecast/store/storetest"
)

// orderAllowed is the part of an order's JSON this file checks.
type orderAllowed struct {
	Status  string    `json:"status"`
	Version int64     `json:"version"`
	Allowed *[]string `json:"allowed"`
}

// allowedOf decodes an order's status and allowed moves, failing if the
// order has no "allowed".
func allowedOf(tb testing.TB, what string, data []byte) orderAllowed {
	tb.Helper()
	var o orderAllowed
	if err := json.Unmarshal(data, &o); err != nil {
		tb.Fatalf("%s: %v in %s", what, err, data)
	}
	if o.Allowed == nil {
		tb.Fatalf("%s carries no allowed: %s", what, data)
	}
	return o
}

// An order's "allowed" is the status machine the store enforces: for an
// order in every status, and a move to every status, the move succeeds
// exactly when the order's allowed lists it. The answers of GET and
// PATCH, the order's snapshot on its stream and the 409 of a refused
// move all carry the same list, in the machine's order.
func TestOrderAllowedIsTheStatusMachine(t *testing.T) {
	e := newEnv(t, dev)
	// A path to every status from placed.
	paths := storetest.StatusPaths()
	order := []string{store.StatusPlaced, store.StatusPreparing, store.StatusOutForDelivery,
		store.StatusDelivered, store.StatusCancelled}
	for _, from := range order {
		var allowedFrom []string
		for _, to := range order {
			o := e.createOrder(t, "alice")
			path := "/api/orders/" + o.ID
			for _, s := range paths[from] {
				r := e.do(t, req{method: "PATCH", path: path, body: `{"status":"` + s + `"}`})
				mustStatus(t, r, http.StatusOK)
				allowedOf(t, "PATCH answer", r.body)
			}
			r := e.do(t, req{method: "GET", path: path})
			mustStatus(t, r, http.StatusOK)
			got := allowedOf(t, "GET answer", r.body)
			if got.Status != from {
				t.Fatalf("order %s is %s, want %s", o.ID, got.Status, from)
			}
			allowed := *got.Allowed
			if allowedFrom == nil {
				allowedFrom = allowed
			} else if !slices.Equal(allowed, allowedFrom) {
				t.Errorf("from %s: allowed %q, then %q", from, allowedFrom, allowed)
			}

			s := e.openStream(t, path+"/events", nil)
			ev := s.next(t)
			var snap struct {
				Order json.RawMessage `json:"order"`
			}
			if err := json.Unmarshal([]byte(ev.Data), &snap); err != nil || ev.Event != "snapshot" {
				t.Fatalf("first event %q %s: %v", ev.Event, ev.Data, err)
			}
			if sn := allowedOf(t, "snapshot", snap.Order); !slices.Equal(*sn.Allowed, allowed) {
				t.Errorf("from %s: the snapshot's allowed is %q, GET's %q", from, *sn.Allowed, allowed)
			}
			s.Close()

			r = e.do(t, req{method: "PATCH", path: path, body: `{"status":"` + to + `"}`})
			moved := r.status == http.StatusOK
			if moved != slices.Contains(allowed, to) {
				t.Errorf("%s → %s: PATCH answered %d %s, allowed %q", from, to, r.status, r.body, allowed)
			}
			if !moved {
				mustStatus(t, r, http.StatusConflict)
				if refused := allowedOf(t, "409 answer", r.body); !slices.Equal(*refused.Allowed, allowed) {
					t.Errorf("%s → %s: the 409 allows %q, the order %q", from, to, *refused.Allowed, allowed)
				}
			}
		}
		// In the machine's order: the order an order moves through them.
		if !slices.IsSortedFunc(allowedFrom, func(a, b string) int {
			return slices.Index(order, a) - slices.Index(order, b)
		}) {
			t.Errorf("from %s: allowed %q is not in the machine's order", from, allowedFrom)
		}
	}
}
