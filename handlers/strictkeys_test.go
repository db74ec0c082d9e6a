package handlers

import (
	"net/http"
	"strings"
	"testing"
)

// TestBodyFieldsExact: a field name matches only as written (encoding/json
// alone would take `Text` for `text`), and a key given twice is refused
// (it would keep the last), at the top and inside items; the same bodies
// written right are taken.
func TestBodyFieldsExact(t *testing.T) {
	e := newEnv(t, dev)
	for _, tc := range []struct {
		path, body string
		want       int
		errHas     string
	}{
		{"/api/rooms/lobby/messages", `{"text":"hi"}`, http.StatusCreated, ""},
		{"/api/rooms/lobby/messages", `{"Text":"hi"}`, http.StatusBadRequest, `unknown field "Text" (field names are case-sensitive: "text")`},
		{"/api/rooms/lobby/messages", `{"TEXT":"hi"}`, http.StatusBadRequest, `"TEXT"`},
		{"/api/rooms/lobby/messages", `{"text":"hi","text":"there"}`, http.StatusBadRequest, `field "text" is given twice`},
		{"/api/rooms/lobby/messages", `{"text":"a","author":"x","author":"y"}`, http.StatusBadRequest, `field "author" is given twice`},
		{"/api/orders", `{"customer":"alice","items":[{"sku":"pizza","qty":1}]}`, http.StatusCreated, ""},
		{"/api/orders", `{"Customer":"alice","items":[{"sku":"pizza","qty":1}]}`, http.StatusBadRequest, `"Customer"`},
		{"/api/orders", `{"customer":"alice","items":[{"sku":"pizza","Qty":1}]}`, http.StatusBadRequest, `unknown field "items[].Qty"`},
		{"/api/orders", `{"customer":"alice","items":[{"sku":"pizza","qty":1,"qty":2}]}`, http.StatusBadRequest, `field "items[].qty" is given twice`},
		{"/api/orders", `{"customer":"alice","customer":"bob","items":[{"sku":"pizza","qty":1}]}`, http.StatusBadRequest, `field "customer" is given twice`},
		// The largest valid order still passes the walk.
		{"/api/orders", `{"customer":"alice","items":[` + strings.Repeat(`{"sku":"`+strings.Repeat("s", 128)+`","qty":1000},`, 99) + `{"sku":"x","qty":1}]}`, http.StatusCreated, ""},
	} {
		r := e.do(t, req{method: "POST", path: tc.path, body: tc.body})
		if r.status != tc.want || (tc.errHas != "" && !strings.Contains(r.errText(), tc.errHas)) {
			t.Errorf("POST %s %.80s: %d %q; want %d naming %s", tc.path, tc.body, r.status, r.errText(), tc.want, tc.errHas)
		}
	}
	r := e.do(t, req{method: "PATCH", path: "/api/orders/000000000000000000000000", body: `{"Status":"preparing"}`})
	if r.status != http.StatusBadRequest || !strings.Contains(r.errText(), `"Status"`) {
		t.Errorf("PATCH with Status: %d %q; want 400 naming it", r.status, r.errText())
	}
}
