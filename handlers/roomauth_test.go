package handlers

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// roomBackend is a fake app backend for ROOM_AUTH_URL on a real
// listener: it answers by its reply function and records what it was
// asked, how, and how many questions were in flight at most.
type roomBackend struct {
	url string

	mu      sync.Mutex
	reply   func(q roomQuestion) (status int, body string)
	asked   []roomQuestion
	headers []http.Header
	hold    chan struct{} // when not nil, each question waits for it to close
	// redirects counts the answers that redirect (to the same URL).
	redirects int

	calls, inFlight, maxInFlight atomic.Int64
}

// newRoomBackend starts a backend that allows exactly the questions in
// allow ("sub room action"), until the test ends.
func newRoomBackend(tb testing.TB, allow ...string) *roomBackend {
	tb.Helper()
	b := &roomBackend{}
	b.allowOnly(allow...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := b.inFlight.Add(1)
		defer b.inFlight.Add(-1)
		for {
			m := b.maxInFlight.Load()
			if n <= m || b.maxInFlight.CompareAndSwap(m, n) {
				break
			}
		}
		b.calls.Add(1)
		raw, _ := io.ReadAll(r.Body)
		var q roomQuestion
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&q); err != nil || r.Method != http.MethodPost {
			http.Error(w, "bad question "+string(raw), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.asked = append(b.asked, q)
		b.headers = append(b.headers, r.Header.Clone())
		hold, reply := b.hold, b.reply
		b.mu.Unlock()
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		status, body := reply(q)
		if status/100 == 3 {
			w.Header().Set("Location", r.URL.String())
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	tb.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

// allowOnly makes the backend allow exactly the questions in allow
// ("sub room action") and refuse the others with {"allowed": false}.
func (b *roomBackend) allowOnly(allow ...string) {
	set := map[string]bool{}
	for _, a := range allow {
		set[a] = true
	}
	b.setReply(func(q roomQuestion) (int, string) {
		if set[q.Sub+" "+q.Room+" "+string(q.Action)] {
			return http.StatusOK, `{"allowed": true}`
		}
		return http.StatusOK, `{"allowed": false}`
	})
}

func (b *roomBackend) setReply(f func(roomQuestion) (int, string)) {
	b.mu.Lock()
	b.reply = f
	b.mu.Unlock()
}

func (b *roomBackend) questions() []roomQuestion {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]roomQuestion(nil), b.asked...)
}

// fakeClock is a Config.Now the test moves.
type fakeClock struct{ offset atomic.Int64 }

func (c *fakeClock) now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *fakeClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// roomEnv starts a server asking b about rooms, with cfg's other fields
// from change.
func roomEnv(tb testing.TB, b *roomBackend, ra RoomAuth, change ...func(*Config)) *env {
	tb.Helper()
	ra.URL = b.url
	return newEnv(tb, append([]func(*Config){func(c *Config) { c.RoomAuth = ra }}, change...)...)
}

// TestRoomAuthAllowAndDeny: a room the token does not list is asked of
// the backend, as {"sub","room","action"} with the secret as a bearer
// token: yes opens every room route (read, post, stream, presence), no is
// 403 on each; a listed room asks nothing; read and post are asked, and
// kept, apart.
func TestRoomAuthAllowAndDeny(t *testing.T) {
	b := newRoomBackend(t, "alice kitchen read", "alice kitchen post", "alice cellar read")
	e := roomEnv(t, b, RoomAuth{Secret: "room-secret-0123456789"})
	alice := token(t, "alice", RoleCustomer, "lobby")

	e.expect(t, req{method: "GET", path: "/api/rooms/lobby/messages", token: alice}, http.StatusOK)
	if n := b.calls.Load(); n != 0 {
		t.Fatalf("a room the token lists: %d questions to the backend, want 0", n)
	}
	e.expect(t, req{method: "GET", path: "/api/rooms/kitchen/messages", token: alice}, http.StatusOK)
	e.expect(t, req{method: "POST", path: "/api/rooms/kitchen/messages", body: `{"text":"hi"}`, token: alice}, http.StatusCreated)
	e.expect(t, req{method: "GET", path: "/api/rooms/kitchen/presence", token: alice}, http.StatusOK)
	s := e.openStream(t, "/api/rooms/kitchen/events", map[string]string{"Authorization": "Bearer " + alice})
	if ev := s.next(t); ev.Event != "snapshot" || !strings.Contains(ev.Data, `"hi"`) {
		t.Fatalf("kitchen stream: got %+v, want its snapshot with the message", ev)
	}
	s.Close()

	// Read allowed and kept: post is asked on its own, and refused.
	e.expect(t, req{method: "GET", path: "/api/rooms/cellar/messages", token: alice}, http.StatusOK)
	r := e.do(t, req{method: "POST", path: "/api/rooms/cellar/messages", body: `{"text":"hi"}`, token: alice})
	mustStatus(t, r, http.StatusForbidden)
	if r.errText() != msgRoomNotGranted("cellar") {
		t.Errorf("refused post: %q", r.errText())
	}

	for _, rq := range []req{
		{method: "GET", path: "/api/rooms/attic/messages"},
		{method: "POST", path: "/api/rooms/attic/messages", body: `{"text":"hi"}`},
		{method: "GET", path: "/api/rooms/attic/presence"},
		{method: "GET", path: "/api/rooms/attic/events"},
		{method: "GET", path: "/api/events?topic=rooms/attic"},
	} {
		rq.token = alice
		e.expect(t, rq, http.StatusForbidden)
	}

	want := map[roomQuestion]bool{
		{"alice", "kitchen", roomRead}: true, {"alice", "kitchen", roomPost}: true,
		{"alice", "cellar", roomRead}: true, {"alice", "cellar", roomPost}: true,
		{"alice", "attic", roomRead}: true, {"alice", "attic", roomPost}: true,
	}
	got := map[roomQuestion]bool{}
	for _, q := range b.questions() {
		got[q] = true
	}
	if len(got) != len(want) {
		t.Errorf("questions %v, want %v", got, want)
	}
	for q := range want {
		if !got[q] {
			t.Errorf("never asked %+v; asked %v", q, b.questions())
		}
	}
	if n := b.calls.Load(); n != int64(len(want)) {
		t.Errorf("%d questions for %d distinct ones: answers are not kept", n, len(want))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, h := range b.headers {
		if h.Get("Authorization") != "Bearer room-secret-0123456789" || h.Get("Content-Type") != "application/json" {
			t.Fatalf("question headers %v: want the secret as a bearer token and JSON", h)
		}
	}
}

// TestRoomAuthFailsClosed: only a 2xx with "allowed": true (a JSON true)
// allows. An explicit no, a 4xx and a body that is not that answer are
// 403; a 5xx, a 429, a backend that does not answer in time and one that
// is not listening are 503 with Retry-After, so a client retries.
func TestRoomAuthFailsClosed(t *testing.T) {
	b := newRoomBackend(t)
	replies := map[string]struct {
		status int
		body   string
	}{
		"yes":       {200, `{ "allowed" : true }`},
		"yes201":    {201, `{"allowed":true,"reason":"member"}`},
		"no":        {200, `{"allowed":false}`},
		"string":    {200, `{"allowed":"true"}`},
		"yesword":   {200, `{"allowed":"yes"}`},
		"one":       {200, `{"allowed":1}`},
		"garbage":   {200, `<html>ok</html>`},
		"trailing":  {200, `{"allowed":true} {"allowed":false}`},
		"array":     {200, `[{"allowed":true}]`},
		"empty":     {200, ``},
		"nofield":   {200, `{}`},
		"nullvalue": {200, `{"allowed":null}`},
		"forbidden": {403, `{"allowed":true}`},
		"redirect":  {302, `{"allowed":true}`},
		"moved":     {307, `{"allowed":true}`}, // to /yes, which would say yes
		"error":     {500, `{"allowed":true}`},
		"badgw":     {502, ``},
		"busy":      {429, `{"allowed":true}`},
		"slow":      {200, `{"allowed":true}`},
	}
	b.setReply(func(q roomQuestion) (int, string) {
		if q.Room == "slow" {
			time.Sleep(2 * time.Second) // past the Timeout below
		}
		if q.Room == "moved" {
			b.mu.Lock()
			b.redirects++
			b.mu.Unlock()
		}
		r := replies[q.Room]
		return r.status, r.body
	})
	e := roomEnv(t, b, RoomAuth{Timeout: 300 * time.Millisecond})
	alice := token(t, "alice", RoleCustomer)
	want := map[string]int{"yes": 200, "yes201": 200, "error": 503, "badgw": 503, "busy": 503, "slow": 503}
	for room := range replies {
		w, ok := want[room]
		if !ok {
			w = http.StatusForbidden
		}
		r := e.do(t, req{method: "GET", path: "/api/rooms/" + room + "/messages", token: alice})
		if r.status != w {
			t.Errorf("backend answering %d %q: got %d %s, want %d", replies[room].status, replies[room].body, r.status, r.body, w)
		}
		if ra := r.header.Get("Retry-After"); (w == 503) != (ra == "5") {
			t.Errorf("backend answering %d %q: %d with Retry-After %q", replies[room].status, replies[room].body, r.status, ra)
		}
	}

	b.mu.Lock()
	if b.redirects != 1 {
		t.Errorf("a redirect was followed: %d questions redirected, want 1", b.redirects)
	}
	b.mu.Unlock()

	// Nobody listening at all.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := &roomBackend{url: "http://" + ln.Addr().String() + "/rooms"}
	ln.Close()
	e2 := roomEnv(t, down, RoomAuth{})
	r := e2.do(t, req{method: "GET", path: "/api/rooms/kitchen/events", token: alice})
	mustStatus(t, r, http.StatusServiceUnavailable)
	if r.header.Get("Retry-After") != "5" || r.errText() != msgRoomAuthDown {
		t.Errorf("backend down: Retry-After %q, error %q", r.header.Get("Retry-After"), r.errText())
	}
	// On /api/events, a room that cannot be checked beside one refused
	// makes the whole answer a 503 (a retry may stream it), either order.
	for _, q := range []string{"topic=rooms/kitchen&topic=orders/0123456789abcdef01234567", "topic=orders/0123456789abcdef01234567&topic=rooms/kitchen"} {
		r := e2.do(t, req{method: "GET", path: "/api/events?" + q, token: alice})
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "5" {
			t.Errorf("%s with the backend down: %d %s Retry-After %q, want 503 with Retry-After", q, r.status, r.body, r.header.Get("Retry-After"))
		}
	}
}

// TestRoomAuthCacheExpiry, on a clock the test moves: a yes and a no are
// each kept for Cache, then asked again; a backend that could not be
// asked is asked again after a second, not after Cache.
func TestRoomAuthCacheExpiry(t *testing.T) {
	b := newRoomBackend(t, "alice kitchen read")
	clock := &fakeClock{}
	e := roomEnv(t, b, RoomAuth{Cache: 10 * time.Second}, func(c *Config) { c.Now = clock.now })
	alice := token(t, "alice", RoleCustomer)
	get := func(room string, want int) {
		t.Helper()
		e.expect(t, req{method: "GET", path: "/api/rooms/" + room + "/messages", token: alice}, want)
	}

	get("kitchen", 200)
	b.allowOnly() // withdrawn: the yes is kept until Cache has passed
	clock.advance(9 * time.Second)
	get("kitchen", 200)
	if n := b.calls.Load(); n != 1 {
		t.Fatalf("%d questions within Cache, want 1", n)
	}
	clock.advance(time.Second)
	get("kitchen", 403)
	b.allowOnly("alice kitchen read") // granted again: the no is kept too
	clock.advance(9 * time.Second)
	get("kitchen", 403)
	clock.advance(time.Second)
	get("kitchen", 200)
	if n := b.calls.Load(); n != 3 {
		t.Fatalf("%d questions over three Cache periods, want 3", n)
	}

	b.setReply(func(roomQuestion) (int, string) { return 503, "" })
	get("pantry", 503)
	get("pantry", 503)
	if n := b.calls.Load(); n != 4 {
		t.Fatalf("%d questions, want 4: a failure is kept a moment", n)
	}
	b.allowOnly("alice pantry read")
	clock.advance(time.Second)
	get("pantry", 200)
}

// TestRoomAuthWithdrawal: a live stream of a room the backend granted
// asks again every Cache; when the backend says no, that topic gets a
// `refused` event (403) and nothing more, while the room the token lists
// keeps streaming; a stream of the withdrawn room alone gets `refused`
// and ends. A room the token lists is never asked about.
func TestRoomAuthWithdrawal(t *testing.T) {
	b := newRoomBackend(t, "alice kitchen read")
	e := roomEnv(t, b, RoomAuth{Cache: 100 * time.Millisecond})
	alice := token(t, "alice", RoleCustomer, "lobby")
	staff := token(t, "kitchen", RoleStaff, "*")
	auth := map[string]string{"Authorization": "Bearer " + alice}
	post := func(room, text string) {
		t.Helper()
		e.expect(t, req{method: "POST", path: "/api/rooms/" + room + "/messages", body: `{"text":"` + text + `"}`, token: staff}, http.StatusCreated)
	}
	multi := e.openStream(t, "/api/events?topic=rooms/kitchen&topic=rooms/lobby", auth)
	single := e.openStream(t, "/api/rooms/kitchen/events", auth)
	for range 2 {
		if ev := multi.next(t); ev.Event != "snapshot" {
			t.Fatalf("got %+v, want the snapshots", ev)
		}
	}
	if ev := single.next(t); ev.Event != "snapshot" {
		t.Fatalf("got %+v, want the snapshot", ev)
	}
	post("kitchen", "k1")
	post("lobby", "l1")
	for _, want := range []string{"k1", "l1"} {
		if ev := multi.next(t); ev.Event != "message" || !strings.Contains(ev.Data, want) {
			t.Fatalf("got %+v, want message %s", ev, want)
		}
	}
	if ev := single.next(t); ev.Event != "message" || !strings.Contains(ev.Data, "k1") {
		t.Fatalf("got %+v, want message k1", ev)
	}

	b.allowOnly()
	refused := `{"topic":"rooms/kitchen","status":403,"error":"` + msgRoomNotGranted("kitchen") + `"}`
	if ev := multi.next(t); ev.Event != "refused" || ev.Data != refused {
		t.Fatalf("after the withdrawal: got %+v, want refused %s", ev, refused)
	}
	post("kitchen", "k2")
	post("lobby", "l2")
	if ev := multi.next(t); ev.Event != "message" || !strings.Contains(ev.Data, "l2") {
		t.Fatalf("got %+v, want l2 alone (k2 is of the withdrawn room)", ev)
	}
	evs := single.ended(t)
	if len(evs) == 0 || evs[len(evs)-1].Event != "refused" || evs[len(evs)-1].Data != refused {
		t.Fatalf("single-room stream ended with %+v, want refused %s last", evs, refused)
	}
	for _, q := range b.questions() {
		if q.Room != "kitchen" || q.Action != roomRead {
			t.Errorf("asked %+v; want only kitchen, read", q)
		}
	}
}

// TestRoomAuthConcurrencyBound: many distinct questions at once, of as
// many users, never have more than MaxCalls in flight at the backend;
// the others wait for a slot and are answered.
func TestRoomAuthConcurrencyBound(t *testing.T) {
	const bound, requests = 3, 12
	b := newRoomBackend(t)
	b.setReply(func(roomQuestion) (int, string) { return 200, `{"allowed":true}` })
	hold := make(chan struct{})
	b.hold = hold
	e := roomEnv(t, b, RoomAuth{MaxCalls: bound, Timeout: waitTimeout})
	var wg sync.WaitGroup
	for i := range requests {
		user := token(t, "user-"+strconv.Itoa(i), RoleCustomer)
		wg.Go(func() {
			e.expect(t, req{method: "GET", path: "/api/rooms/room-" + string(rune('a'+i)) + "/messages", token: user}, http.StatusOK)
		})
	}
	// The bound reached, give the others a moment to (wrongly) get in.
	deadline := time.Now().Add(waitTimeout)
	for b.inFlight.Load() < bound && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	close(hold)
	wg.Wait()
	if n, m := b.calls.Load(), b.maxInFlight.Load(); n != requests || m != bound {
		t.Fatalf("%d questions, at most %d in flight; want %d, at most %d", n, m, requests, bound)
	}
	t.Logf("%d distinct questions, at most %d in flight at the backend", requests, b.maxInFlight.Load())
}

// TestRoomAuthFloodOneCall: a flood of identical questions while the
// first is unanswered costs the backend one call.
func TestRoomAuthFloodOneCall(t *testing.T) {
	const requests = 50
	b := newRoomBackend(t, "alice kitchen read")
	hold := make(chan struct{})
	b.hold = hold
	e := roomEnv(t, b, RoomAuth{Timeout: waitTimeout})
	alice := token(t, "alice", RoleCustomer)
	var wg sync.WaitGroup
	for range requests {
		wg.Go(func() {
			e.expect(t, req{method: "GET", path: "/api/rooms/kitchen/messages", token: alice}, http.StatusOK)
		})
	}
	deadline := time.Now().Add(waitTimeout)
	for b.calls.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	close(hold)
	wg.Wait()
	if n := b.calls.Load(); n != 1 {
		t.Fatalf("%d identical requests cost %d questions, want 1", requests, n)
	}
}

// TestRoomVerdictOf is the answer's parser on its own: allowed only
// for a JSON object whose key "allowed", spelled so and given once, is
// true. Where encoding/json's own reading (into *bool) would allow, the
// table says why the hook does not.
func TestRoomVerdictOf(t *testing.T) {
	for _, tt := range []struct {
		body string
		want bool
	}{
		{`{"allowed":true}`, true},
		{` {"allowed" :true } `, true},
		{`{"allowed":true,"reason":["member"]}`, true},
		{`{"allowed":true,"ALLOWED":false}`, true}, // another key
		{`{"allowed":false}`, false},
		{`{"allowed":"true"}`, false},
		{`{"allowed":True}`, false},
		{`{"allowed":true`, false},
		{`{"Allowed":true}`, false}, // encoding/json: allowed (case ignored)
		{`{"allowed":tru}`, false},
		{`null`, false},
		{`true`, false},
		{`{"allowed":[true]}`, false},
		{`{"allowed":{"value":true}}`, false},
		{`{"allowed":true}x`, false},
		{`{"allowed":false,"allowed":true}`, false}, // encoding/json: allowed (the last)
		{`{"allowed":1}`, false},
	} {
		v, err := roomVerdictOf(http.StatusOK, []byte(tt.body))
		if (v == roomAllowed) != tt.want || (v == roomUnavailable) {
			t.Errorf("body %q: verdict %d (%v), want allowed %t", tt.body, v, err, tt.want)
		}
		var ref struct {
			Allowed *bool `json:"allowed"`
		}
		refAllows := json.Unmarshal([]byte(tt.body), &ref) == nil && ref.Allowed != nil && *ref.Allowed
		if refAllows != tt.want && !strings.Contains(tt.body, `"Allowed"`) && strings.Count(tt.body, `"allowed"`) < 2 && !strings.Contains(tt.body, "ALLOWED") {
			t.Errorf("body %q: encoding/json reads allowed=%t, the table says %t", tt.body, refAllows, tt.want)
		}
	}
}

// TestRoomAuthPerSubBound: one user asking about many rooms at once
// (the flood of the review: 32 unlisted rooms) has at most
// MaxCallsPerSub questions in flight; the rest are 503 at once without
// reaching the backend, and another user's question, meanwhile, takes
// a free slot and gets its answer.
func TestRoomAuthPerSubBound(t *testing.T) {
	const rooms = 32
	b := newRoomBackend(t, "bob kitchen read")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the backend closes
	b.setReply(func(q roomQuestion) (int, string) {
		if q.Sub == "mallory" {
			if q.Room != "free" {
				<-release
			}
			return http.StatusOK, `{"allowed":false}`
		}
		return http.StatusOK, `{"allowed":true}`
	})
	e := roomEnv(t, b, RoomAuth{Timeout: waitTimeout}) // 16 slots, 4 a user
	mallory := token(t, "mallory", RoleCustomer)
	statuses := make(chan int, rooms)
	var wg sync.WaitGroup
	for i := range rooms {
		wg.Go(func() {
			statuses <- e.do(t, req{method: "GET", path: "/api/rooms/room-" + strconv.Itoa(i) + "/messages", token: mallory}).status
		})
	}
	for range rooms - DefaultRoomAuthCallsPerSub {
		select {
		case s := <-statuses:
			if s != http.StatusServiceUnavailable {
				t.Fatalf("a question past the user's bound: %d, want 503", s)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("the questions past the user's bound were not answered 503 at once (%d at the backend)", b.inFlight.Load())
		}
	}
	time.Sleep(100 * time.Millisecond) // time for another to (wrongly) reach the backend

	e.expect(t, req{method: "GET", path: "/api/rooms/kitchen/messages", token: token(t, "bob", RoleCustomer)}, http.StatusOK)
	release <- struct{}{} // one held question answered: its place is free again
	if s := <-statuses; s != http.StatusForbidden {
		t.Fatalf("a question of the user's bound: %d, want the backend's no, 403", s)
	}
	e.expect(t, req{method: "GET", path: "/api/rooms/free/messages", token: mallory}, http.StatusForbidden)
	for range DefaultRoomAuthCallsPerSub - 1 {
		release <- struct{}{}
	}
	wg.Wait()
	n := 0
	for _, q := range b.questions() {
		if q.Sub == "mallory" {
			n++
		}
	}
	if m := b.maxInFlight.Load(); n != DefaultRoomAuthCallsPerSub+1 || m > DefaultRoomAuthCallsPerSub+1 {
		t.Fatalf("%d of the user's questions reached the backend, at most %d in flight; want %d, at most %d", n, m, DefaultRoomAuthCallsPerSub+1, DefaultRoomAuthCallsPerSub+1)
	}
}

// TestRoomAuthEventsAsksAtOnce: the rooms of one /api/events request
// are asked about together, MaxCallsPerSub at a time: a backend that
// answers only once that many questions are in flight opens them all
// (asked one after another, each would wait for its timeout).
func TestRoomAuthEventsAsksAtOnce(t *testing.T) {
	const bound, rooms = 3, 7
	b := newRoomBackend(t)
	b.setReply(func(roomQuestion) (int, string) {
		for deadline := time.Now().Add(waitTimeout); b.maxInFlight.Load() < bound && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		return http.StatusOK, `{"allowed":true}`
	})
	e := roomEnv(t, b, RoomAuth{MaxCallsPerSub: bound, Timeout: 3 * time.Second})
	alice := token(t, "alice", RoleCustomer)
	q := make([]string, rooms)
	for i := range q {
		q[i] = "topic=rooms/r" + strconv.Itoa(i)
	}
	s := e.openStream(t, "/api/events?"+strings.Join(q, "&"), map[string]string{"Authorization": "Bearer " + alice})
	for range rooms {
		if ev := s.next(t); ev.Event != "snapshot" {
			t.Fatalf("got %+v, want a snapshot of each room", ev)
		}
	}
	if n, m := b.calls.Load(), b.maxInFlight.Load(); n != rooms || m != bound {
		t.Fatalf("%d questions, at most %d in flight; want %d, at most %d", n, m, rooms, bound)
	}
}

// stillClock is a Config.Now that stands still until the test moves it.
type stillClock struct {
	base   time.Time
	offset atomic.Int64
}

func newStillClock() *stillClock              { return &stillClock{base: time.Now()} }
func (c *stillClock) now() time.Time          { return c.base.Add(time.Duration(c.offset.Load())) }
func (c *stillClock) advance(d time.Duration) { c.offset.Add(int64(d)) }

// TestRoomAuthRecheckOutageGrace, on a clock the test moves (rechecks
// tick in real time, every Cache): an open stream whose room the
// backend granted keeps it while the backend cannot be asked, until its
// last yes is twice Cache old; then the room gets `refused` with 503.
func TestRoomAuthRecheckOutageGrace(t *testing.T) {
	const cache = 100 * time.Millisecond
	b := newRoomBackend(t, "alice kitchen read")
	clock := newStillClock()
	e := roomEnv(t, b, RoomAuth{Cache: cache}, func(c *Config) { c.Now = clock.now })
	alice := token(t, "alice", RoleCustomer)
	staff := token(t, "kitchen", RoleStaff, "*")
	s := e.openStream(t, "/api/rooms/kitchen/events", map[string]string{"Authorization": "Bearer " + alice})
	if ev := s.next(t); ev.Event != "snapshot" {
		t.Fatalf("got %+v, want the snapshot", ev)
	}

	b.setReply(func(roomQuestion) (int, string) { return http.StatusServiceUnavailable, "" })
	clock.advance(cache) // the yes has expired: the next recheck asks
	for deadline := time.Now().Add(waitTimeout); b.calls.Load() < 2; {
		if time.Now().After(deadline) {
			t.Fatal("the stream's room was not asked about again")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(3 * cache) // rechecks that (wrongly) withdraw
	e.expect(t, req{method: "POST", path: "/api/rooms/kitchen/messages", body: `{"text":"k1"}`, token: staff}, http.StatusCreated)
	if ev := s.next(t); ev.Event != "message" || !strings.Contains(ev.Data, "k1") {
		t.Fatalf("backend down, the yes one Cache old: got %+v, want message k1", ev)
	}

	clock.advance(cache) // the last yes is twice Cache old
	refused := `{"topic":"rooms/kitchen","status":503,"error":"` + msgRoomAuthDown + `"}`
	evs := s.ended(t)
	if len(evs) != 1 || evs[0].Event != "refused" || evs[0].Data != refused {
		t.Fatalf("backend down, the yes twice Cache old: got %+v, want refused %s and the end", evs, refused)
	}
}
