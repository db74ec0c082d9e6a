package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"changecast/internal/sseclient"
	"changecast/protocol"
	"changecast/store"
)

func payload(tb testing.TB, ev sseclient.Event) protocol.Payload {
	tb.Helper()
	var p protocol.Payload
	if err := json.Unmarshal(ev.Data, &p); err != nil {
		tb.Fatalf("event %s %s: bad JSON %q: %v", ev.Name, ev.ID, ev.Data, err)
	}
	return p
}

func createOrder(tb testing.TB, base, customer string) store.Order {
	tb.Helper()
	var o store.Order
	body := map[string]any{"customer": customer, "items": []map[string]any{{"sku": "pizza", "qty": 1}}}
	if st, h := doJSON(tb, "POST", base+"/api/orders", body, nil, &o); st != http.StatusCreated || h.Get("Location") != "/api/orders/"+o.ID {
		tb.Fatalf("create order: status %d, Location %q; want 201 and /api/orders/%s", st, h.Get("Location"), o.ID)
	}
	return o
}

func setStatus(tb testing.TB, base, id, status string) store.Order {
	tb.Helper()
	var o store.Order
	if st, _ := doJSON(tb, "PATCH", base+"/api/orders/"+id, map[string]string{"status": status}, nil, &o); st != http.StatusOK {
		tb.Fatalf("PATCH %s to %s: status %d, want 200", id, status, st)
	}
	return o
}

func postMessage(tb testing.TB, base, room, text string) store.Message {
	tb.Helper()
	var m store.Message
	if st, _ := doJSON(tb, "POST", base+"/api/rooms/"+room+"/messages", map[string]string{"text": text, "author": "tester"}, nil, &m); st != http.StatusCreated {
		tb.Fatalf("post to %s: status %d, want 201", room, st)
	}
	return m
}

// checkOrdered fails unless ids strictly increase (positions order like
// the log) — which also means no event came twice.
func checkOrdered(tb testing.TB, evs []sseclient.Event) {
	tb.Helper()
	for i := 1; i < len(evs); i++ {
		if evs[i].ID <= evs[i-1].ID && evs[i].Name != "snapshot" && evs[i-1].Name != "reset" {
			tb.Fatalf("event %d id %q does not follow %q:%s", i, evs[i].ID, evs[i-1].ID, describe(evs))
		}
	}
}

func TestOrderLifecycleEndToEnd(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	o := createOrder(t, s.URL, "alice")
	if o.Status != store.StatusPlaced || o.Version != 1 || len(o.ID) != 24 {
		t.Fatalf("new order = %+v; want placed, version 1, 24-hex id", o)
	}
	w := watch(t, s.URL+"/api/orders/"+o.ID+"/events", "")
	snap := w.WaitN(t, 1)[0]
	if p := payload(t, snap); snap.Name != "snapshot" || p.Order == nil || p.Order.Version != 1 || p.Topic != "orders/"+o.ID {
		t.Fatalf("first event = %s %s; want a snapshot of version 1", snap.Name, snap.Data)
	}
	statuses := []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered}
	for _, st := range statuses {
		setStatus(t, s.URL, o.ID, st)
	}
	evs := w.WaitN(t, 1+len(statuses))
	checkOrdered(t, evs)
	for i, st := range statuses {
		ev := evs[1+i]
		p := payload(t, ev)
		if ev.Name != "order" || p.Op != store.OpUpdate || p.Order.Status != st || p.Order.Version != int64(2+i) {
			t.Errorf("event %d = %s %s; want order update to %s version %d", 1+i, ev.Name, ev.Data, st, 2+i)
		}
	}
	// Delivered is final: nothing else moves it, and no event is sent.
	if st, _ := doJSON(t, "PATCH", s.URL+"/api/orders/"+o.ID, map[string]string{"status": "cancelled"}, nil, nil); st != http.StatusConflict {
		t.Errorf("cancel a delivered order: status %d, want 409", st)
	}
	var got store.Order
	doJSON(t, "GET", s.URL+"/api/orders/"+o.ID, nil, nil, &got)
	if got.Status != store.StatusDelivered || got.Version != 4 {
		t.Errorf("GET order = %+v; want delivered version 4", got)
	}
	if n := len(w.Events()); n != 4 {
		t.Errorf("got %d events, want 4:%s", n, describe(w.Events()))
	}
}

// TestResumeEndToEnd drops a stream mid-way, writes more, and reconnects
// with the last id three ways: the Last-Event-ID header, the lastEventId
// query parameter, and one id on the multi-topic stream.
func TestResumeEndToEnd(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	const missed = 25
	for _, tc := range []struct {
		name string
		// url builds the stream URL for a room and an order.
		url func(room, order string) string
		// byQuery passes the id as lastEventId instead of the header.
		byQuery bool
	}{
		{"header", func(room, _ string) string { return s.URL + "/api/rooms/" + room + "/events" }, false},
		{"query", func(room, _ string) string { return s.URL + "/api/rooms/" + room + "/events" }, true},
		{"multi-topic", func(room, order string) string {
			return s.URL + "/api/events?topic=" + url.QueryEscape("rooms/"+room) + "&topic=" + url.QueryEscape("orders/"+order)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			room := "resume-" + tc.name
			o := createOrder(t, s.URL, "bob")
			first := watch(t, tc.url(room, o.ID), "")
			first.WaitN(t, 1)
			postMessage(t, s.URL, room, "before the drop")
			evs := first.WaitFor(t, "the first message", func(evs []sseclient.Event) bool { return len(evs) > 0 && evs[len(evs)-1].Name == "message" })
			first.Stop(t)
			last := evs[len(evs)-1].ID

			var want []string
			for i := range missed {
				text := fmt.Sprintf("missed %d", i)
				postMessage(t, s.URL, room, text)
				want = append(want, "message:"+text)
				if tc.name == "multi-topic" && i == missed/2 {
					setStatus(t, s.URL, o.ID, store.StatusPreparing)
					want = append(want, "order:preparing")
				}
			}

			u, id := tc.url(room, o.ID), last
			if tc.byQuery {
				u, id = u+"?lastEventId="+url.QueryEscape(last), ""
			}
			second := watch(t, u, id)
			second.WaitN(t, len(want))
			postMessage(t, s.URL, room, "live after resume")
			want = append(want, "message:live after resume")
			got := second.WaitN(t, len(want))
			checkOrdered(t, append([]sseclient.Event{evs[len(evs)-1]}, got...))
			for i, ev := range got {
				p := payload(t, ev)
				var g string
				switch ev.Name {
				case "message":
					g = "message:" + p.Message.Text
				case "order":
					g = "order:" + p.Order.Status
				default:
					g = ev.Name
				}
				if i >= len(want) || g != want[i] {
					t.Fatalf("resumed event %d = %q; want exactly the missed events in order: %q\n%s", i, g, want, describe(got))
				}
			}
		})
	}
}

// TestBadIDsEndToEnd: an id that is garbage, from another deployment, or
// from the future never gets a non-200 answer: reset, snapshot, then live.
func TestBadIDsEndToEnd(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	postMessage(t, s.URL, "lobby", "already here")
	for _, id := range []string{"garbage", "0", strings.Repeat("f", 600), "deadbeef-0000000000000001", "\u00e9t\u00e9"} {
		t.Run(fmt.Sprintf("%.20q", id), func(t *testing.T) {
			u := s.URL + "/api/rooms/lobby/events?lastEventId=" + url.QueryEscape(id)
			resp, err := http.Get(u)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("status %d %q; want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			w := watch(t, u, "")
			evs := w.WaitN(t, 2)
			if evs[0].Name != "reset" || payload(t, evs[0]).Reason != "invalid-id" {
				t.Fatalf("first event %s %s; want reset invalid-id", evs[0].Name, evs[0].Data)
			}
			if p := payload(t, evs[1]); evs[1].Name != "snapshot" || len(p.Messages) == 0 || p.Messages[0].Text != "already here" {
				t.Fatalf("second event %s %s; want the room's snapshot", evs[1].Name, evs[1].Data)
			}
			m := postMessage(t, s.URL, "lobby", "live "+id)
			evs = w.WaitN(t, 3)
			if p := payload(t, evs[2]); evs[2].Name != "message" || p.Message.ID != m.ID {
				t.Fatalf("third event %s %s; want the live message", evs[2].Name, evs[2].Data)
			}
		})
	}
}

// tryPost posts a message and returns an error instead of failing, for
// use off the test goroutine.
func tryPost(base, room, text string) error {
	body := strings.NewReader(fmt.Sprintf(`{"text":%q,"author":"tester"}`, text))
	resp, err := http.Post(base+"/api/rooms/"+room+"/messages", "application/json", body)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("post to %s: status %d, want 201", room, resp.StatusCode)
	}
	return nil
}
