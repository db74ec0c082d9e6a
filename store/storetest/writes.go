package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"changecast/store"
)

func confWriteRead(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	ctx := context.Background()
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	o := confCreateOrder(t, b)
	if !store.ValidOrderID(o.ID) || o.Status != store.StatusPlaced || o.Version != 1 || o.Customer != "ann" || len(o.Items) != 2 {
		t.Errorf("CreateOrder: got %+v, want a placed order, version 1, with 2 items", o)
	}
	got, err := b.GetOrder(ctx, o.ID)
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	confSameOrder(t, "GetOrder after CreateOrder", got, o)

	u, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 1)
	if err != nil {
		t.Fatalf("UpdateOrderStatus: %v", err)
	}
	if u.Status != store.StatusPreparing || u.Version != 2 || u.UpdatedAt.Before(o.UpdatedAt) || !u.CreatedAt.Equal(o.CreatedAt) {
		t.Errorf("UpdateOrderStatus: got %+v, want preparing, version 2, updatedAt not before %v", u, o.UpdatedAt)
	}
	got, err = b.GetOrder(ctx, o.ID)
	if err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	confSameOrder(t, "GetOrder after UpdateOrderStatus", got, u)

	room := confRoom()
	var posted []store.Message
	for _, text := range []string{"a", "b", "c", "d"} {
		m := confPost(t, b, room, text)
		if !store.ValidOrderID(m.ID) || m.Room != room || m.Author != "bob" || m.Text != text {
			t.Errorf("PostMessage: got %+v", m)
		}
		posted = append(posted, m)
	}
	texts := func(ms []store.Message) string {
		var s []string
		for _, m := range ms {
			s = append(s, m.Text)
		}
		return strings.Join(s, ",")
	}
	tests := []struct {
		before string
		limit  int
		want   string
	}{
		{"", 2, "c,d"},
		{"", store.MaxListLimit, "a,b,c,d"},
		{posted[3].ID, 2, "b,c"},
		{posted[1].ID, 10, "a"},
		{posted[0].ID, 10, ""},
	}
	for _, tt := range tests {
		ms, err := b.ListMessages(ctx, room, tt.before, tt.limit)
		if err != nil {
			t.Fatalf("ListMessages(%q, %d): %v", tt.before, tt.limit, err)
		}
		if got := texts(ms); got != tt.want {
			t.Errorf("ListMessages(before %q, %d): got %q, want %q", tt.before, tt.limit, got, tt.want)
		}
	}
	ms, err := b.ListMessages(ctx, room, "", 1)
	if err != nil || len(ms) != 1 || ms[0].ID != posted[3].ID || !ms[0].CreatedAt.Equal(posted[3].CreatedAt) {
		t.Errorf("ListMessages newest: got %+v, %v, want %+v", ms, err, posted[3])
	}
	if ms, err := b.ListMessages(ctx, confRoom(), "", 10); err != nil || len(ms) != 0 {
		t.Errorf("ListMessages of an empty room: got %v, %v, want none", ms, err)
	}
}

func confErrors(t *testing.T, h Harness) {
	b := h.Storage(t)(t)
	ctx := context.Background()
	o := confCreateOrder(t, b)
	missing := "0123456789abcdef01234567"
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"get missing order", func() error { _, err := b.GetOrder(ctx, missing); return err }, store.ErrNotFound},
		{"get malformed id", func() error { _, err := b.GetOrder(ctx, "not-an-id"); return err }, store.ErrNotFound},
		{"update missing order", func() error { _, err := b.UpdateOrderStatus(ctx, missing, store.StatusPreparing, 0); return err }, store.ErrNotFound},
		{"update malformed id", func() error { _, err := b.UpdateOrderStatus(ctx, "X", store.StatusPreparing, 0); return err }, store.ErrNotFound},
		{"version mismatch", func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusPreparing, 7); return err }, store.ErrVersionMismatch},
		{"version checked first", func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusDelivered, 7); return err }, store.ErrVersionMismatch},
		{"unknown status", func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, "eaten", 0); return err }, store.ErrInvalid},
		{"transition not allowed", func() error { _, err := b.UpdateOrderStatus(ctx, o.ID, store.StatusDelivered, 1); return err }, store.ErrConflict},
		{"order without customer", func() error { _, err := b.CreateOrder(ctx, "", []store.Item{{SKU: "a", Qty: 1}}); return err }, store.ErrInvalid},
		{"order without items", func() error { _, err := b.CreateOrder(ctx, "ann", nil); return err }, store.ErrInvalid},
		{"item quantity", func() error { _, err := b.CreateOrder(ctx, "ann", []store.Item{{SKU: "a", Qty: 0}}); return err }, store.ErrInvalid},
		{"bad room", func() error { _, err := b.PostMessage(ctx, "No Room", "bob", "hi"); return err }, store.ErrInvalid},
		{"empty text", func() error { _, err := b.PostMessage(ctx, confRoom(), "bob", ""); return err }, store.ErrInvalid},
		{"no author", func() error { _, err := b.PostMessage(ctx, confRoom(), "", "hi"); return err }, store.ErrInvalid},
		{"limit 0", func() error { _, err := b.ListMessages(ctx, confRoom(), "", 0); return err }, store.ErrInvalid},
		{"limit too big", func() error { _, err := b.ListMessages(ctx, confRoom(), "", store.MaxListLimit+1); return err }, store.ErrInvalid},
		{"malformed before", func() error { _, err := b.ListMessages(ctx, confRoom(), "nope", 10); return err }, store.ErrInvalid},
		{"snapshot bad topic", func() error { _, _, err := b.Snapshot(ctx, []string{"orders/nope"}); return err }, store.ErrInvalid},
	}
	for _, tt := range tests {
		if err := tt.call(); !errors.Is(err, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.want)
		}
	}
	got, err := b.GetOrder(ctx, o.ID)
	if err != nil || got.Version != 1 || got.Status != store.StatusPlaced {
		t.Errorf("order after failed updates: got %+v, %v, want it unchanged", got, err)
	}

	c := h.Storage(t)(t)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := c.GetOrder(ctx, o.ID); !errors.Is(err, store.ErrClosed) {
		t.Errorf("GetOrder after Close: got %v, want ErrClosed", err)
	}
	if _, err := c.CreateOrder(ctx, "ann", []store.Item{{SKU: "a", Qty: 1}}); !errors.Is(err, store.ErrClosed) {
		t.Errorf("CreateOrder after Close: got %v, want ErrClosed", err)
	}
	if err := c.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close: got %v, want ErrClosed", err)
	}
}
