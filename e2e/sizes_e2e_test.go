package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"unicode/utf8"

	"changecast/internal/sseclient"
	"changecast/store"
)

// sizeChars are the characters records are made of: 1, 2, 3 and 4 bytes
// of UTF-8, and one JSON writes as 6 bytes (\u003c).
var sizeChars = []string{"a", "é", "€", "\U0001F600", "<"}

// fill returns ch repeated to n characters.
func repeatTo(ch string, n int) string { return strings.Repeat(ch, n) }

// fitBytes returns ch repeated to as many characters as fit in n bytes
// (at least one).
func fitBytes(ch string, n int) string { return strings.Repeat(ch, max(1, n/len(ch))) }

// sendJSON sends body as JSON the way a browser's JSON.stringify does
// (<, > and & as they are, not as \u003c: Go's json.Marshal would make a
// 100-item order of 128 '<' past the 64 KiB body limit) and decodes a 2xx
// answer into out. It returns the status.
func sendJSON(tb testing.TB, method, url string, body, out any) int {
	tb.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		tb.Fatal(err)
	}
	req, err := http.NewRequest(method, url, &b)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 300 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			tb.Fatalf("%s %s: decode: %v", method, url, err)
		}
	}
	return resp.StatusCode
}

// sizedRecords is what one round of TestRecordSizesSurviveRestarts wrote.
type sizedRecords struct {
	orders   map[string]store.Order   // by id, as last acknowledged
	messages map[string]store.Message // by id
}

// writeSizes writes, through HTTP, messages of every size the API
// accepts (1 to 4,000 characters of each width, authors of 1 to 128
// bytes, in a one-letter room and a 64-letter one) and orders of 1 to
// 100 items with SKUs and customers of 1 to 128 bytes and quantities of
// 1 to 1,000, moved along their status machine so their histories
// grow. tag tells one round's records from another's. It returns how
// many writes it made.
func writeSizes(tb testing.TB, base, tag string, rooms []string, into *sizedRecords) int {
	tb.Helper()
	n, writes := 0, 0
	for _, ch := range sizeChars {
		for _, chars := range []int{1, 2, 255, 1023, 1024, 1025, 2048, 3999, store.MaxTextLen} {
			text := repeatTo(ch, chars) // short ones repeat across rounds: ids tell them apart
			if tagged := utf8.RuneCountInString(tag); chars > tagged {
				text = tag + repeatTo(ch, chars-tagged)
			}
			author := fitBytes(ch, []int{1, 64, 127, store.MaxNameLen}[n%4])
			var m store.Message
			if st := sendJSON(tb, "POST", base+"/api/rooms/"+rooms[n%len(rooms)]+"/messages",
				map[string]string{"text": text, "author": author}, &m); st != http.StatusCreated {
				tb.Fatalf("post %d characters of %q: status %d", chars, ch, st)
			}
			into.messages[m.ID] = m
			writes++
			n++
		}
	}
	for _, ch := range sizeChars {
		for _, items := range []int{1, 2, 50, 99, store.MaxItems} {
			for _, skuBytes := range []int{1, store.MaxNameLen} {
				var its []store.Item
				for k := range items {
					its = append(its, store.Item{SKU: fitBytes(ch, skuBytes), Qty: []int{1, 7, store.MaxQty}[k%3]})
				}
				customer := tag + fitBytes(ch, store.MaxNameLen-len(tag))
				var o store.Order
				if st := sendJSON(tb, "POST", base+"/api/orders", map[string]any{"customer": customer, "items": its}, &o); st != http.StatusCreated {
					tb.Fatalf("create an order of %d items of %d-byte SKUs of %q: status %d", items, skuBytes, ch, st)
				}
				steps := []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered}
				for _, st := range steps[:n%4] {
					o = setStatus(tb, base, o.ID, st)
				}
				into.orders[o.ID] = o
				writes += int(o.Version)
				n++
			}
		}
	}
	return writes
}

// writeBoard writes n active orders of the largest size, their SKUs all
// '<' (6 bytes of JSON each): together the largest snapshot of the
// orders list.
func writeBoard(tb testing.TB, base string, n int, into *sizedRecords) {
	tb.Helper()
	its := make([]store.Item, store.MaxItems)
	for k := range its {
		its[k] = store.Item{SKU: repeatTo("<", store.MaxNameLen), Qty: store.MaxQty}
	}
	for i := range n {
		var o store.Order
		customer := fmt.Sprintf("board-%d-", i) + repeatTo("<", store.MaxNameLen-len(fmt.Sprintf("board-%d-", i)))
		if st := sendJSON(tb, "POST", base+"/api/orders", map[string]any{"customer": customer, "items": its}, &o); st != http.StatusCreated {
			tb.Fatalf("create board order %d: status %d", i, st)
		}
		into.orders[o.ID] = o
	}
}

// sameOrder reports whether two orders are the same record.
func sameOrder(a, b store.Order) bool {
	return a.ID == b.ID && a.Customer == b.Customer && slices.Equal(a.Items, b.Items) && a.Status == b.Status &&
		a.Version == b.Version && len(a.History) == len(b.History) && a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt)
}

// readBack checks that the server at base holds every record of want:
// each order by GET, each message by paging its room, the changes since
// start by a stream resumed from it (exactly live, event for event, as
// the live stream gave them), and the orders board's snapshot.
func readBack(t *testing.T, base, after string, topics string, want *sizedRecords, live []sseclient.Event) {
	t.Helper()
	for id, o := range want.orders {
		var got store.Order
		if st, _ := doJSON(t, "GET", base+"/api/orders/"+id, nil, nil, &got); st != http.StatusOK || !sameOrder(got, o) {
			t.Errorf("GET order %s (%d items): status %d, %s %d items, want %s %d items", id, len(o.Items), st, got.Status, len(got.Items), o.Status, len(o.Items))
		}
	}
	found := 0
	for _, room := range roomsOf(want) {
		for before := ""; ; {
			var page struct{ Messages []store.Message }
			url := base + "/api/rooms/" + room + "/messages?limit=200"
			if before != "" {
				url += "&before=" + before
			}
			if st, _ := doJSON(t, "GET", url, nil, nil, &page); st != http.StatusOK {
				t.Fatalf("list %s: status %d", room, st)
			}
			for _, m := range page.Messages {
				if w, ok := want.messages[m.ID]; ok {
					found++
					if m.Text != w.Text || m.Author != w.Author || !m.CreatedAt.Equal(w.CreatedAt) {
						t.Errorf("message %s came back as %d bytes by %d bytes, want %d by %d", m.ID, len(m.Text), len(m.Author), len(w.Text), len(w.Author))
					}
				}
			}
			if len(page.Messages) < 200 {
				break
			}
			before = page.Messages[0].ID
		}
	}
	if found != len(want.messages) {
		t.Errorf("listed %d of the %d messages written", found, len(want.messages))
	}

	resumed := watch(t, base+"/api/events?"+topics, after)
	last := live[len(live)-1].ID
	got := resumed.WaitFor(t, "the resumed stream to reach "+last, func(evs []sseclient.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].ID >= last
	})
	resumed.Stop(t)
	if len(got) != len(live) {
		t.Errorf("resumed from %s: %d events, the live stream gave %d", after, len(got), len(live))
	}
	for i := range min(len(got), len(live)) {
		if got[i].ID != live[i].ID || got[i].Name != live[i].Name || !bytes.Equal(got[i].Data, live[i].Data) {
			t.Fatalf("resumed event %d: %s %s (%d bytes), live %s %s (%d bytes)", i, got[i].Name, got[i].ID, len(got[i].Data), live[i].Name, live[i].ID, len(live[i].Data))
		}
	}

	board := watch(t, base+"/api/events?topic=orders", "")
	snap := board.WaitN(t, 1)[0]
	board.Stop(t)
	var s struct{ Orders []store.Order }
	if err := jsonUnmarshal(snap.Data, &s); snap.Name != "snapshot" || err != nil {
		t.Fatalf("the orders board's first event: %s (%d bytes), %v; want its snapshot", snap.Name, len(snap.Data), err)
	}
	active := 0
	for _, o := range want.orders {
		if store.Active(o.Status) {
			active++
		}
	}
	if len(s.Orders) != min(active, store.SnapshotActiveOrders) {
		t.Errorf("the orders board's snapshot holds %d orders, want %d", len(s.Orders), min(active, store.SnapshotActiveOrders))
	}
	for _, o := range s.Orders {
		if w, ok := want.orders[o.ID]; !ok || !sameOrder(o, w) {
			t.Errorf("the orders board's snapshot has order %s as %s %d items, want %s %d items", o.ID, o.Status, len(o.Items), w.Status, len(w.Items))
		}
	}
	t.Logf("read back %d orders, %d messages, %d resumed events; the board's snapshot was %d bytes", len(want.orders), found, len(got), len(snap.Data))
}

// roomsOf returns the rooms of want's messages.
func roomsOf(want *sizedRecords) []string {
	var rooms []string
	for _, m := range want.messages {
		if !slices.Contains(rooms, m.Room) {
			rooms = append(rooms, m.Room)
		}
	}
	return rooms
}

// TestRecordSizesSurviveRestarts writes records of every size the API
// accepts, up to the largest, through HTTP to the built binary, stops it
// with SIGTERM, starts it again and reads everything back (GET, room
// pages, a stream resumed from before the writes, the orders board's
// snapshot); then writes a second round, kills it with SIGKILL, starts
// it again and reads both rounds back.
func TestRecordSizesSurviveRestarts(t *testing.T) {
	t.Parallel()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port, dataDir := freePort(t), t.TempDir()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	logs := &lockedBuffer{}
	rooms := []string{"s", repeatTo("m", 64)}
	topics := "topic=orders&topic=rooms/" + rooms[0] + "&topic=rooms/" + rooms[1]
	want := &sizedRecords{orders: map[string]store.Order{}, messages: map[string]store.Message{}}

	cmd := startBinaryWith(t, t, bin, port, dataDir, logs)
	live := watch(t, base+"/api/events?"+topics, "")
	start := live.WaitN(t, 3)[2].ID // the snapshots' position: before every write
	writes := writeSizes(t, base, "one", rooms, want)
	writeBoard(t, base, store.SnapshotActiveOrders+1, want)
	round1 := liveChanges(t, live, writes+store.SnapshotActiveOrders+1)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("stop with SIGTERM: %v\n%s", err, logs)
	}
	cmd = startBinaryWith(t, t, bin, port, dataDir, logs)
	t.Run("after SIGTERM", func(t *testing.T) { readBack(t, base, start, topics, want, round1) })

	live = watch(t, base+"/api/events?"+topics, round1[len(round1)-1].ID)
	writes = writeSizes(t, base, "two", rooms, want)
	both := append(slices.Clone(round1), liveChanges(t, live, writes)...)
	killAndWait(t, cmd)
	startBinaryWith(t, t, bin, port, dataDir, logs)
	t.Run("after SIGKILL", func(t *testing.T) { readBack(t, base, start, topics, want, both) })
}

// liveChanges waits until c has seen n changes (order and message
// events), stops c and returns them.
func liveChanges(t *testing.T, c *collector, n int) []sseclient.Event {
	t.Helper()
	changes := func(evs []sseclient.Event) []sseclient.Event {
		var out []sseclient.Event
		for _, ev := range evs {
			if ev.Name == "order" || ev.Name == "message" {
				out = append(out, ev)
			}
		}
		return out
	}
	evs := c.WaitFor(t, fmt.Sprintf("%d changes", n), func(evs []sseclient.Event) bool { return len(changes(evs)) >= n })
	c.Stop(t)
	if got := changes(evs); len(got) != n {
		t.Fatalf("the live stream gave %d changes for %d writes", len(got), n)
	}
	return changes(evs)
}

// killAndWait kills cmd with SIGKILL and waits for it.
func killAndWait(tb testing.TB, cmd *exec.Cmd) {
	tb.Helper()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	_ = cmd.Wait()
}
