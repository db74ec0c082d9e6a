package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"changecast/store"
)

// TestReopenLargeRecords: records larger than one page (a message of
// the longest text the API accepts, in 1-, 2- and 4-byte characters,
// followed by short ones, and orders of long SKUs) are written by the real write path, the store is
// closed and opened again, and every record reads back as written.
func TestReopenLargeRecords(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	b, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	texts := []string{
		strings.Repeat("x", store.MaxTextLen),
		strings.Repeat("é", 3000),
		strings.Repeat("😀", store.MaxTextLen),
	}
	// Short messages after the long ones: their keys sit on the last
	// pages of the long ones' leaf.
	for range 20 {
		texts = append(texts, "short")
	}
	var msgs []store.Message
	for _, text := range texts {
		m, err := b.PostMessage(ctx, "lobby", "alice", text)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	var orders []store.Order
	for _, n := range []int{40, store.MaxItems} {
		items := make([]store.Item, n)
		for i := range items {
			items[i] = store.Item{SKU: strings.Repeat(string(rune('a'+i%26)), store.MaxNameLen), Qty: store.MaxQty}
		}
		o, err := b.CreateOrder(ctx, "bob", items)
		if err != nil {
			t.Fatal(err)
		}
		orders = append(orders, o)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b, err = Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("reopen a valid store: %v", err)
	}
	defer b.Close()
	got, err := b.ListMessages(ctx, "lobby", "", store.MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	if !equalJSON(t, got, msgs) {
		t.Errorf("messages after reopening differ from those written")
	}
	for _, o := range orders {
		g, err := b.GetOrder(ctx, o.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !equalJSON(t, g, o) {
			t.Errorf("order %s after reopening differs from the one written", o.ID)
		}
	}
}

// equalJSON reports whether a and b encode to the same JSON (times
// read back from the file carry no monotonic clock reading).
func equalJSON(tb testing.TB, a, b any) bool {
	tb.Helper()
	ja, err := json.Marshal(a)
	if err != nil {
		tb.Fatal(err)
	}
	jb, err := json.Marshal(b)
	if err != nil {
		tb.Fatal(err)
	}
	return bytes.Equal(ja, jb)
}
