package bolt

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"go.etcd.io/bbolt"

	"changecast/store"
)

// CreateOrder stores a new order for customer with status placed, version 1
// and a history of one placed entry at CreatedAt, and logs an insert change. It returns an error wrapping
// ErrInvalid if a field is bad.
func (b *Store) CreateOrder(ctx context.Context, customer string, items []store.Item) (store.Order, error) {
	if err := store.ValidateOrder(customer, items); err != nil {
		return store.Order{}, fmt.Errorf("create order: %w", err)
	}
	items = slices.Clone(items)
	var o store.Order
	err := b.submit(ctx, func(t *txn) error {
		seq := t.alloc()
		o = store.Order{
			ID:        t.id(seq),
			Customer:  customer,
			Items:     items,
			Status:    store.StatusPlaced,
			Version:   1,
			History:   store.NewHistory(t.now),
			CreatedAt: t.now,
			UpdatedAt: t.now,
		}
		t.putJSON(orderBucket, []byte(o.ID), (*storedOrder)(&o))
		t.indexOrder(&o)
		t.append(seq, &record{Topic: store.OrderTopic(o.ID), Lists: store.OrderLists(o.Customer), Op: store.OpInsert, Order: (*storedOrder)(&o)})
		return nil
	})
	if err != nil {
		return store.Order{}, fmt.Errorf("create order: %w", err)
	}
	return o, nil
}

// GetOrder returns the order with id, or an error wrapping ErrNotFound
// (also for a malformed id).
func (b *Store) GetOrder(ctx context.Context, id string) (store.Order, error) {
	if !store.ValidOrderID(id) {
		return store.Order{}, fmt.Errorf("get order %.40q: %w", id, store.ErrNotFound)
	}
	var o store.Order
	err := b.view(ctx, func(tx *bbolt.Tx) error {
		var err error
		o, err = getOrder(tx, id)
		return err
	})
	if err != nil {
		return store.Order{}, fmt.Errorf("get order %s: %w", id, err)
	}
	return o, nil
}

// getOrder reads an order, or returns ErrNotFound.
func getOrder(tx *bbolt.Tx, id string) (store.Order, error) {
	v := tx.Bucket(orderBucket).Get([]byte(id))
	if v == nil {
		return store.Order{}, store.ErrNotFound
	}
	var o store.Order
	if err := json.Unmarshal(v, &o); err != nil {
		return store.Order{}, fmt.Errorf("decode order: %w", err)
	}
	fillHistory(&o)
	return o, nil
}

// fillHistory gives an order stored before histories were kept (no
// "history" in its JSON) an empty history rather than nil, so that it
// reads, and encodes, as "history":[].
func fillHistory(o *store.Order) {
	if o.History == nil {
		o.History = []store.StatusChange{}
	}
}

// UpdateOrderStatus moves order id to status, increments its version, sets
// UpdatedAt, appends {status, UpdatedAt} to its history and logs an update
// change: the order and the change (which holds the whole order) are written
// in one transaction, so the change carries the history as of itself. ifVersion 0 accepts any current
// version. Errors wrap, checked in this order: ErrNotFound (unknown or
// malformed id), ErrVersionMismatch (ifVersion is not the current version),
// ErrInvalid (unknown status or negative ifVersion), ErrConflict (transition
// not allowed).
func (b *Store) UpdateOrderStatus(ctx context.Context, id, status string, ifVersion int64) (store.Order, error) {
	if !store.ValidOrderID(id) {
		return store.Order{}, fmt.Errorf("update order %.40q: %w", id, store.ErrNotFound)
	}
	if ifVersion < 0 {
		return store.Order{}, fmt.Errorf("update order %s: version %d: %w", id, ifVersion, store.ErrInvalid)
	}
	var o store.Order
	err := b.submit(ctx, func(t *txn) error {
		var err error
		if o, err = getOrder(t.tx, id); err != nil {
			return err
		}
		if ifVersion != 0 && ifVersion != o.Version {
			return fmt.Errorf("have version %d, want %d: %w", o.Version, ifVersion, store.ErrVersionMismatch)
		}
		if err := store.CheckTransition(o.Status, status); err != nil {
			return err
		}
		o.Status = status
		o.Version++
		o.UpdatedAt = t.now
		o.History = store.AppendHistory(o.History, status, t.now)
		t.putJSON(orderBucket, []byte(o.ID), (*storedOrder)(&o))
		t.indexOrder(&o)
		t.append(t.alloc(), &record{Topic: store.OrderTopic(o.ID), Lists: store.OrderLists(o.Customer), Op: store.OpUpdate, Order: (*storedOrder)(&o)})
		return nil
	})
	if err != nil {
		return store.Order{}, fmt.Errorf("update order %s: %w", id, err)
	}
	return o, nil
}
