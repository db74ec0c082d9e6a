package handlers

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"changecast/protocol"
	"changecast/store"
)

func TestOrderStream(t *testing.T) {
	e := newEnv(t, dev)
	o := e.createOrder(t, "alice")
	s := e.openStream(t, "/api/orders/"+o.ID+"/events", nil)
	for h, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"} {
		if got := s.header.Get(h); got != want && !(h == "Content-Type" && len(got) > len(want) && got[:len(want)] == want) {
			t.Errorf("got %s %q, want %q", h, got, want)
		}
	}
	ev := s.next(t)
	p := ev.payload(t)
	if ev.Event != "snapshot" || ev.ID == "" || p.Topic != store.OrderTopic(o.ID) || p.Order == nil || p.Order.Version != 1 {
		t.Fatalf("got first event %+v, want a snapshot of version 1 with an id", ev)
	}
	for i, status := range []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered} {
		mustStatus(t, e.do(t, req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"` + status + `"}`}), http.StatusOK)
		ev := s.next(t)
		p := ev.payload(t)
		if ev.Event != "order" || p.Order == nil || p.Order.Status != status || p.Order.Version != int64(i+2) || p.Op != store.OpUpdate {
			t.Fatalf("got %+v, want an order update to %s version %d", ev, status, i+2)
		}
	}
}

func TestRoomStream(t *testing.T) {
	e := newEnv(t, dev)
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"first"}`}), http.StatusCreated)
	s := e.openStream(t, "/api/rooms/lobby/events", nil)
	ev := s.next(t)
	p := ev.payload(t)
	if ev.Event != "snapshot" || p.Topic != "rooms/lobby" || len(p.Messages) != 1 || p.Messages[0].Text != "first" {
		t.Fatalf("got %+v, want a snapshot holding the first message", ev)
	}
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"second"}`}), http.StatusCreated)
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/rooms/other/messages", body: `{"text":"elsewhere"}`}), http.StatusCreated)
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"third"}`}), http.StatusCreated)
	for _, want := range []string{"second", "third"} {
		ev := s.next(t)
		p := ev.payload(t)
		if ev.Event != "message" || p.Message == nil || p.Message.Text != want || p.Message.Room != "lobby" {
			t.Fatalf("got %+v, want message %q in lobby", ev, want)
		}
	}
}

// TestMultiTopicResume: one stream for an order and a room (a repeated
// topic counts once), then a reconnect with the last id through the
// query parameter and through the header, which wins over the query.
func TestMultiTopicResume(t *testing.T) {
	e := newEnv(t, dev)
	o := e.createOrder(t, "alice")
	q := url.Values{"topic": {store.OrderTopic(o.ID), "rooms/lobby", store.OrderTopic(o.ID)}}
	path := "/api/events?" + q.Encode()
	s := e.openStream(t, path, nil)
	got := map[string]bool{}
	for range 2 {
		ev := s.next(t)
		if ev.Event != "snapshot" {
			t.Fatalf("got %+v, want snapshots first", ev)
		}
		got[ev.payload(t).Topic] = true
	}
	if !got[store.OrderTopic(o.ID)] || !got["rooms/lobby"] {
		t.Fatalf("got snapshots of %v, want the order and the room", got)
	}
	mustStatus(t, e.do(t, req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"preparing"}`}), http.StatusOK)
	first := s.next(t)
	if first.Event != "order" {
		t.Fatalf("got %+v, want the order update", first)
	}
	s.Close()

	// Missed while away: a message, an order move, a message.
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"m1"}`}), http.StatusCreated)
	mustStatus(t, e.do(t, req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"out_for_delivery"}`}), http.StatusOK)
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"m2"}`}), http.StatusCreated)

	s = e.openStream(t, path+"&lastEventId="+url.QueryEscape(first.ID), nil)
	var ids []string
	for _, want := range []string{"message m1", "order out_for_delivery", "message m2"} {
		ev := s.next(t)
		p := ev.payload(t)
		var what string
		switch {
		case p.Message != nil:
			what = ev.Event + " " + p.Message.Text
		case p.Order != nil:
			what = ev.Event + " " + p.Order.Status
		}
		if what != want {
			t.Fatalf("resumed: got %s (%+v), want %s", what, ev, want)
		}
		ids = append(ids, ev.ID)
	}
	s.Close()

	// The header wins over the query parameter.
	s = e.openStream(t, path+"&lastEventId="+url.QueryEscape(first.ID), map[string]string{"Last-Event-ID": ids[1]})
	ev := s.next(t)
	if p := ev.payload(t); ev.ID != ids[2] || p.Message == nil || p.Message.Text != "m2" {
		t.Fatalf("header and query: got %+v, want only m2 (after the header's id)", ev)
	}
}

func TestGarbageLastEventID(t *testing.T) {
	e := newEnv(t, dev)
	for _, id := range []string{"garbage", "0", "ffffffffffffffffffffffffffffffffffff", "x\ty", "é"} {
		s := e.openStream(t, "/api/rooms/lobby/events", map[string]string{"Last-Event-ID": id})
		ev := s.next(t)
		if ev.Event != "reset" || ev.payload(t).Topic != "rooms/lobby" {
			t.Errorf("Last-Event-ID %q: got %+v, want a reset", id, ev)
		}
		if ev := s.next(t); ev.Event != "snapshot" {
			t.Errorf("Last-Event-ID %q: got %+v after the reset, want a snapshot", id, ev)
		}
		s.Close()
	}
}

// TestStreamsEndOnClose: closing the multiplexer ends open streams, so
// the handlers return and a server can shut down.
func TestStreamsEndOnClose(t *testing.T) {
	e := newEnv(t, dev)
	var streams []*sseStream
	for range 5 {
		s := e.openStream(t, "/api/rooms/lobby/events", nil)
		s.next(t) // the snapshot: the stream is running
		streams = append(streams, s)
	}
	e.mux.Close()
	for _, s := range streams {
		s.ended(t)
	}
}

// refusedData is the data of a `refused` event (docs/api.md).
func refusedData(topic string, status int, msg string) string {
	return fmt.Sprintf(`{"topic":%q,"status":%d,"error":%q}`, topic, status, msg)
}

// expectRefused reads the first events of s and fails unless they are
// exactly the `refused` events want (data as refusedData gives), in
// order, each without an id.
func expectRefused(tb testing.TB, s *sseStream, want []string) {
	tb.Helper()
	for i, w := range want {
		ev := s.next(tb)
		if ev.Event != "refused" || ev.ID != "" || ev.Data != w {
			tb.Fatalf("event %d: got %+v, want refused with no id and data %s", i, ev, w)
		}
	}
}

// TestAuthorizationMultiTopic is the multi-topic part of the auth table:
// /api/events answers 200 when a topic is allowed, starts with one
// `refused` event per refused topic (an unknown and a foreign order alike
// 404 "order not found", a room not granted 403), in the order given,
// then carries the allowed topics alone.
func TestAuthorizationMultiTopic(t *testing.T) {
	e := newEnv(t)
	mine := e.createOrder(t, "alice")
	foreign := e.createOrder(t, "bob")
	carols := e.createOrder(t, "carol")
	const unknown = "orders/0123456789abcdef01234567"
	alice := token(t, "alice", RoleCustomer, "lobby")
	staff := token(t, "kitchen", RoleStaff, "lobby")
	roomless := token(t, "carol", RoleCustomer)
	notFound := func(topic string) string { return refusedData(topic, 404, "order not found") }
	notGranted := func(room string) string {
		return refusedData("rooms/"+room, 403, "room "+room+" is not granted to this token")
	}
	mineT, foreignT, carolsT := store.OrderTopic(mine.ID), store.OrderTopic(foreign.ID), store.OrderTopic(carols.ID)
	malformed := func(topic string) string {
		return refusedData(topic, 400, "topic "+strconv.QuoteToASCII(topic)+" is not orders/<id>, rooms/<room>, orders or customers/<sub>")
	}

	for _, tt := range []struct {
		name        string
		token       string
		topics      []string
		wantRefused []string
		wantTopics  []string // the snapshots that follow
	}{
		{"own and foreign order", alice, []string{mineT, foreignT}, []string{notFound(foreignT)}, []string{mineT}},
		{"room and foreign order", alice, []string{"rooms/lobby", foreignT}, []string{notFound(foreignT)}, []string{"rooms/lobby"}},
		{"room and unknown order", alice, []string{"rooms/lobby", unknown}, []string{notFound(unknown)}, []string{"rooms/lobby"}},
		{"own order and room not granted", alice, []string{mineT, "rooms/kitchen"}, []string{notGranted("kitchen")}, []string{mineT}},
		{"everything at once", alice, []string{foreignT, "rooms/lobby", unknown, "rooms/kitchen", mineT, foreignT},
			[]string{notFound(foreignT), notFound(unknown), notGranted("kitchen")}, []string{"rooms/lobby", mineT}},
		{"staff sees every order", staff, []string{foreignT, unknown, "rooms/bar"},
			[]string{notFound(unknown), notGranted("bar")}, []string{foreignT}},
		{"no rooms at all", roomless, []string{"rooms/lobby", carolsT}, []string{notGranted("lobby")}, []string{carolsT}},
		{"board and own list", alice, []string{"orders", "customers/alice"},
			[]string{refusedData("orders", 403, msgOrdersStaffOnly)}, []string{"customers/alice"}},
		{"other customer's list and own order", alice, []string{"customers/bob", mineT},
			[]string{refusedData("customers/bob", 404, msgCustomerNotFound)}, []string{mineT}},
		{"staff lists", staff, []string{"orders", "customers/bob", "customers/nobody"}, nil, []string{"orders", "customers/bob", "customers/nobody"}},
		{"own list alone", alice, []string{"customers/alice"}, nil, []string{"customers/alice"}},
		// A malformed topic is refused like the others (400), in its place.
		{"malformed beside an allowed room", alice, []string{"orders/<order-id>", "rooms/lobby", "rooms/Lobby", mineT},
			[]string{malformed("orders/<order-id>"), malformed("rooms/Lobby")}, []string{"rooms/lobby", mineT}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := url.Values{"topic": tt.topics}
			s := e.openStream(t, "/api/events?"+q.Encode(), map[string]string{"Authorization": "Bearer " + tt.token})
			expectRefused(t, s, tt.wantRefused)
			got := map[string]bool{}
			for range tt.wantTopics {
				ev := s.next(t)
				if ev.Event != "snapshot" {
					t.Fatalf("got %+v, want the allowed topics' snapshots after the refusals", ev)
				}
				got[ev.payload(t).Topic] = true
			}
			for _, topic := range tt.wantTopics {
				if !got[topic] {
					t.Errorf("got snapshots of %v, want %v", got, tt.wantTopics)
				}
			}
		})
	}
}

// TestRefusedTopicsResume: a reconnect with Last-Event-ID is told the
// refusals again, first, then gets exactly what the allowed topics
// missed; a change to a refused topic never shows.
func TestRefusedTopicsResume(t *testing.T) {
	e := newEnv(t)
	foreign := e.createOrder(t, "bob")
	alice := token(t, "alice", RoleCustomer, "lobby")
	staff := token(t, "kitchen", RoleStaff, "*")
	auth := map[string]string{"Authorization": "Bearer " + alice}
	foreignT := store.OrderTopic(foreign.ID)
	q := url.Values{"topic": {"rooms/lobby", foreignT, "rooms/kitchen"}}
	path := "/api/events?" + q.Encode()
	want := []string{refusedData(foreignT, 404, "order not found"),
		refusedData("rooms/kitchen", 403, "room kitchen is not granted to this token")}

	s := e.openStream(t, path, auth)
	expectRefused(t, s, want)
	snap := s.next(t)
	if snap.Event != "snapshot" || snap.payload(t).Topic != "rooms/lobby" || snap.ID == "" {
		t.Fatalf("got %+v, want the lobby's snapshot with an id", snap)
	}
	s.Close()

	// Missed while away: a move of the foreign order, a message in the
	// room not granted, one in the lobby.
	mustStatus(t, e.do(t, req{method: "PATCH", path: "/api/orders/" + foreign.ID, body: `{"status":"preparing"}`, token: staff}), http.StatusOK)
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/rooms/kitchen/messages", body: `{"text":"secret"}`, token: staff}), http.StatusCreated)
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"m1"}`, token: staff}), http.StatusCreated)

	for _, how := range []struct {
		name   string
		path   string
		header map[string]string
	}{
		{"header", path, map[string]string{"Authorization": "Bearer " + alice, "Last-Event-ID": snap.ID}},
		{"query", path + "&lastEventId=" + url.QueryEscape(snap.ID), auth},
	} {
		t.Run(how.name, func(t *testing.T) {
			s := e.openStream(t, how.path, how.header)
			expectRefused(t, s, want)
			ev := s.next(t)
			if p := ev.payload(t); ev.Event != "message" || p.Topic != "rooms/lobby" || p.Message == nil || p.Message.Text != "m1" {
				t.Fatalf("resumed: got %+v, want only the lobby's m1", ev)
			}
		})
	}
}

// TestAllTopicsRefused: when no topic of /api/events may be streamed the
// answer is the error (400 if every topic is malformed, else 404 if any
// topic is 404, else 403) with every refusal listed.
func TestAllTopicsRefused(t *testing.T) {
	e := newEnv(t)
	foreign := e.createOrder(t, "bob")
	alice := token(t, "alice", RoleCustomer, "lobby")
	foreignT := store.OrderTopic(foreign.ID)
	type ref = protocol.Refused
	bad := func(topic string) string {
		return "topic " + strconv.QuoteToASCII(topic) + " is not orders/<id>, rooms/<room>, orders or customers/<sub>"
	}
	for _, tt := range []struct {
		name        string
		topics      []string
		wantStatus  int
		wantErr     string
		wantRefused []ref
	}{
		{"room not granted, then foreign order", []string{"rooms/kitchen", foreignT}, 404, "none of these topics may be streamed",
			[]ref{{Topic: "rooms/kitchen", Status: 403, Error: "room kitchen is not granted to this token"}, {Topic: foreignT, Status: 404, Error: "order not found"}}},
		// The 404 decides whichever place it has.
		{"foreign order, then room not granted", []string{foreignT, "rooms/kitchen"}, 404, "none of these topics may be streamed",
			[]ref{{Topic: foreignT, Status: 404, Error: "order not found"}, {Topic: "rooms/kitchen", Status: 403, Error: "room kitchen is not granted to this token"}}},
		{"rooms not granted", []string{"rooms/kitchen", "rooms/bar"}, 403, "none of these topics may be streamed",
			[]ref{{Topic: "rooms/kitchen", Status: 403, Error: "room kitchen is not granted to this token"}, {Topic: "rooms/bar", Status: 403, Error: "room bar is not granted to this token"}}},
		{"one foreign order", []string{foreignT}, 404, "order not found", []ref{{Topic: foreignT, Status: 404, Error: "order not found"}}},
		{"one malformed topic", []string{"orders/<order-id>"}, 400, bad("orders/<order-id>"), []ref{{Topic: "orders/<order-id>", Status: 400, Error: bad("orders/<order-id>")}}},
		{"malformed topics only", []string{"orders/" + strings.ToUpper(foreign.ID), "rooms/Lobby"}, 400, "none of these topics may be streamed",
			[]ref{{Topic: "orders/" + strings.ToUpper(foreign.ID), Status: 400, Error: bad("orders/" + strings.ToUpper(foreign.ID))}, {Topic: "rooms/Lobby", Status: 400, Error: bad("rooms/Lobby")}}},
		// A malformed topic beside refused ones: their status decides.
		{"malformed and room not granted", []string{"rooms/Lobby", "rooms/kitchen"}, 403, "none of these topics may be streamed",
			[]ref{{Topic: "rooms/Lobby", Status: 400, Error: bad("rooms/Lobby")}, {Topic: "rooms/kitchen", Status: 403, Error: "room kitchen is not granted to this token"}}},
		{"room not granted, malformed, foreign order", []string{"rooms/kitchen", "x", foreignT}, 404, "none of these topics may be streamed",
			[]ref{{Topic: "rooms/kitchen", Status: 403, Error: "room kitchen is not granted to this token"}, {Topic: "x", Status: 400, Error: bad("x")}, {Topic: foreignT, Status: 404, Error: "order not found"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := url.Values{"topic": tt.topics}
			r := e.do(t, req{method: "GET", path: "/api/events?" + q.Encode(), token: alice})
			var body struct {
				Error   string `json:"error"`
				Refused []ref  `json:"refused"`
			}
			r.decode(t, &body)
			if r.status != tt.wantStatus || body.Error != tt.wantErr || !slices.Equal(body.Refused, tt.wantRefused) {
				t.Errorf("got %d %s, want %d %q refused %+v", r.status, r.body, tt.wantStatus, tt.wantErr, tt.wantRefused)
			}
		})
	}
}
