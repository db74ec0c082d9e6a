package storetest

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"changecast/store"
)

// The largest records the API accepts.
//
// Run runs every case a second time, under "largest records", on a
// store wrapped in largest: each name, SKU, room and text a case writes
// is padded to the longest the API accepts (store.MaxNameLen bytes,
// store.MaxTextLen characters of 4-byte UTF-8, 64-byte rooms), and each
// order filled to store.MaxItems items of the largest quantity. What
// comes back is checked to be exactly what was written, padding
// included, then unpadded, so the cases' own checks hold unchanged: the
// backend stores, logs, indexes and returns the largest records, and the
// cases read the values they wrote.

// Padding: characters the cases' own values never hold, so a padded
// value tells where its padding starts.
const (
	padWide   = "\U0001F355" // 4 bytes of UTF-8, one character
	padNarrow = "~"          // fills a name's last bytes
	padRoom   = "_"          // a room may hold letters, digits, _ and -
	fillerSKU = "filler-"    // an item added to fill an order
	maxRoom   = 64           // a room name's longest, as ValidRoom allows
)

// padName pads a non-empty name to store.MaxNameLen bytes.
func padName(s string) string {
	if s == "" || len(s) >= store.MaxNameLen {
		return s
	}
	n := store.MaxNameLen - len(s)
	return s + strings.Repeat(padWide, n/len(padWide)) + strings.Repeat(padNarrow, n%len(padWide))
}

// padText pads a non-empty text to store.MaxTextLen characters.
func padText(s string) string {
	if s == "" || !utf8.ValidString(s) {
		return s
	}
	return s + strings.Repeat(padWide, max(0, store.MaxTextLen-utf8.RuneCountInString(s)))
}

// padRoomName pads a room name to maxRoom bytes.
func padRoomName(s string) string {
	if s == "" || len(s) >= maxRoom {
		return s
	}
	return s + strings.Repeat(padRoom, maxRoom-len(s))
}

// padTopic pads the room or customer a topic names.
func padTopic(t string) string {
	switch kind, key, _ := store.ParseTopic(t); {
	case strings.HasPrefix(t, store.CustomerTopicPrefix):
		return store.CustomerTopicPrefix + padName(t[len(store.CustomerTopicPrefix):])
	case kind == store.KindRoom:
		return store.RoomTopic(padRoomName(key))
	}
	return t
}

// padItems pads each SKU and fills items up to store.MaxItems.
func padItems(items []store.Item) []store.Item {
	if len(items) == 0 {
		return items
	}
	out := make([]store.Item, 0, max(len(items), store.MaxItems))
	for _, it := range items {
		out = append(out, store.Item{SKU: padName(it.SKU), Qty: it.Qty})
	}
	for i := len(out); i < store.MaxItems; i++ {
		out = append(out, store.Item{SKU: padName(fmt.Sprint(fillerSKU, i)), Qty: store.MaxQty})
	}
	return out
}

// largest is a Backend that writes the largest records and checks
// that they come back whole. Its checks report to tb; it is safe for
// concurrent use.
type largest struct {
	store.Backend
	tb testing.TB
}

// withLargest returns h with every store wrapped in largest.
func (h Harness) withLargest() Harness {
	return Harness{
		Storage: func(t *testing.T) func(t *testing.T) store.Backend {
			open := h.Storage(t)
			return func(t *testing.T) store.Backend { return &largest{Backend: open(t), tb: t} }
		},
		LoseHistory: func(t *testing.T) (store.Backend, string) {
			b, pos := h.LoseHistory(t)
			return &largest{Backend: b, tb: t}, pos
		},
		large: true,
	}
}

// cut returns padded without its padding, as written by pad, reporting
// a value that is not exactly pad of what it starts with.
func (l *largest) cut(what, padded string, pad func(string) string, marks ...string) string {
	base := padded
	for _, m := range marks {
		if i := strings.Index(base, m); i >= 0 {
			base = base[:i]
		}
	}
	if pad(base) != padded {
		l.tb.Errorf("largest records: %s came back changed: %d bytes %.60q..., want %d bytes", what, len(padded), padded, len(pad(base)))
	}
	return base
}

func (l *largest) name(what, s string) string { return l.cut(what, s, padName, padWide, padNarrow) }

func (l *largest) text(s string) string { return l.cut("a message's text", s, padText, padWide) }

func (l *largest) room(s string) string { return l.cut("a room name", s, padRoomName, padRoom) }

func (l *largest) topic(t string) string {
	switch kind, key, _ := store.ParseTopic(t); {
	case strings.HasPrefix(t, store.CustomerTopicPrefix):
		return store.CustomerTopicPrefix + l.name("a customer topic", t[len(store.CustomerTopicPrefix):])
	case kind == store.KindRoom:
		return store.RoomTopic(l.room(key))
	}
	return t
}

func (l *largest) order(o store.Order) store.Order {
	o.Customer = l.name("a customer", o.Customer)
	var items []store.Item
	fillers := 0
	for _, it := range o.Items {
		sku := l.name("a SKU", it.SKU)
		if strings.HasPrefix(sku, fillerSKU) {
			fillers++
			if it.Qty != store.MaxQty {
				l.tb.Errorf("largest records: a filler item came back with quantity %d, want %d", it.Qty, store.MaxQty)
			}
			continue
		}
		items = append(items, store.Item{SKU: sku, Qty: it.Qty})
	}
	if len(o.Items) > 0 && len(o.Items) != store.MaxItems {
		l.tb.Errorf("largest records: order %s came back with %d items, want %d", o.ID, len(o.Items), store.MaxItems)
	}
	if o.Items != nil {
		o.Items = items
		if o.Items == nil {
			o.Items = []store.Item{}
		}
	}
	return o
}

func (l *largest) message(m store.Message) store.Message {
	m.Room = l.room(m.Room)
	m.Author = l.name("an author", m.Author)
	m.Text = l.text(m.Text)
	return m
}

func (l *largest) change(c store.Change) store.Change {
	c.Topic = l.topic(c.Topic)
	if c.Lists != nil {
		lists := make([]string, len(c.Lists))
		for i, t := range c.Lists {
			lists[i] = l.topic(t)
		}
		c.Lists = lists
	}
	if c.Order != nil {
		o := l.order(*c.Order)
		c.Order = &o
	}
	if c.Message != nil {
		m := l.message(*c.Message)
		c.Message = &m
	}
	return c
}

func (l *largest) orders(os []store.Order) []store.Order {
	if os == nil {
		return nil
	}
	out := make([]store.Order, len(os))
	for i, o := range os {
		out[i] = l.order(o)
	}
	return out
}

func (l *largest) messages(ms []store.Message) []store.Message {
	if ms == nil {
		return nil
	}
	out := make([]store.Message, len(ms))
	for i, m := range ms {
		out[i] = l.message(m)
	}
	return out
}

func (l *largest) topics(ts []string) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = padTopic(t)
	}
	return out
}

func (l *largest) CreateOrder(ctx context.Context, customer string, items []store.Item) (store.Order, error) {
	o, err := l.Backend.CreateOrder(ctx, padName(customer), padItems(items))
	if err != nil {
		return o, err
	}
	return l.order(o), nil
}

func (l *largest) GetOrder(ctx context.Context, id string) (store.Order, error) {
	o, err := l.Backend.GetOrder(ctx, id)
	if err != nil {
		return o, err
	}
	return l.order(o), nil
}

func (l *largest) UpdateOrderStatus(ctx context.Context, id, status string, ifVersion int64) (store.Order, error) {
	o, err := l.Backend.UpdateOrderStatus(ctx, id, status, ifVersion)
	if err != nil {
		return o, err
	}
	return l.order(o), nil
}

func (l *largest) PostMessage(ctx context.Context, room, author, text string) (store.Message, error) {
	m, err := l.Backend.PostMessage(ctx, padRoomName(room), padName(author), padText(text))
	if err != nil {
		return m, err
	}
	return l.message(m), nil
}

func (l *largest) ListMessages(ctx context.Context, room, before string, limit int) ([]store.Message, error) {
	ms, err := l.Backend.ListMessages(ctx, padRoomName(room), before, limit)
	return l.messages(ms), err
}

func (l *largest) ListOrders(ctx context.Context, q store.OrderQuery) ([]store.Order, error) {
	q.Customer = padName(q.Customer)
	os, err := l.Backend.ListOrders(ctx, q)
	return l.orders(os), err
}

func (l *largest) Follow(ctx context.Context, after string, fn func(store.Batch) error) error {
	return l.Backend.Follow(ctx, after, func(b store.Batch) error {
		cs := make([]store.Change, len(b.Changes))
		for i, c := range b.Changes {
			cs[i] = l.change(c)
		}
		b.Changes = cs
		return fn(b)
	})
}

func (l *largest) CatchUp(ctx context.Context, topics []string, after, until string, fn func(store.Change) error) error {
	return l.Backend.CatchUp(ctx, l.topics(topics), after, until, func(c store.Change) error { return fn(l.change(c)) })
}

func (l *largest) Snapshot(ctx context.Context, topics []string) ([]store.Snapshot, string, error) {
	snaps, pos, err := l.Backend.Snapshot(ctx, l.topics(topics))
	if err != nil {
		return snaps, pos, err
	}
	for i, s := range snaps {
		s.Topic = l.topic(s.Topic)
		if s.Order != nil {
			o := l.order(*s.Order)
			s.Order = &o
		}
		s.Messages = l.messages(s.Messages)
		s.Orders = l.orders(s.Orders)
		snaps[i] = s
	}
	return snaps, pos, nil
}
