package handlers

import (
	"net/http"
	"net/url"
	"testing"

	"changecast/store"
)

func TestOrderStream(t *testing.T) {
	e := newEnv(t, dev)
	o := e.createOrder(t, "alice")
	s := e.openStream(t, "/api/orders/"+o.ID+"/events", nil)
	for h, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
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
