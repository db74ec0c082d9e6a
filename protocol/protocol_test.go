package protocol

import (
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"testing"
	"time"

	"changecast/store"
)

// The browser client exports the same event names, in the same order.
func TestBrowserClientExportsTheEventNames(t *testing.T) {
	src, err := os.ReadFile("../static/changecast.js")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^export const EVENTS = \[([^\]]*)\];$`).FindSubmatch(src)
	if m == nil {
		t.Fatal("static/changecast.js exports no EVENTS list")
	}
	var js []EventName
	if err := json.Unmarshal(append(append([]byte("["), m[1]...), ']'), &js); err != nil {
		t.Fatalf("EVENTS %s: %v", m[1], err)
	}
	if !slices.Equal(js, Events) {
		t.Errorf("changecast.js exports %v, protocol declares %v", js, Events)
	}
}

// The browser client gives an id to the events that carry one, the same
// set as HasID.
func TestBrowserClientKnowsWhichEventsHaveIDs(t *testing.T) {
	src, err := os.ReadFile("../static/changecast.js")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^const WITH_ID = new Set\(\[([^\]]*)\]\);$`).FindSubmatch(src)
	if m == nil {
		t.Fatal("static/changecast.js declares no WITH_ID set")
	}
	var js []EventName
	if err := json.Unmarshal(append(append([]byte("["), m[1]...), ']'), &js); err != nil {
		t.Fatalf("WITH_ID %s: %v", m[1], err)
	}
	var want []EventName
	for _, n := range Events {
		if n.HasID() {
			want = append(want, n)
		}
	}
	slices.Sort(js)
	slices.Sort(want)
	if !slices.Equal(js, want) {
		t.Errorf("changecast.js gives ids to %v, protocol to %v", js, want)
	}
}

func TestHasID(t *testing.T) {
	for _, n := range Events {
		want := n == EventOrder || n == EventMessage || n == EventSnapshot
		if got := n.HasID(); got != want {
			t.Errorf("%s.HasID() = %v, want %v", n, got, want)
		}
	}
	if EventName("other").HasID() {
		t.Error("an unknown event carries no id")
	}
}

// Payload decodes every event's data with nothing lost: each payload
// type's JSON, decoded into Payload and encoded again with the payload
// type's fields, is what it was.
func TestPayloadCoversEveryEvent(t *testing.T) {
	o := &store.Order{ID: "o1", Customer: "alice", Status: store.StatusPlaced, Version: 2}
	msg := &store.Message{ID: "m1", Room: "lobby", Author: "bob", Text: "hi"}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, v := range []any{
		OrderChange{Topic: "orders/o1", Op: store.OpUpdate, Order: o},
		MessageChange{Topic: "rooms/lobby", Op: store.OpInsert, Message: msg},
		OrderSnapshot{Topic: "orders/o1", Order: o},
		RoomSnapshot{Topic: "rooms/lobby", Messages: []store.Message{*msg}},
		ListSnapshot{Topic: "orders", Orders: []store.Order{*o}},
		Reset{Topic: "rooms/lobby", Reason: ResetHistoryLost},
		Expired{Topic: "rooms/lobby", Reason: ExpiredReason},
		Refused{Topic: "orders/x", Status: http.StatusNotFound, Error: "order not found"},
		PresenceSync{Topic: "rooms/lobby", Op: PresenceOpSync, Users: []Member{{User: "bob", Since: at}}},
		PresenceChange{Topic: "rooms/lobby", Op: PresenceOpJoin, User: "bob"},
	} {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var p Payload
		if err := json.Unmarshal(data, &p); err != nil {
			t.Fatal(err)
		}
		full, _ := json.Marshal(p)
		var back map[string]any
		_ = json.Unmarshal(full, &back)
		var orig map[string]any
		_ = json.Unmarshal(data, &orig)
		for k, want := range orig {
			w, _ := json.Marshal(want)
			g, _ := json.Marshal(back[k])
			if string(w) != string(g) {
				t.Errorf("%T: field %q is %s through Payload, %s in the event", v, k, g, w)
			}
		}
	}
}

func TestSetStreamHeaders(t *testing.T) {
	h := http.Header{}
	SetStreamHeaders(h)
	if got := h.Get("Content-Type"); got != "text/event-stream" {
		t.Errorf("Content-Type %q", got)
	}
	if got := h.Get("Cache-Control"); got != "no-cache, no-transform" {
		t.Errorf("Cache-Control %q", got)
	}
	if got := h.Get("X-Accel-Buffering"); got != "no" {
		t.Errorf("X-Accel-Buffering %q", got)
	}
}
