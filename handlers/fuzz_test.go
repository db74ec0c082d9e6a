package handlers

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

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

// FuzzLastEventID: whatever the resume point, a stream answers 200, and
// what it sends first follows from docs/api.md alone. The positions this
// deployment made are the ids the test saw on a stream (every change of
// the store is the test's own); any other id, however plausible, was made
// by hand: a reset (invalid-id), then a snapshot. A seen position resumes
// with the change after it, no reset; no resume point starts with a
// snapshot.
func FuzzLastEventID(f *testing.F) {
	e := newEnv(f, dev, noLimits)
	pos := newPositions(f, e)
	for _, s := range []string{"", "0", "garbage", strings.Repeat("9", 600), "\x00", "a\nb", "é", " \t"} {
		f.Add(s, false)
		f.Add(s, true)
	}
	// The ids seen, and ids made from them by hand: each must reset.
	for _, id := range pos.seen {
		for _, s := range []string{id, " " + id + "\t", id + "0", id[:len(id)-1], strings.ToUpper(id), id[:len(id)-1] + "f", "x" + id[1:]} {
			f.Add(s, false)
			f.Add(s, true)
		}
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
		defer s.Close()
		sent := id
		if !inQuery {
			sent = strings.Trim(id, " \t") // header values lose surrounding blanks
		}
		i := slices.Index(pos.seen, sent)
		switch {
		case sent == "":
			if ev := s.next(t); ev.Event != "snapshot" {
				t.Fatalf("no resume point (%q): got first event %+v, want a snapshot", id, ev)
			}
		case i < 0:
			ev := s.next(t)
			if ev.Event != "reset" || ev.payload(t).Reason != "invalid-id" {
				t.Fatalf("Last-Event-ID %q, not an id the stream sent: got first event %+v, want a reset, invalid-id", id, ev)
			}
			if ev := s.next(t); ev.Event != "snapshot" {
				t.Fatalf("Last-Event-ID %q: got %+v after the reset, want a snapshot", id, ev)
			}
		case i == len(pos.seen)-1:
			// The newest position: the next change is the first event.
			text := pos.post(t)
			ev := s.next(t)
			if ev.Event != "message" || ev.payload(t).Message == nil || ev.payload(t).Message.Text != text {
				t.Fatalf("Last-Event-ID %q, the newest position: got first event %+v, want the message %q posted after it", id, ev, text)
			}
			pos.saw(t, ev.ID)
		default:
			if ev := s.next(t); ev.Event != "message" || ev.ID != pos.seen[i+1] {
				t.Fatalf("Last-Event-ID %q, a position the stream sent: got first event %+v, want the next change, id %s", id, ev, pos.seen[i+1])
			}
		}
	})
}

// positions are the log positions a deployment made, in log order, as the
// test saw them on a stream of the lobby: the snapshot's id, then each
// message's. Every change of the store must go through post.
type positions struct {
	e    *env
	s    *sseStream // closed once the first positions are taken
	seen []string
	n    int
}

// newPositions opens a fresh lobby stream, takes its snapshot's id and
// posts three messages, taking their ids.
func newPositions(tb testing.TB, e *env) *positions {
	tb.Helper()
	p := &positions{e: e, s: e.openStream(tb, "/api/rooms/lobby/events", nil)}
	ev := p.s.next(tb)
	if ev.Event != "snapshot" || ev.ID == "" {
		tb.Fatalf("fresh stream: got %+v, want a snapshot with an id", ev)
	}
	p.saw(tb, ev.ID)
	for range 3 {
		text := p.post(tb)
		ev := p.s.next(tb)
		if ev.Event != "message" || ev.payload(tb).Message == nil || ev.payload(tb).Message.Text != text {
			tb.Fatalf("got %+v, want the message %q", ev, text)
		}
		p.saw(tb, ev.ID)
	}
	p.s.Close()
	return p
}

// post posts a new message in the lobby and returns its text.
func (p *positions) post(tb testing.TB) string {
	tb.Helper()
	p.n++
	text := "position probe " + strconv.Itoa(p.n)
	mustStatus(tb, p.e.do(tb, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"` + text + `"}`}), http.StatusCreated)
	return text
}

// saw records id as the newest position; an id seen twice is a
// stream's bug, not a position.
func (p *positions) saw(tb testing.TB, id string) {
	tb.Helper()
	if id == "" || slices.Contains(p.seen, id) {
		tb.Fatalf("position %q: want a new, non-empty id", id)
	}
	p.seen = append(p.seen, id)
}

// sendable reports whether Go's client sends v as a header value.
func sendable(v string) bool {
	return !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f })
}

// FuzzToken: no token, however malformed, panics or authenticates unless
// docs/api.md says it must, as told by contractPrincipal, a verifier
// written here and not the code under test; an accepted token names
// exactly the claims it carries. Signed seeds with good claims must
// authenticate; each bad seed differs from them in one way.
func FuzzToken(f *testing.F) {
	now := time.Now()
	exp := now.Add(time.Hour).Unix()
	hdr := `{"alg":"HS256","typ":"JWT"}`
	claims := func(extra string) string {
		return `{"sub":"alice","role":"customer","rooms":["lobby"]` + extra + `}`
	}
	expClaim := `,"exp":` + strconv.FormatInt(exp, 10)
	good := []string{
		token(f, "alice", RoleCustomer, "lobby"),
		token(f, "kitchen", RoleStaff, "*"),
		signToken(sha256.New, testSecret, hdr, claims(expClaim)),
		signToken(sha256.New, testSecret, `{"alg":"HS256"}`, `{"sub":"bob","role":"staff","exp":`+strconv.FormatInt(exp, 10)+`}`),
	}
	valid := good[0]
	dot := strings.LastIndexByte(valid, '.')
	bad := []string{
		valid + "x", valid[:dot], valid[:dot+1], "", ".", "..", "a.b.c", strings.Repeat("A", 5000),
		// alice's signature on other claims
		valid[:strings.IndexByte(valid, '.')+1] + b64(`{"sub":"mallory","role":"staff","rooms":["*"]`+expClaim+`}`) + valid[dot:],
		b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(claims(expClaim)) + ".",
		signToken(sha512.New384, testSecret, `{"alg":"HS384","typ":"JWT"}`, claims(expClaim)),
		signToken(sha256.New, []byte("another-secret"), hdr, claims(expClaim)),
		signToken(sha256.New, testSecret, hdr, claims(`,"exp":`+strconv.FormatInt(now.Add(-time.Minute).Unix(), 10))),
		signToken(sha256.New, testSecret, hdr, claims("")),
		signToken(sha256.New, testSecret, hdr, claims(`,"exp":"`+strconv.FormatInt(exp, 10)+`"`)),
		signToken(sha256.New, testSecret, hdr, `{"sub":"alice","role":"admin"`+expClaim+`}`),
		signToken(sha256.New, testSecret, hdr, `{"sub":"al\u0000ice","role":"customer"`+expClaim+`}`),
		signToken(sha256.New, testSecret, hdr, `{"sub":"","role":"customer"`+expClaim+`}`),
		signToken(sha256.New, testSecret, hdr, `{"role":"customer"`+expClaim+`}`),
	}
	a := newAuthenticator(testSecret, time.Now)
	for _, tok := range good {
		if _, why := contractPrincipal(tok, now); why != "" {
			f.Fatalf("good seed %q: %s", tok, why)
		}
		if _, err := a.principal(tok); err != nil {
			f.Fatalf("a token signed by the test with good claims was refused: %v", err)
		}
		f.Add(tok)
	}
	for _, tok := range bad {
		if _, why := contractPrincipal(tok, now); why == "" {
			f.Fatalf("bad seed %q passes the test's own verifier", tok)
		}
		f.Add(tok)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		before := time.Now()
		p, err := a.principal(tok)
		if err != nil {
			return
		}
		want, why := contractPrincipal(tok, before)
		if why != "" {
			t.Fatalf("token %q authenticated as %+v, but %s", tok, p, why)
		}
		if p.Subject != want.Subject || p.Role != want.Role || !slices.Equal(p.Rooms, want.Rooms) || p.Expires.Unix() != want.Expires.Unix() {
			t.Fatalf("token %q authenticated as %+v, want its claims %+v", tok, p, want)
		}
	})
}

// b64 is s in unpadded base64url, a JWT segment.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// signToken returns header.payload signed with HMAC over hash and key.
func signToken(hash func() hash.Hash, key []byte, header, payload string) string {
	in := b64(header) + "." + b64(payload)
	m := hmac.New(hash, key)
	m.Write([]byte(in))
	return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// contractPrincipal checks tok as docs/api.md's Authentication section
// says, at time now, without the code under test: three base64url
// segments; a header with alg HS256 and no crit; an HMAC-SHA256 signature
// of header.payload with testSecret; exp a number not before now; sub
// 1-128 bytes of UTF-8 without control characters; role customer or
// staff; rooms a list of strings. It returns the principal the token
// names, or why it must be refused.
func contractPrincipal(tok string, now time.Time) (Principal, string) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return Principal{}, "it is not three segments"
	}
	seg := make([][]byte, 3)
	for i, s := range parts {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			return Principal{}, fmt.Sprintf("segment %d is not base64url: %v", i, err)
		}
		seg[i] = b
	}
	var h map[string]any
	if err := json.Unmarshal(seg[0], &h); err != nil {
		return Principal{}, "its header is not a JSON object"
	}
	if h["alg"] != "HS256" {
		return Principal{}, fmt.Sprintf("its alg is %v, not HS256", h["alg"])
	}
	if _, ok := h["crit"]; ok {
		return Principal{}, "its header has crit"
	}
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(seg[2], m.Sum(nil)) {
		return Principal{}, "it is not signed with the secret"
	}
	dec := json.NewDecoder(bytes.NewReader(seg[1]))
	dec.UseNumber()
	var c map[string]any
	if err := dec.Decode(&c); err != nil {
		return Principal{}, "its payload is not a JSON object"
	}
	n, ok := c["exp"].(json.Number)
	if !ok {
		return Principal{}, fmt.Sprintf("its exp %v is not a number", c["exp"])
	}
	expF, err := n.Float64()
	if err != nil || expF < float64(now.Unix()) {
		return Principal{}, fmt.Sprintf("its exp %v is past (now %d)", n, now.Unix())
	}
	sub, _ := c["sub"].(string)
	if sub == "" || len(sub) > 128 || !utf8.ValidString(sub) || strings.ContainsFunc(sub, unicode.IsControl) {
		return Principal{}, fmt.Sprintf("its sub %q is not 1-128 bytes of UTF-8 without control characters", sub)
	}
	role, _ := c["role"].(string)
	if role != "customer" && role != "staff" {
		return Principal{}, fmt.Sprintf("its role %q is not customer or staff", role)
	}
	var rooms []string
	if raw, ok := c["rooms"]; ok && raw != nil {
		list, ok := raw.([]any)
		if !ok {
			return Principal{}, "its rooms are not a list"
		}
		for _, r := range list {
			s, ok := r.(string)
			if !ok {
				return Principal{}, "its rooms are not all strings"
			}
			rooms = append(rooms, s)
		}
	}
	return Principal{Subject: sub, Role: role, Rooms: rooms, Expires: time.Unix(int64(expF), 0)}, ""
}

// noLimits turns the per-subject bounds off, so that a fuzzer's pace
// does not hide the answers behind 429s.
func noLimits(c *Config) { c.Limits = Limits{StreamsPerSubject: -1, WritesPerSecond: -1} }
