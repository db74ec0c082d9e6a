package handlers

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"changecast/store"
)

// TestListOrders: GET /api/orders answers newest first, filtered by
// status and customer, paged by limit and before (docs/api.md); a
// customer sees only its own orders.
func TestListOrders(t *testing.T) {
	e := newEnv(t)
	staff := token(t, "kitchen", RoleStaff, "*")
	alice := token(t, "alice", RoleCustomer)
	var all, alices []string // ids, oldest first
	for i := range 7 {
		cust := "bob"
		if i%2 == 0 {
			cust = "alice"
		}
		o := e.createOrder(t, cust)
		all = append(all, o.ID)
		if cust == "alice" {
			alices = append(alices, o.ID)
		}
	}
	// all[0] (alice's) is delivered, all[1] (bob's) cancelled: not active.
	for _, st := range []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered} {
		e.expect(t, req{method: "PATCH", path: "/api/orders/" + all[0], body: `{"status":"` + st + `"}`, token: staff}, http.StatusOK)
	}
	e.expect(t, req{method: "PATCH", path: "/api/orders/" + all[1], body: `{"status":"cancelled"}`, token: staff}, http.StatusOK)
	newest := func(ids []string) []string { out := slices.Clone(ids); slices.Reverse(out); return out }

	for _, tt := range []struct {
		name, path, token string
		want              []string
	}{
		{"staff all", "/api/orders", staff, newest(all)},
		{"staff all explicit", "/api/orders?status=all", staff, newest(all)},
		{"staff active", "/api/orders?status=active", staff, newest(all[2:])},
		{"staff one customer", "/api/orders?customer=alice", staff, newest(alices)},
		{"staff active of a customer", "/api/orders?customer=alice&status=active", staff, newest(alices[1:])},
		{"staff first page", "/api/orders?limit=3", staff, newest(all)[:3]},
		{"staff next page", "/api/orders?limit=3&before=" + all[4], staff, newest(all[1:4])},
		{"staff last page", "/api/orders?before=" + all[1], staff, []string{all[0]}},
		{"staff past the end", "/api/orders?before=" + all[0], staff, []string{}},
		{"customer own by default", "/api/orders", alice, newest(alices)},
		{"customer names itself", "/api/orders?customer=alice&status=active&limit=2", alice, newest(alices[1:])[:2]},
		{"customer pages", "/api/orders?before=" + alices[2], alice, newest(alices[:2])},
		{"unknown customer", "/api/orders?customer=nobody", staff, []string{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, req{method: "GET", path: tt.path, token: tt.token})
			mustStatus(t, r, http.StatusOK)
			var page struct{ Orders []store.Order }
			r.decode(t, &page)
			got := []string{}
			for _, o := range page.Orders {
				got = append(got, o.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}

	for _, tt := range []struct {
		name, path, token string
		status            int
		wantErr           string
	}{
		{"customer names another", "/api/orders?customer=bob", alice, 403, "only its own"},
		{"bad status", "/api/orders?status=open", staff, 400, "status"},
		{"limit zero", "/api/orders?limit=0", staff, 400, "limit"},
		{"limit too big", "/api/orders?limit=201", staff, 400, "limit"},
		{"limit not a number", "/api/orders?limit=ten", staff, 400, "limit"},
		{"before not an id", "/api/orders?before=xyz", staff, 400, "before"},
		{"customer with a control character", "/api/orders?customer=a%01b", staff, 400, "customer"},
		{"no token", "/api/orders", "", 401, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, req{method: "GET", path: tt.path, token: tt.token})
			if r.status != tt.status || !strings.Contains(r.errText(), tt.wantErr) {
				t.Errorf("got %d %s, want %d with %q", r.status, r.body, tt.status, tt.wantErr)
			}
		})
	}
	// The largest page.
	r := e.do(t, req{method: "GET", path: "/api/orders?limit=200", token: staff})
	mustStatus(t, r, http.StatusOK)
}

// subjectRoundTrip has the customer sub, holding tok, create an order,
// find it in GET /api/orders and at /api/orders/:id, and open a stream
// on customers/<sub> whose snapshot holds it; it returns the order and
// the stream (closed at the test's end).
func subjectRoundTrip(t *testing.T, e *env, sub, tok string) (store.Order, *sseStream) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"customer": sub, "items": []map[string]any{{"sku": "pizza", "qty": 1}}})
	r := e.do(t, req{method: "POST", path: "/api/orders", token: tok, body: string(body)})
	mustStatus(t, r, http.StatusCreated)
	var o store.Order
	r.decode(t, &o)

	var page struct{ Orders []store.Order }
	r = e.do(t, req{method: "GET", path: "/api/orders", token: tok})
	mustStatus(t, r, http.StatusOK)
	r.decode(t, &page)
	if len(page.Orders) != 1 || page.Orders[0].ID != o.ID {
		t.Fatalf("GET /api/orders as %q: %+v, want its order", sub, page.Orders)
	}
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/orders/" + o.ID, token: tok}), http.StatusOK)

	topic := store.CustomerTopic(sub)
	s := e.openStream(t, "/api/events?topic="+url.QueryEscape(topic), map[string]string{"Authorization": "Bearer " + tok})
	t.Cleanup(s.Close)
	if ev := s.next(t); ev.Event != "snapshot" || ev.payload(t).Topic != topic || len(ev.payload(t).Orders) != 1 {
		t.Fatalf("snapshot of %s: %+v", topic, ev)
	}
	return o, s
}

// TestSubjectsOfIdentityProviders: subjects as identity providers make
// them (`auth0|123`, `google-oauth2|…`, `user/42`) round-trip: their
// customer creates an order, lists it, reads it, streams it on
// customers/<sub> and on /api/events; staff filter by them.
func TestSubjectsOfIdentityProviders(t *testing.T) {
	e := newEnv(t)
	staff := token(t, "kitchen", RoleStaff, "*")
	for _, sub := range []string{"auth0|123", "google-oauth2|1043", "user/42", "org/acme/user 7"} {
		t.Run(sub, func(t *testing.T) {
			o, s := subjectRoundTrip(t, e, sub, token(t, sub, RoleCustomer))
			var page struct{ Orders []store.Order }
			r := e.do(t, req{method: "GET", path: "/api/orders?customer=" + url.QueryEscape(sub), token: staff})
			mustStatus(t, r, http.StatusOK)
			r.decode(t, &page)
			if len(page.Orders) != 1 || page.Orders[0].ID != o.ID {
				t.Fatalf("staff GET /api/orders?customer=%s: %+v, want the order", sub, page.Orders)
			}
			mustStatus(t, e.do(t, req{method: "PATCH", path: "/api/orders/" + o.ID, token: staff, body: `{"status":"preparing"}`}), http.StatusOK)
			if ev := s.next(t); ev.Event != "order" || ev.payload(t).Order == nil || ev.payload(t).Order.Status != store.StatusPreparing {
				t.Fatalf("change on %s: %+v", store.CustomerTopic(sub), ev)
			}
		})
	}
}
