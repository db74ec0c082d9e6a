package handlers

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"testing/fstest"

	"changecast/store"
)

func TestOrderLifecycle(t *testing.T) {
	e := newEnv(t, dev)
	r := e.do(t, req{method: "POST", path: "/api/orders", body: `{"customer":"alice","items":[{"sku":"pizza","qty":2}]}`})
	mustStatus(t, r, http.StatusCreated)
	var o store.Order
	r.decode(t, &o)
	if !store.ValidOrderID(o.ID) || o.Customer != "alice" || o.Status != store.StatusPlaced || o.Version != 1 ||
		len(o.Items) != 1 || o.Items[0] != (store.Item{SKU: "pizza", Qty: 2}) {
		t.Fatalf("got order %+v, want alice's placed order of 2 pizza, version 1", o)
	}
	if got, want := r.header.Get("Location"), "/api/orders/"+o.ID; got != want {
		t.Errorf("got Location %q, want %q", got, want)
	}
	if got, want := r.header.Get("ETag"), `"1"`; got != want {
		t.Errorf("got ETag %q, want %q", got, want)
	}

	r = e.do(t, req{method: "GET", path: "/api/orders/" + o.ID})
	mustStatus(t, r, http.StatusOK)
	var got store.Order
	r.decode(t, &got)
	if got.ID != o.ID || got.Version != 1 {
		t.Fatalf("GET: got %+v, want the created order", got)
	}

	// Through the whole status machine, one version at a time, with and
	// without If-Match (bare and quoted).
	steps := []struct {
		status, ifMatch string
	}{
		{store.StatusPreparing, `"1"`},
		{store.StatusOutForDelivery, ""},
		{store.StatusDelivered, "3"},
	}
	for i, st := range steps {
		h := map[string]string{}
		if st.ifMatch != "" {
			h["If-Match"] = st.ifMatch
		}
		r = e.do(t, req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"` + st.status + `"}`, header: h})
		mustStatus(t, r, http.StatusOK)
		r.decode(t, &got)
		if got.Status != st.status || got.Version != int64(i+2) {
			t.Fatalf("step %d: got status %s version %d, want %s version %d", i, got.Status, got.Version, st.status, i+2)
		}
		if want := fmt.Sprintf(`"%d"`, i+2); r.header.Get("ETag") != want {
			t.Errorf("step %d: got ETag %q, want %q", i, r.header.Get("ETag"), want)
		}
	}

	// Delivered is final: 409, and nothing written.
	before := e.head(t)
	r = e.do(t, req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"cancelled"}`})
	mustStatus(t, r, http.StatusConflict)
	if got, want := r.errText(), "cannot move an order from delivered to cancelled"; got != want {
		t.Errorf("got error %q, want %q", got, want)
	}
	if e.head(t) != before {
		t.Error("a refused transition moved the log")
	}
}

func TestPatchIfMatch(t *testing.T) {
	e := newEnv(t, dev)
	o := e.createOrder(t, "alice")
	path := "/api/orders/" + o.ID
	tests := []struct {
		ifMatch    string
		wantStatus int
	}{
		{`"2"`, http.StatusPreconditionFailed},
		{"7", http.StatusPreconditionFailed},
		{"x", http.StatusBadRequest},
		{`W/"1"`, http.StatusBadRequest},
		{"0", http.StatusBadRequest},
		{"-1", http.StatusBadRequest},
		{`"1", "2"`, http.StatusBadRequest},
		{`""`, http.StatusBadRequest},
		{"99999999999999999999", http.StatusBadRequest},
		{`"1"`, http.StatusOK},
		{`"1"`, http.StatusPreconditionFailed}, // now version 2
		{"*", http.StatusOK},
	}
	status := []string{store.StatusPreparing, store.StatusOutForDelivery}
	next := 0
	for _, tt := range tests {
		r := e.do(t, req{method: "PATCH", path: path, body: `{"status":"` + status[next] + `"}`, header: map[string]string{"If-Match": tt.ifMatch}})
		if r.status != tt.wantStatus {
			t.Errorf("If-Match %s: got %d %s, want %d", tt.ifMatch, r.status, r.body, tt.wantStatus)
		}
		if r.errText() == "" && r.status != http.StatusOK {
			t.Errorf("If-Match %s: got body %s, want a JSON error", tt.ifMatch, r.body)
		}
		if r.status == http.StatusOK {
			next++
		}
	}
}

func TestParseIfMatch(t *testing.T) {
	tests := []struct {
		in     []string
		want   int64
		wantOK bool
	}{
		{nil, 0, true},
		{[]string{"*"}, 0, true},
		{[]string{"3"}, 3, true},
		{[]string{`"3"`}, 3, true},
		{[]string{` "42" `}, 42, true},
		{[]string{"+3"}, 0, false},
		{[]string{`"3`}, 0, false},
		{[]string{"3", "4"}, 0, false},
		{[]string{""}, 0, false},
		{[]string{"3.0"}, 0, false},
	}
	for _, tt := range tests {
		got, err := parseIfMatch(tt.in)
		if got != tt.want || (err == nil) != tt.wantOK {
			t.Errorf("parseIfMatch(%q): got %d, %v; want %d, ok %t", tt.in, got, err, tt.want, tt.wantOK)
		}
	}
}

func TestMessages(t *testing.T) {
	e := newEnv(t, dev)
	var ids []string
	for i := range 5 {
		r := e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: fmt.Sprintf(`{"text":"hi %d"}`, i)})
		mustStatus(t, r, http.StatusCreated)
		var m store.Message
		r.decode(t, &m)
		if m.Room != "lobby" || m.Author != "dev" || m.Text != fmt.Sprintf("hi %d", i) || !store.ValidOrderID(m.ID) {
			t.Fatalf("got message %+v, want dev's hi %d in lobby", m, i)
		}
		ids = append(ids, m.ID)
	}
	// Dev mode takes the body's author.
	r := e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"yo","author":"bob"}`})
	mustStatus(t, r, http.StatusCreated)
	var m store.Message
	r.decode(t, &m)
	if m.Author != "bob" {
		t.Errorf("dev mode: got author %q, want bob", m.Author)
	}
	ids = append(ids, m.ID)

	page := func(query string) []string {
		t.Helper()
		r := e.do(t, req{method: "GET", path: "/api/rooms/lobby/messages" + query})
		mustStatus(t, r, http.StatusOK)
		var p messagesPage
		r.decode(t, &p)
		var got []string
		for _, m := range p.Messages {
			got = append(got, m.ID)
		}
		return got
	}
	if got := page(""); fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Errorf("all: got %v, want %v", got, ids)
	}
	if got := page("?limit=2"); fmt.Sprint(got) != fmt.Sprint(ids[4:]) {
		t.Errorf("limit=2: got %v, want %v", got, ids[4:])
	}
	if got := page("?limit=2&before=" + ids[4]); fmt.Sprint(got) != fmt.Sprint(ids[2:4]) {
		t.Errorf("limit=2 before 4: got %v, want %v", got, ids[2:4])
	}
	r = e.do(t, req{method: "GET", path: "/api/rooms/empty/messages"})
	mustStatus(t, r, http.StatusOK)
	if got := strings.TrimSpace(string(r.body)); got != `{"messages":[]}` {
		t.Errorf("empty room: got %s, want {\"messages\":[]}", got)
	}
}

// TestErrors checks each route's error answers in dev mode: the status,
// a JSON error naming the problem, and that nothing was written.
func TestErrors(t *testing.T) {
	e := newEnv(t, dev)
	o := e.createOrder(t, "alice")
	orderPath := "/api/orders/" + o.ID
	unknown := "/api/orders/0123456789abcdef01234567"
	bigText := strings.Repeat("x", store.MaxTextLen+1)

	tests := []struct {
		name       string
		r          req
		wantStatus int
		wantErr    string
	}{
		{"bad JSON", req{method: "POST", path: "/api/orders", body: `{"customer":`}, 400, "not complete JSON"},
		{"syntax", req{method: "POST", path: "/api/orders", body: `{customer}`}, 400, "not valid JSON"},
		{"unknown field", req{method: "POST", path: "/api/orders", body: `{"customer":"a","items":[{"sku":"p","qty":1}],"x":1}`}, 400, `unknown field "x"`},
		{"unknown nested field", req{method: "POST", path: "/api/orders", body: `{"customer":"a","items":[{"sku":"p","qty":1,"price":3}]}`}, 400, `unknown field "price"`},
		{"trailing data", req{method: "POST", path: "/api/orders", body: `{"customer":"a","items":[{"sku":"p","qty":1}]} {}`}, 400, "after the JSON value"},
		{"wrong type", req{method: "POST", path: "/api/orders", body: `{"customer":1,"items":[]}`}, 400, `"customer" must be a JSON string`},
		{"not an object", req{method: "POST", path: "/api/orders", body: `[1]`}, 400, "must be a JSON object"},
		{"no items", req{method: "POST", path: "/api/orders", body: `{"customer":"a","items":[]}`}, 400, "items"},
		{"no customer", req{method: "POST", path: "/api/orders", body: `{"items":[{"sku":"p","qty":1}]}`}, 400, "customer"},
		{"qty 0", req{method: "POST", path: "/api/orders", body: `{"customer":"a","items":[{"sku":"p","qty":0}]}`}, 400, "qty"},
		{"fractional qty", req{method: "POST", path: "/api/orders", body: `{"customer":"a","items":[{"sku":"p","qty":1.5}]}`}, 400, "qty"},
		{"empty body", req{method: "POST", path: "/api/orders", header: map[string]string{"Content-Type": "application/json"}}, 400, "empty"},
		{"no content type", req{method: "POST", path: "/api/orders", body: `{}`, header: map[string]string{"Content-Type": ""}}, 415, "application/json"},
		{"text/plain", req{method: "POST", path: "/api/orders", body: `{}`, header: map[string]string{"Content-Type": "text/plain"}}, 415, "application/json"},
		{"form", req{method: "POST", path: "/api/rooms/lobby/messages", body: `text=hi`, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415, "application/json"},
		{"latin1", req{method: "POST", path: "/api/orders", body: `{}`, header: map[string]string{"Content-Type": "application/json; charset=latin1"}}, 415, "UTF-8"},
		{"get unknown order", req{method: "GET", path: unknown}, 404, msgOrderNotFound},
		{"get malformed id", req{method: "GET", path: "/api/orders/xyz"}, 404, msgOrderNotFound},
		{"patch unknown order", req{method: "PATCH", path: unknown, body: `{"status":"preparing"}`}, 404, msgOrderNotFound},
		{"patch malformed id", req{method: "PATCH", path: "/api/orders/ZZ", body: `{"status":"preparing"}`}, 404, msgOrderNotFound},
		{"patch no status", req{method: "PATCH", path: orderPath, body: `{}`}, 400, "status is required"},
		{"patch unknown status", req{method: "PATCH", path: orderPath, body: `{"status":"eaten"}`}, 400, "unknown status"},
		{"patch skip", req{method: "PATCH", path: orderPath, body: `{"status":"delivered"}`}, 409, "cannot move an order from placed to delivered"},
		{"patch same", req{method: "PATCH", path: orderPath, body: `{"status":"placed"}`}, 409, "already placed"},
		{"patch unknown field", req{method: "PATCH", path: orderPath, body: `{"status":"preparing","version":2}`}, 400, "unknown field"},
		{"patch bad If-Match", req{method: "PATCH", path: orderPath, body: `{"status":"preparing"}`, header: map[string]string{"If-Match": "v1"}}, 400, "If-Match"},
		{"patch stale If-Match", req{method: "PATCH", path: orderPath, body: `{"status":"preparing"}`, header: map[string]string{"If-Match": `"5"`}}, 412, "version mismatch"},
		{"bad room", req{method: "POST", path: "/api/rooms/Lobby/messages", body: `{"text":"hi"}`}, 400, "room"},
		{"room too long", req{method: "GET", path: "/api/rooms/" + strings.Repeat("a", 65) + "/messages"}, 400, "room"},
		{"empty text", req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":""}`}, 400, "text"},
		{"long text", req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"` + bigText + `"}`}, 400, "text"},
		{"message unknown field", req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"hi","room":"x"}`}, 400, "unknown field"},
		{"limit 0", req{method: "GET", path: "/api/rooms/lobby/messages?limit=0"}, 400, "limit"},
		{"limit 201", req{method: "GET", path: "/api/rooms/lobby/messages?limit=201"}, 400, "limit"},
		{"limit x", req{method: "GET", path: "/api/rooms/lobby/messages?limit=x"}, 400, "limit"},
		{"bad before", req{method: "GET", path: "/api/rooms/lobby/messages?before=zz"}, 400, "before"},
		{"order stream unknown", req{method: "GET", path: unknown + "/events"}, 404, msgOrderNotFound},
		{"order stream malformed", req{method: "GET", path: "/api/orders/nope/events"}, 404, msgOrderNotFound},
		{"room stream bad room", req{method: "GET", path: "/api/rooms/-x/events"}, 400, "room"},
		{"events no topic", req{method: "GET", path: "/api/events"}, 400, "topic"},
		{"events bad topic", req{method: "GET", path: "/api/events?topic=users/1"}, 400, "topic"},
		{"events bad room topic", req{method: "GET", path: "/api/events?topic=rooms/A"}, 400, "topic"},
		{"events unknown order alone", req{method: "GET", path: "/api/events?topic=orders/0123456789abcdef01234567"}, 404, msgOrderNotFound},
		{"events malformed only", req{method: "GET", path: "/api/events?topic=orders/x&topic=rooms/A"}, 400, "none of these topics"},
		{"unknown route", req{method: "GET", path: "/api/nothing"}, 404, "no such route"},
		{"method not allowed", req{method: "DELETE", path: orderPath}, 405, "not allowed"},
		{"put not allowed", req{method: "PUT", path: "/api/orders", body: `{}`}, 405, "not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := e.head(t)
			r := e.do(t, tt.r)
			if r.status != tt.wantStatus || !strings.Contains(r.errText(), tt.wantErr) {
				t.Errorf("%s %s: got %d %s, want %d with error containing %q", tt.r.method, tt.r.path, r.status, r.body, tt.wantStatus, tt.wantErr)
			}
			if got := r.header.Get("Content-Type"); !strings.HasPrefix(got, "application/json") {
				t.Errorf("got Content-Type %q, want JSON", got)
			}
			if e.head(t) != before {
				t.Errorf("a refused request moved the log")
			}
		})
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, dev)
	// A valid order padded with whitespace to exactly MaxBodyBytes is read.
	valid := `{"customer":"alice","items":[{"sku":"pizza","qty":1}]}`
	exact := valid + strings.Repeat(" ", MaxBodyBytes-len(valid))
	r := e.do(t, req{method: "POST", path: "/api/orders", body: exact})
	mustStatus(t, r, http.StatusCreated)

	before := e.head(t)
	over := exact + " "
	r = e.do(t, req{method: "POST", path: "/api/orders", body: over})
	if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(r.errText(), "larger than 65536") {
		t.Errorf("Content-Length %d: got %d %s, want 413", len(over), r.status, r.body)
	}

	// Without a Content-Length (chunked), the limit holds while reading.
	hr, err := http.NewRequest("POST", e.url+"/api/rooms/lobby/messages", struct{ *strings.Reader }{strings.NewReader(`{"text":"` + strings.Repeat("y", MaxBodyBytes) + `"}`)})
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/json")
	r = send(t, hr)
	if r.status != http.StatusRequestEntityTooLarge || r.errText() == "" {
		t.Errorf("chunked: got %d %s, want 413 with a JSON error", r.status, r.body)
	}
	if e.head(t) != before {
		t.Error("a body over the limit was written")
	}
}

func TestStaticAndMetrics(t *testing.T) {
	static := fstest.MapFS{
		"index.html": {Data: []byte("<h1>changecast</h1>")},
		"app.js":     {Data: []byte("console.log(1)")},
	}
	metrics := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "up 1\n") })
	e := newEnv(t, dev, func(c *Config) { c.Static = static; c.Metrics = metrics })
	tests := []struct {
		path, want string
		status     int
	}{
		{"/", "<h1>changecast</h1>", 200},
		{"/app.js", "console.log(1)", 200},
		{"/metrics", "up 1\n", 200},
		{"/missing.css", "", 404},
		{"/api/missing", `{"error":"no such route"}` + "\n", 404},
	}
	for _, tt := range tests {
		r := e.do(t, req{method: "GET", path: tt.path})
		if r.status != tt.status || (tt.want != "" && string(r.body) != tt.want) {
			t.Errorf("GET %s: got %d %q, want %d %q", tt.path, r.status, r.body, tt.status, tt.want)
		}
	}
	// HEAD answers like GET, without a body, on pages and health checks.
	for _, tt := range []struct {
		path, contentType string
		status            int
	}{
		{"/", "text/html", 200},
		{"/healthz", "", 200},
		{"/readyz", "application/json", 200},
		{"/missing.css", "", 404},
	} {
		r := e.do(t, req{method: "HEAD", path: tt.path})
		if r.status != tt.status || len(r.body) != 0 || !strings.HasPrefix(r.header.Get("Content-Type"), tt.contentType) {
			t.Errorf("HEAD %s: got %d, Content-Type %q, body %q; want %d, %q, no body", tt.path, r.status, r.header.Get("Content-Type"), r.body, tt.status, tt.contentType)
		}
	}
}

func TestInvalidUTF8BodyRejected(t *testing.T) {
	e := newEnv(t, dev)
	before := e.head(t)
	req, _ := http.NewRequest("POST", e.url+"/api/rooms/lobby/messages", strings.NewReader("{\"text\":\"\xff\xfe\",\"author\":\"a\"}"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("invalid UTF-8 text: status %d, want 400", resp.StatusCode)
	}
	if after := e.head(t); after != before {
		t.Fatalf("a rejected write moved the log from %s to %s", before, after)
	}
}

// TestErrorMessages: the exact answer to each kind of client mistake: a
// sentence for people, never a Go error chain, with < and > as they are;
// a refused status change lists the statuses the caller may move the
// order to (docs/api.md).
func TestErrorMessages(t *testing.T) {
	e := newEnv(t)
	staff := token(t, "kitchen", RoleStaff, "*")
	alice := token(t, "alice", RoleCustomer, "lobby")
	placed := e.createOrder(t, "alice")
	preparing := e.createOrder(t, "alice")
	onTheWay := e.createOrder(t, "alice")
	delivered := e.createOrder(t, "alice")
	for _, step := range []struct {
		o     store.Order
		moves []string
	}{
		{preparing, []string{"preparing"}},
		{onTheWay, []string{"preparing", "out_for_delivery"}},
		{delivered, []string{"preparing", "out_for_delivery", "delivered"}},
	} {
		for _, st := range step.moves {
			mustStatus(t, e.do(t, req{method: "PATCH", path: "/api/orders/" + step.o.ID, body: `{"status":"` + st + `"}`, token: staff}), http.StatusOK)
		}
	}
	patch := func(o store.Order, status, tok string) req {
		return req{method: "PATCH", path: "/api/orders/" + o.ID, body: `{"status":"` + status + `"}`, token: tok}
	}
	manyTopics := "/api/events?topic=rooms/lobby"
	for i := range 33 {
		manyTopics += fmt.Sprintf("&topic=rooms/r%d", i)
	}

	tests := []struct {
		name       string
		r          req
		wantStatus int
		wantBody   string
	}{
		{"staff moves back", patch(onTheWay, "placed", staff), 409,
			`{"error":"cannot move an order from out_for_delivery to placed","allowed":["delivered"]}`},
		{"staff skips", patch(placed, "delivered", staff), 409,
			`{"error":"cannot move an order from placed to delivered","allowed":["preparing","cancelled"]}`},
		{"staff moves a final order", patch(delivered, "cancelled", staff), 409,
			`{"error":"cannot move an order from delivered to cancelled","allowed":[]}`},
		{"staff repeats the status", patch(preparing, "preparing", staff), 409,
			`{"error":"the order is already preparing","allowed":["out_for_delivery","cancelled"]}`},
		{"customer moves", patch(placed, "preparing", alice), 403,
			`{"error":"a customer may only cancel an order, not move it to preparing","allowed":["cancelled"]}`},
		{"customer cancels late", patch(preparing, "cancelled", alice), 403,
			`{"error":"a customer may only cancel a placed order, and this one is preparing","allowed":[]}`},
		{"unknown status", patch(placed, "eaten", staff), 400,
			`{"error":"unknown status \"eaten\": a status is one of placed, preparing, out_for_delivery, delivered, cancelled"}`},
		{"no items", req{method: "POST", path: "/api/orders", body: `{"customer":"a","items":[]}`, token: staff}, 400,
			`{"error":"items must not be empty"}`},
		{"qty 0", req{method: "POST", path: "/api/orders", body: `{"customer":"a","items":[{"sku":"p","qty":0}]}`, token: staff}, 400,
			`{"error":"items[0].qty must be 1 to 1000"}`},
		{"no customer", req{method: "POST", path: "/api/orders", body: `{"items":[{"sku":"p","qty":1}]}`, token: staff}, 400,
			`{"error":"customer is required"}`},
		{"empty text", req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":""}`, token: alice}, 400,
			`{"error":"text must be 1 to 4000 characters"}`},
		{"bad room", req{method: "GET", path: "/api/rooms/Lobby/messages", token: alice}, 400,
			`{"error":"a room name is 1 to 64 characters of a-z, 0-9, _ and -, and starts with a-z or 0-9"}`},
		{"no topic", req{method: "GET", path: "/api/events", token: alice}, 400,
			`{"error":"at least one topic is required: topic=orders/<id>, rooms/<room>, orders or customers/<sub>"}`},
		{"bad topic", req{method: "GET", path: "/api/events?topic=users/1", token: alice}, 400,
			`{"error":"topic \"users/1\" is not orders/<id>, rooms/<room>, orders or customers/<sub>","refused":[{"topic":"users/1","status":400,"error":"topic \"users/1\" is not orders/<id>, rooms/<room>, orders or customers/<sub>"}]}`},
		{"too many topics", req{method: "GET", path: manyTopics, token: staff}, 400,
			`{"error":"a stream carries at most 32 topics"}`},
		{"unknown route", req{method: "GET", path: "/api/nothing", token: alice}, 404, `{"error":"no such route"}`},
		{"method not allowed", req{method: "DELETE", path: "/api/orders/" + placed.ID, token: alice}, 405,
			`{"error":"this method is not allowed on this route"}`},
		{"stale If-Match", req{method: "PATCH", path: "/api/orders/" + placed.ID, body: `{"status":"preparing"}`, token: staff,
			header: map[string]string{"If-Match": "7"}}, 412, `{"error":"version mismatch: the order has changed; read it again"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, tt.r)
			if r.status != tt.wantStatus || string(r.body) != tt.wantBody+"\n" {
				t.Errorf("%s %s: got %d %s, want %d %s", tt.r.method, tt.r.path, r.status, r.body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}
