package handlers

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"changecast/store"
)

// forgedHS256 returns a token with header alg and the claims, signed
// with HMAC-SHA256 over testSecret whatever alg says (the algorithm
// confusion attack).
func forgedHS256(tb testing.TB, alg string, claims map[string]any) string {
	tb.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			tb.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(map[string]string{"alg": alg, "typ": "JWT"}) + "." + enc(claims)
	mac := hmac.New(sha256.New, testSecret)
	mac.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func signed(tb testing.TB, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	tb.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// badTokens are tokens every /api route must refuse with 401.
func badTokens(tb testing.TB) map[string]string {
	tb.Helper()
	exp := time.Now().Add(time.Hour).Unix()
	good := jwt.MapClaims{"sub": "alice", "role": RoleCustomer, "rooms": []string{"*"}, "exp": exp}
	other, err := IssueToken([]byte("another-secret"), "alice", RoleCustomer, []string{"*"}, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	expired, err := IssueToken(testSecret, "alice", RoleCustomer, []string{"*"}, time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		tb.Fatal(err)
	}
	valid := token(tb, "alice", RoleCustomer, "*")
	crit := jwt.NewWithClaims(jwt.SigningMethodHS256, good)
	crit.Header["crit"] = []string{"exp"}
	critical, err := crit.SignedString(testSecret)
	if err != nil {
		tb.Fatal(err)
	}
	// Valid rooms, a valid signature, only too long: 900 rooms make ~15 KiB.
	many := make([]string, 900)
	for i := range many {
		many[i] = fmt.Sprintf("room-%05d", i)
	}
	return map[string]string{
		"no token":       "",
		"malformed":      "not.a.token",
		"bad signature":  other,
		"tampered":       valid[:len(valid)-4] + "AAAA",
		"alg none":       signed(tb, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good),
		"RS256 header":   forgedHS256(tb, "RS256", good),
		"HS512":          signed(tb, jwt.SigningMethodHS512, testSecret, good),
		"expired":        expired,
		"no exp":         signed(tb, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "role": RoleCustomer, "rooms": []string{"*"}}),
		"unknown role":   signed(tb, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "role": "admin", "rooms": []string{"*"}, "exp": exp}),
		"no subject":     signed(tb, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"role": RoleStaff, "rooms": []string{"*"}, "exp": exp}),
		"rooms a string": signed(tb, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "role": RoleCustomer, "rooms": "*", "exp": exp}),
		"not yet valid":  signed(tb, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "role": RoleStaff, "exp": exp, "nbf": exp - 60}),
		"exp a string":   signed(tb, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "role": RoleCustomer, "rooms": []string{"*"}, "exp": strconv.FormatInt(exp, 10)}),
		"crit header":    critical,
		"over 8 KiB":     signed(tb, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "role": RoleCustomer, "rooms": many, "exp": exp}),
		"C1 in subject":  signed(tb, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "al\u0085ice", "role": RoleCustomer, "rooms": []string{"*"}, "exp": exp}),
	}
}

// routeKinds are one request of every /api route kind.
func routeKinds(orderID string) []req {
	return []req{
		{method: "POST", path: "/api/orders", body: `{"items":[{"sku":"pizza","qty":1}]}`},
		{method: "GET", path: "/api/orders"},
		{method: "GET", path: "/api/orders/" + orderID},
		{method: "PATCH", path: "/api/orders/" + orderID, body: `{"status":"cancelled"}`},
		{method: "GET", path: "/api/orders/" + orderID + "/events"},
		{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"hi"}`},
		{method: "GET", path: "/api/rooms/lobby/messages"},
		{method: "GET", path: "/api/rooms/lobby/events"},
		{method: "GET", path: "/api/events?topic=rooms/lobby&topic=orders/" + orderID},
	}
}

func TestAuthRefusesBadTokens(t *testing.T) {
	e := newEnv(t)
	o := e.createOrder(t, "alice")
	for name, tok := range badTokens(t) {
		for _, r := range routeKinds(o.ID) {
			t.Run(name+"/"+r.method+" "+r.path, func(t *testing.T) {
				before := e.head(t)
				r.token = tok
				got := e.do(t, r)
				if got.status != http.StatusUnauthorized || got.errText() == "" {
					t.Errorf("got %d %s, want 401 with a JSON error", got.status, got.body)
				}
				if got.header.Get("WWW-Authenticate") == "" {
					t.Error("a 401 without WWW-Authenticate")
				}
				if e.head(t) != before {
					t.Error("a refused request moved the log")
				}
			})
		}
	}
	// Another scheme in Authorization is refused even with a good token
	// elsewhere.
	r := e.do(t, req{method: "GET", path: "/api/orders/" + o.ID + "?access_token=" + token(t, "alice", RoleCustomer),
		header: map[string]string{"Authorization": "Basic YWxpY2U6eA=="}})
	mustStatus(t, r, http.StatusUnauthorized)
	if r.errText() == "" || strings.Contains(r.errText(), "ey") {
		t.Errorf("got error %q, want one that shows no token", r.errText())
	}
}

// TestAuthTokenPlaces: the token is read from the header, the cookie and
// the query parameter, on REST and stream routes.
func TestAuthTokenPlaces(t *testing.T) {
	e := newEnv(t)
	o := e.createOrder(t, "alice")
	tok := token(t, "alice", RoleCustomer, "lobby")

	r := e.do(t, req{method: "GET", path: "/api/orders/" + o.ID, header: map[string]string{"Cookie": CookieName + "=" + tok}})
	mustStatus(t, r, http.StatusOK)
	r = e.do(t, req{method: "GET", path: "/api/orders/" + o.ID + "?access_token=" + tok})
	mustStatus(t, r, http.StatusOK)

	s := e.openStream(t, "/api/orders/"+o.ID+"/events?access_token="+tok, nil)
	if ev := s.next(t); ev.Event != "snapshot" {
		t.Errorf("got %+v, want a snapshot", ev)
	}
	s = e.openStream(t, "/api/rooms/lobby/events", map[string]string{"Cookie": CookieName + "=" + tok})
	if ev := s.next(t); ev.Event != "snapshot" {
		t.Errorf("got %+v, want a snapshot", ev)
	}
}

// TestAuthorization is the table of what a customer and staff may do.
func TestAuthorization(t *testing.T) {
	e := newEnv(t)
	mine := e.createOrder(t, "alice")
	foreign := e.createOrder(t, "bob")
	alice := token(t, "alice", RoleCustomer, "lobby")
	staff := token(t, "kitchen", RoleStaff, "*")
	roomless := token(t, "carol", RoleCustomer)
	const unknownID = "0123456789abcdef01234567"

	tests := []struct {
		name       string
		r          req
		wantStatus int
		wantErr    string
	}{
		// Foreign orders are not found, on every order route.
		{"get foreign", req{method: "GET", path: "/api/orders/" + foreign.ID, token: alice}, 404, msgOrderNotFound},
		{"patch foreign", req{method: "PATCH", path: "/api/orders/" + foreign.ID, body: `{"status":"cancelled"}`, token: alice}, 404, msgOrderNotFound},
		{"stream foreign", req{method: "GET", path: "/api/orders/" + foreign.ID + "/events", token: alice}, 404, msgOrderNotFound},
		// A multi-topic stream with every topic refused: 404 if any is
		// 404 (foreign and unknown alike), else 403. The rows with an
		// allowed topic are in TestAuthorizationMultiTopic.
		{"multi only foreign", req{method: "GET", path: "/api/events?topic=orders/" + foreign.ID, token: alice}, 404, msgOrderNotFound},
		{"multi foreign and unknown", req{method: "GET", path: "/api/events?topic=orders/" + foreign.ID + "&topic=orders/" + unknownID, token: alice}, 404, "none of these topics"},
		{"multi ungranted then foreign", req{method: "GET", path: "/api/events?topic=rooms/kitchen&topic=orders/" + foreign.ID, token: alice}, 404, "none of these topics"},
		{"multi only ungranted", req{method: "GET", path: "/api/events?topic=rooms/kitchen&topic=rooms/bar", token: alice}, 403, "none of these topics"},
		{"multi one ungranted", req{method: "GET", path: "/api/events?topic=rooms/kitchen", token: alice}, 403, "room kitchen is not granted to this token"},
		{"multi roomless", req{method: "GET", path: "/api/events?topic=rooms/lobby", token: roomless}, 403, "not granted"},
		{"multi malformed beside ungranted", req{method: "GET", path: "/api/events?topic=rooms/kitchen&topic=orders/" + mine.ID + "x", token: alice}, 403, "none of these topics"},
		// The list topics: the board is staff's, a customer's list its own.
		{"board for a customer", req{method: "GET", path: "/api/events?topic=orders", token: alice}, 403, msgOrdersStaffOnly},
		{"another customer's list", req{method: "GET", path: "/api/events?topic=customers/bob", token: alice}, 404, msgCustomerNotFound},
		{"board and another customer's list", req{method: "GET", path: "/api/events?topic=orders&topic=customers/bob", token: alice}, 404, "none of these topics"},
		{"malformed customer list", req{method: "GET", path: "/api/events?topic=customers/", token: staff}, 400, "is not orders/<id>"},
		{"list another customer's orders", req{method: "GET", path: "/api/orders?customer=bob", token: alice}, 403, "only its own orders"},
		// Ordering for someone else.
		{"create for bob", req{method: "POST", path: "/api/orders", body: `{"customer":"bob","items":[{"sku":"p","qty":1}]}`, token: alice}, 403, "only for itself"},
		// Staff moves are not a customer's.
		{"customer moves", req{method: "PATCH", path: "/api/orders/" + mine.ID, body: `{"status":"preparing"}`, token: alice}, 403, "only cancel"},
		{"customer unknown status", req{method: "PATCH", path: "/api/orders/" + mine.ID, body: `{"status":"eaten"}`, token: alice}, 400, "unknown status"},
		{"customer stale If-Match", req{method: "PATCH", path: "/api/orders/" + mine.ID, body: `{"status":"cancelled"}`, token: alice, header: map[string]string{"If-Match": "9"}}, 412, "version mismatch"},
		// Rooms not granted.
		{"post room not granted", req{method: "POST", path: "/api/rooms/kitchen/messages", body: `{"text":"hi"}`, token: alice}, 403, "not granted"},
		{"list room not granted", req{method: "GET", path: "/api/rooms/kitchen/messages", token: alice}, 403, "not granted"},
		{"stream room not granted", req{method: "GET", path: "/api/rooms/kitchen/events", token: alice}, 403, "not granted"},
		{"no rooms at all", req{method: "GET", path: "/api/rooms/lobby/messages", token: roomless}, 403, "not granted"},
		// The author is the subject.
		{"author is someone else", req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"hi","author":"bob"}`, token: alice}, 400, "author"},
		// Staff may do what the status machine allows, on any order.
		{"staff reads", req{method: "GET", path: "/api/orders/" + mine.ID, token: staff}, 200, ""},
		{"staff skips", req{method: "PATCH", path: "/api/orders/" + foreign.ID, body: `{"status":"delivered"}`, token: staff}, 409, "cannot move an order from placed to delivered"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.head(t)
			r := e.do(t, tt.r)
			if r.status != tt.wantStatus || !strings.Contains(r.errText(), tt.wantErr) {
				t.Errorf("got %d %s, want %d with error containing %q", r.status, r.body, tt.wantStatus, tt.wantErr)
			}
			if r.status >= 400 && e.head(t) != before {
				t.Error("a refused request moved the log")
			}
		})
	}

	// What a customer may do.
	r := e.do(t, req{method: "POST", path: "/api/orders", body: `{"items":[{"sku":"soup","qty":1}]}`, token: alice})
	mustStatus(t, r, http.StatusCreated)
	var o store.Order
	r.decode(t, &o)
	if o.Customer != "alice" {
		t.Errorf("got customer %q, want alice (the subject)", o.Customer)
	}
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/orders", body: `{"customer":"alice","items":[{"sku":"soup","qty":1}]}`, token: alice}), http.StatusCreated)

	r = e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"hi","author":"alice"}`, token: alice})
	mustStatus(t, r, http.StatusCreated)
	var m store.Message
	r.decode(t, &m)
	if m.Author != "alice" {
		t.Errorf("got author %q, want alice", m.Author)
	}
	r = e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"no author"}`, token: alice})
	mustStatus(t, r, http.StatusCreated)
	r.decode(t, &m)
	if m.Author != "alice" {
		t.Errorf("got author %q, want alice", m.Author)
	}

	// A customer cancels its placed order, and only a placed one.
	mustStatus(t, e.do(t, req{method: "PATCH", path: "/api/orders/" + mine.ID, body: `{"status":"cancelled"}`, token: alice, header: map[string]string{"If-Match": `"1"`}}), http.StatusOK)
	r = e.do(t, req{method: "PATCH", path: "/api/orders/" + mine.ID, body: `{"status":"cancelled"}`, token: alice})
	if r.status != http.StatusForbidden {
		t.Errorf("cancel a cancelled order: got %d %s, want 403", r.status, r.body)
	}
	mustStatus(t, e.do(t, req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"preparing"}`, token: staff}), http.StatusOK)
	r = e.do(t, req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"cancelled"}`, token: alice})
	if r.status != http.StatusForbidden || !strings.Contains(r.errText(), "placed") {
		t.Errorf("cancel a preparing order: got %d %s, want 403", r.status, r.body)
	}
	// Staff may cancel it.
	mustStatus(t, e.do(t, req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"cancelled"}`, token: staff}), http.StatusOK)
}

// staffMovesAfterRead is a Store whose GetOrder of the armed order, once
// it has read it, lets staff move that order to preparing: a customer's
// cancel then holds a read that is stale before it writes, the race its
// check-and-set must close.
type staffMovesAfterRead struct {
	Store
	mu    sync.Mutex
	armed string // the order to move at its next read; "" for none
	err   error  // the staff move's error
}

// arm makes the next GetOrder of id move it to preparing after reading it.
func (s *staffMovesAfterRead) arm(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed = id
}

func (s *staffMovesAfterRead) GetOrder(ctx context.Context, id string) (store.Order, error) {
	o, err := s.Store.GetOrder(ctx, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && id == s.armed {
		s.armed = ""
		_, s.err = s.Store.UpdateOrderStatus(ctx, id, store.StatusPreparing, o.Version)
	}
	return o, err
}

// TestCustomerCancelRacesStaffMove: a customer may only cancel a placed
// order (docs/api.md). When staff move the order to preparing between the
// cancel's read (placed) and its write, the cancel is refused, 403 (or
// 412 when it named the version it read in If-Match), and the order stays
// preparing.
func TestCustomerCancelRacesStaffMove(t *testing.T) {
	race := &staffMovesAfterRead{}
	e := newEnv(t, func(c *Config) { race.Store = c.Store; c.Store = race })
	alice := token(t, "alice", RoleCustomer)
	for _, tt := range []struct {
		name    string
		ifMatch string
		want    int
	}{
		{"no If-Match", "", http.StatusForbidden},
		{"If-Match of the version read", `"1"`, http.StatusPreconditionFailed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := e.createOrder(t, "alice")
			race.arm(o.ID)
			h := map[string]string{}
			if tt.ifMatch != "" {
				h["If-Match"] = tt.ifMatch
			}
			r := e.do(t, req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"cancelled"}`, token: alice, header: h})
			race.mu.Lock()
			armed, err := race.armed, race.err
			race.mu.Unlock()
			if armed != "" || err != nil {
				t.Fatalf("the staff move did not happen during the cancel (still armed %q, err %v)", armed, err)
			}
			if r.status != tt.want {
				t.Errorf("cancel of an order staff moved to preparing after it was read: got %d %s, want %d", r.status, r.body, tt.want)
			}
			got, err := race.Store.GetOrder(t.Context(), o.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != store.StatusPreparing || got.Version != 2 {
				t.Errorf("order after the refused cancel: status %s version %d, want preparing version 2", got.Status, got.Version)
			}
		})
	}
}

// TestStreamsCarryOnlyOwnEvents: alice's per-order and multi-topic
// streams carry her order's events and nothing of bob's, while both
// orders change at once. The multi-topic stream also names bob's orders
// and a room alice is not granted: each is refused once at the start
// (bob's orders as "order not found", like unknown ones), and not one
// event of theirs follows, neither live while they change nor on a
// reconnect that replays the same changes from its Last-Event-ID.
func TestStreamsCarryOnlyOwnEvents(t *testing.T) {
	e := newEnv(t, noLimits)
	const orders = 5
	var mine, theirs []store.Order
	for range orders {
		mine = append(mine, e.createOrder(t, "alice"))
		theirs = append(theirs, e.createOrder(t, "bob"))
	}
	// The marker is alice's too, moved once after every other write: a
	// stream that has shown its move has shown everything before it.
	marker := e.createOrder(t, "alice")
	alice := token(t, "alice", RoleCustomer, "lobby")
	q := url.Values{"access_token": {alice}}
	var wantRefused []string
	for _, o := range append(append([]store.Order{}, mine...), marker) {
		q.Add("topic", store.OrderTopic(o.ID))
	}
	for _, o := range theirs {
		q.Add("topic", store.OrderTopic(o.ID))
		wantRefused = append(wantRefused, refusedData(store.OrderTopic(o.ID), 404, "order not found"))
	}
	q.Add("topic", "rooms/kitchen")
	wantRefused = append(wantRefused, refusedData("rooms/kitchen", 403, "room kitchen is not granted to this token"))
	// The lists: alice's own, the board and bob's (refused).
	q.Add("topic", store.CustomerTopic("alice"))
	q.Add("topic", store.OrderListTopic)
	wantRefused = append(wantRefused, refusedData(store.OrderListTopic, 403, msgOrdersStaffOnly))
	q.Add("topic", store.CustomerTopic("bob"))
	wantRefused = append(wantRefused, refusedData(store.CustomerTopic("bob"), 404, msgCustomerNotFound))
	path := "/api/events?" + q.Encode()
	multi := e.openStream(t, path, nil)
	aliceAuth := map[string]string{"Authorization": "Bearer " + alice}
	single := e.openStream(t, "/api/orders/"+mine[0].ID+"/events", aliceAuth)
	list := e.openStream(t, "/api/events?topic="+store.CustomerTopic("alice"), aliceAuth)
	// aliceList checks a snapshot of alice's list: every order hers.
	aliceList := func(name string, ev sseEvent) {
		t.Helper()
		p := ev.payload(t)
		if ev.Event != "snapshot" || p.Topic != store.CustomerTopic("alice") || len(p.Orders) == 0 {
			t.Fatalf("%s: got %s %s, want a snapshot of alice's list", name, ev.Event, ev.Data)
		}
		for _, o := range p.Orders {
			if o.Customer != "alice" {
				t.Fatalf("%s: alice's list snapshot holds an order of %s", name, o.Customer)
			}
		}
	}
	aliceList("list", list.next(t))

	allowed := map[string]bool{store.OrderTopic(marker.ID): true}
	for _, o := range mine {
		allowed[store.OrderTopic(o.ID)] = true
	}
	// The refusals, then a snapshot of each of alice's orders.
	expectRefused(t, multi, wantRefused)
	var snapID string
	for range allowed {
		ev := multi.next(t)
		if p := ev.payload(t); ev.Event != "snapshot" || !allowed[p.Topic] || p.Order == nil || p.Order.Customer != "alice" {
			t.Fatalf("got %s %s, want a snapshot of alice's order", ev.Event, ev.Data)
		}
		snapID = ev.ID
	}
	aliceList("multi-topic", multi.next(t))

	staff := token(t, "kitchen", RoleStaff, "*")
	var wg sync.WaitGroup
	for _, o := range append(append([]store.Order{}, mine...), theirs...) {
		wg.Go(func() {
			for _, st := range []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered} {
				e.expect(t, req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"` + st + `"}`, token: staff}, http.StatusOK)
			}
		})
	}
	// Bob's own creations, and staff talk in the room alice may not
	// read, while the streams run.
	bob := token(t, "bob", RoleCustomer)
	wg.Go(func() {
		for range 5 {
			e.expect(t, req{method: "POST", path: "/api/orders", body: `{"items":[{"sku":"x","qty":1}]}`, token: bob}, http.StatusCreated)
		}
	})
	wg.Go(func() {
		for range 5 {
			e.expect(t, req{method: "POST", path: "/api/rooms/kitchen/messages", body: `{"text":"staff only"}`, token: staff}, http.StatusCreated)
		}
	})
	// Alice's new orders: her list carries them, the other routes not.
	const created = 3
	wg.Go(func() {
		for range created {
			e.expect(t, req{method: "POST", path: "/api/orders", body: `{"items":[{"sku":"y","qty":1}]}`, token: alice}, http.StatusCreated)
		}
	})
	wg.Wait()
	mustStatus(t, e.do(t, req{method: "PATCH", path: "/api/orders/" + marker.ID, body: `{"status":"preparing"}`, token: staff}), http.StatusOK)

	// check reads s up to the marker's move (or, with no marker, up to
	// want deliveries) and fails on any event that is not alice's. A
	// stream on alice's list (listed) also gets her new orders, once each.
	check := func(name string, s *sseStream, want int, marked, listed bool) {
		t.Helper()
		delivered, news := 0, map[string]int{}
		for {
			ev := s.next(t)
			p := ev.payload(t)
			if p.Order == nil || p.Order.Customer != "alice" || p.Topic != store.OrderTopic(p.Order.ID) || (ev.Event != "order" && ev.Event != "snapshot") {
				t.Fatalf("%s: got %s event %s, which is not a change of alice's order", name, ev.Event, ev.Data)
			}
			if !allowed[p.Topic] {
				if !listed {
					t.Fatalf("%s: got %s, an order of alice's the stream does not name", name, ev.Data)
				}
				news[p.Order.ID]++
			}
			if p.Order.Status == store.StatusDelivered {
				delivered++
			}
			if (marked && p.Topic == store.OrderTopic(marker.ID)) || (!marked && delivered == want) {
				break
			}
		}
		if delivered != want {
			t.Errorf("%s: got %d deliveries before the marker, want %d", name, delivered, want)
		}
		if listed {
			if len(news) != created {
				t.Errorf("%s: got %d new orders of alice's, want %d", name, len(news), created)
			}
			for id, n := range news {
				if n != 1 {
					t.Errorf("%s: new order %s came %d times, want once", name, id, n)
				}
			}
		}
	}
	check("multi-topic", multi, orders, true, true)
	check("per-order", single, 1, false, false)
	check("alice's list", list, orders, true, true)

	// The same changes again, replayed after the snapshot's position.
	resumed := e.openStream(t, path, map[string]string{"Last-Event-ID": snapID})
	expectRefused(t, resumed, wantRefused)
	check("resumed multi-topic", resumed, orders, true, true)

	// The list route too: alice's orders only.
	r := e.do(t, req{method: "GET", path: "/api/orders?limit=200", token: alice})
	mustStatus(t, r, http.StatusOK)
	var page struct{ Orders []store.Order }
	r.decode(t, &page)
	if len(page.Orders) != orders+1+created {
		t.Errorf("GET /api/orders gave alice %d orders, want %d", len(page.Orders), orders+1+created)
	}
	for _, o := range page.Orders {
		if o.Customer != "alice" {
			t.Fatalf("GET /api/orders gave alice an order of %s", o.Customer)
		}
	}
}

// TestTokenExpiryEndsStream: at the token's exp an open stream sends
// `expired` and ends, and the token is then refused. The server checks
// tokens with a clock the test holds at the time of issue, so however
// slowly the stream opens on a loaded machine the token is still valid
// when it is checked; the stream's end comes at the real exp, one to two
// seconds on (exp has whole-second precision).
func TestTokenExpiryEndsStream(t *testing.T) {
	issued := time.Now()
	var clock atomic.Pointer[time.Time]
	clock.Store(&issued)
	e := newEnv(t, func(c *Config) { c.Now = func() time.Time { return *clock.Load() } })
	tok, err := IssueToken(testSecret, "alice", RoleCustomer, []string{"lobby"}, 2*time.Second, issued)
	if err != nil {
		t.Fatal(err)
	}
	s := e.openStream(t, "/api/rooms/lobby/events?access_token="+tok, nil)
	evs := s.ended(t)
	if len(evs) == 0 || evs[len(evs)-1].Event != "expired" {
		t.Fatalf("got events %+v, want the stream to end with expired", evs)
	}
	// Past exp, the same token is refused.
	after := issued.Add(3 * time.Second)
	clock.Store(&after)
	r := e.do(t, req{method: "GET", path: "/api/rooms/lobby/messages", token: tok})
	if r.status != http.StatusUnauthorized || !strings.Contains(r.errText(), "expired") {
		t.Errorf("got %d %s, want 401 token expired", r.status, r.body)
	}
}

func TestIssueToken(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name      string
		secret    []byte
		sub, role string
		rooms     []string
		ttl       time.Duration
		wantErr   bool
	}{
		{"customer", testSecret, "alice", RoleCustomer, []string{"lobby"}, time.Hour, false},
		{"staff all rooms", testSecret, "kitchen", RoleStaff, []string{"*"}, time.Minute, false},
		{"no rooms", testSecret, "alice", RoleCustomer, nil, time.Hour, false},
		{"empty secret", nil, "alice", RoleCustomer, nil, time.Hour, true},
		{"empty sub", testSecret, "", RoleCustomer, nil, time.Hour, true},
		{"control in sub", testSecret, "a\nb", RoleCustomer, nil, time.Hour, true},
		{"long sub", testSecret, strings.Repeat("a", store.MaxNameLen+1), RoleCustomer, nil, time.Hour, true},
		{"bad role", testSecret, "alice", "admin", nil, time.Hour, true},
		{"bad room", testSecret, "alice", RoleCustomer, []string{"Lobby"}, time.Hour, true},
		{"zero ttl", testSecret, "alice", RoleCustomer, nil, 0, true},
	}
	a := newAuthenticator(testSecret, func() time.Time { return now })
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := IssueToken(tt.secret, tt.sub, tt.role, tt.rooms, tt.ttl, now)
			if (err != nil) != tt.wantErr {
				t.Fatalf("got error %v, want error %t", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			p, err := a.principal(tok)
			if err != nil {
				t.Fatalf("principal: %v", err)
			}
			want := Principal{Subject: tt.sub, Role: tt.role, Rooms: tt.rooms, Expires: now.Add(tt.ttl).Truncate(time.Second)}
			if want.Rooms == nil {
				want.Rooms = []string{}
			}
			if p.Subject != want.Subject || p.Role != want.Role || !slices.Equal(p.Rooms, want.Rooms) || p.Dev || !p.Expires.Equal(want.Expires) {
				t.Errorf("got %+v, want %+v", p, want)
			}
		})
	}
}
