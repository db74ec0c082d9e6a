package handlers

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"changecast/store"
)

// checkAnswer fails on a 5xx, and on a refused request that moved the
// store's log.
func checkAnswer(t *testing.T, e *env, what string, r response, before string, okStatus int) {
	t.Helper()
	if r.status >= 500 {
		t.Fatalf("%s: got %d %s, want no 5xx", what, r.status, r.body)
	}
	if r.status != okStatus {
		if r.errText() == "" && r.status != http.StatusNotFound {
			t.Errorf("%s: got %d %s, want a JSON error", what, r.status, r.body)
		}
		if e.head(t) != before {
			t.Fatalf("%s: refused with %d but the log moved", what, r.status)
		}
	}
}

func FuzzOrderBodies(f *testing.F) {
	e := newEnv(f, noLimits)
	o := e.createOrder(f, "alice")
	for _, s := range []string{
		`{"customer":"alice","items":[{"sku":"pizza","qty":1}]}`,
		`{"items":[{"sku":"pizza","qty":1}]}`,
		`{"customer":"bob","items":[{"sku":"pizza","qty":1}]}`,
		`{"customer":"a\u0000","items":[{"sku":"p","qty":1}]}`,
		`{"items":[{"sku":"p","qty":1e9}]}`,
		`{"items":[{"sku":"p","qty":-1}]}`,
		`{"status":"cancelled"}`, `{"status":"preparing"}`, `{"status":null}`,
		`{"items":null}`, `null`, `[]`, `"x"`, `{"items":[{}]}`, `{} {}`, "{\"items\":[{\"sku\":\"\xff\",\"qty\":1}]}",
		`{"customer":"alice","customer":"bob","items":[{"sku":"p","qty":1}]}`,
	} {
		f.Add(s, "application/json")
	}
	f.Add(`{}`, "application/json; charset=utf-16")
	f.Add(`{}`, "application/JSON; charset=UTF-8")
	staff := token(f, "kitchen", RoleStaff, "*")
	alice := token(f, "alice", RoleCustomer, "lobby")
	f.Fuzz(func(t *testing.T, body, contentType string) {
		for _, tok := range []string{staff, alice} {
			before := e.head(t)
			r, err := e.try(req{method: "POST", path: "/api/orders", body: body, token: tok, header: map[string]string{"Content-Type": contentType}})
			if err != nil {
				t.Skip("the client cannot send this:", err)
			}
			checkAnswer(t, e, "POST /api/orders", r, before, http.StatusCreated)
			if r.status == http.StatusCreated {
				var got store.Order
				r.decode(t, &got)
				if !store.ValidOrderID(got.ID) || store.ValidateOrder(got.Customer, got.Items) != nil {
					t.Fatalf("created an invalid order %+v", got)
				}
				if tok == alice && got.Customer != "alice" {
					t.Fatalf("alice created an order for %q", got.Customer)
				}
			}
			before = e.head(t)
			r, _ = e.try(req{method: "PATCH", path: "/api/orders/" + o.ID, body: body, token: tok, header: map[string]string{"Content-Type": contentType}})
			checkAnswer(t, e, "PATCH", r, before, http.StatusOK)
		}
	})
}

func FuzzRoomsAndMessages(f *testing.F) {
	e := newEnv(f, noLimits)
	for _, s := range [][3]string{
		{"lobby", `{"text":"hi"}`, "50"},
		{"lobby", `{"text":"hi","author":"alice"}`, "1"},
		{"lobby", `{"text":"hi","author":"mallory"}`, "0"},
		{"Lobby", `{"text":"hi"}`, "201"},
		{"lob by", `{"text":""}`, "-1"},
		{"..", `{"text":"\ud800"}`, "x"},
		{"a/b", `{"text":"hi"}`, "1e3"},
		{"-a", "{\"text\":\"\xff\xfe\"}", ""},
		{strings.Repeat("a", 65), `{"text":"hi"}`, "200"},
		{"kitchen", `{"text":"hi"}`, "5"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	alice := token(f, "alice", RoleCustomer, "lobby", "a", "lob-by")
	f.Fuzz(func(t *testing.T, room, body, limit string) {
		path := "/api/rooms/" + url.PathEscape(room)
		before := e.head(t)
		r, err := e.try(req{method: "POST", path: path + "/messages", body: body, token: alice})
		if err != nil {
			t.Skip("the client cannot send this:", err)
		}
		checkAnswer(t, e, "POST messages", r, before, http.StatusCreated)
		if r.status == http.StatusCreated {
			var m store.Message
			r.decode(t, &m)
			if m.Author != "alice" || !aliceCan(m.Room) || store.ValidateMessage(m.Room, m.Author, m.Text) != nil {
				t.Fatalf("stored %+v", m)
			}
		}
		before = e.head(t)
		q := url.Values{"limit": {limit}, "before": {body}}
		r, _ = e.try(req{method: "GET", path: path + "/messages?" + q.Encode(), token: alice})
		checkAnswer(t, e, "GET messages", r, before, http.StatusOK)
	})
}

// aliceCan says which rooms FuzzRoomsAndMessages's token grants.
func aliceCan(room string) bool { return room == "lobby" || room == "a" || room == "lob-by" }

func FuzzIDs(f *testing.F) {
	e := newEnv(f, noLimits)
	o := e.createOrder(f, "alice")
	foreign := e.createOrder(f, "bob")
	for _, s := range []string{o.ID, foreign.ID, "", "x", strings.ToUpper(o.ID), o.ID + "0", "../" + o.ID, "%00", "orders/" + o.ID} {
		f.Add(s)
	}
	alice := token(f, "alice", RoleCustomer, "lobby")
	f.Fuzz(func(t *testing.T, id string) {
		path := "/api/orders/" + url.PathEscape(id)
		before := e.head(t)
		r, err := e.try(req{method: "GET", path: path, token: alice})
		if err != nil {
			t.Skip("the client cannot send this:", err)
		}
		checkAnswer(t, e, "GET order", r, before, http.StatusOK)
		if r.status == http.StatusOK && id != o.ID {
			t.Fatalf("GET order %q: got 200 %s, want only alice's order", id, r.body)
		}
		r, _ = e.try(req{method: "PATCH", path: path, body: `{"status":"preparing"}`, token: alice})
		checkAnswer(t, e, "PATCH order", r, before, http.StatusOK)
		if r.status == http.StatusOK {
			t.Fatalf("a customer moved order %q: %s", id, r.body)
		}
		// The streams: a refused one answers at once; an accepted one
		// must be alice's order.
		for _, p := range []string{path + "/events", "/api/events?topic=" + url.QueryEscape(id), "/api/events?topic=" + url.QueryEscape("orders/"+id)} {
			s, r := e.tryStream(t, p+sep(p)+"access_token="+alice, nil)
			if s != nil {
				if ev := s.next(t); ev.payload(t).Topic != store.OrderTopic(o.ID) {
					t.Fatalf("GET %s: got %+v, want only alice's order", p, ev)
				}
				s.Close()
				continue
			}
			checkAnswer(t, e, "GET "+p, r, before, http.StatusOK)
		}
	})
}

func sep(path string) string {
	if strings.Contains(path, "?") {
		return "&"
	}
	return "?"
}

// FuzzLastEventID: whatever the resume point, a stream answers 200 and
// starts with a reset, a snapshot or a live event; never an error.
func FuzzLastEventID(f *testing.F) {
	e := newEnv(f, dev, noLimits)
	mustStatus(f, e.do(f, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"hi"}`}), http.StatusCreated)
	for _, s := range []string{"", "0", "garbage", strings.Repeat("9", 600), "\x00", "a\nb", "é", e.head(f)} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, id string, inQuery bool) {
		path := "/api/rooms/lobby/events"
		h := map[string]string{}
		if inQuery {
			path += "?lastEventId=" + url.QueryEscape(id)
		} else {
			if !sendable(id) {
				t.Skip("the client cannot send this header")
			}
			h["Last-Event-ID"] = id
		}
		s, r := e.tryStream(t, path, h)
		if s == nil {
			t.Fatalf("Last-Event-ID %q: got %d %s, want a 200 event stream", id, r.status, r.body)
		}
		// A resume point that cannot be one starts over with a reset; a
		// plausible one may wait quietly for the next change.
		sent := id
		if !inQuery {
			sent = strings.Trim(id, " \t") // header values lose surrounding blanks
		}
		if sent != "" && e.store.CheckPosition(sent) != nil {
			if ev := s.next(t); ev.Event != "reset" {
				t.Fatalf("Last-Event-ID %q: got first event %+v, want a reset", id, ev)
			}
		}
		s.Close()
	})
}

// sendable reports whether Go's client sends v as a header value.
func sendable(v string) bool {
	return !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f })
}

// FuzzToken: no token, however malformed, panics or authenticates.
func FuzzToken(f *testing.F) {
	valid := token(f, "alice", RoleCustomer, "lobby")
	for _, s := range []string{valid, valid + "x", "", ".", "..", "a.b.c", strings.Repeat("A", 5000)} {
		f.Add(s)
	}
	a := newAuthenticator(testSecret, time.Now)
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := a.principal(tok)
		if err == nil && tok != valid && p.Subject != "alice" {
			t.Fatalf("token %q authenticated as %+v", tok, p)
		}
	})
}

// noLimits turns the per-subject bounds off, so that a fuzzer's pace
// does not hide the answers behind 429s.
func noLimits(c *Config) { c.Limits = Limits{StreamsPerSubject: -1, WritesPerSecond: -1} }
