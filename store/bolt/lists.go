package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"go.etcd.io/bbolt"

	"changecast/store"
)

// Order lists. Two indexes, written in the same transaction as the order,
// serve the list topics' snapshots and ListOrders without reading every
// order: byCustomer (customer, 0x00, id) holds every order of a customer,
// and activeBucket (id) every order that is not delivered or cancelled. Ids
// grow with time, so both are read newest first by stepping back from the
// end (or from the cursor). A page costs the entries it returns, plus, for
// a customer's active orders, that customer's finished orders skipped on
// the way; only a page of every order with neither filter reads the orders
// bucket itself.

// indexOrder puts o, as just written, in the order indexes: under its
// customer always, among the active orders while it is active.
func (t *txn) indexOrder(o *store.Order) {
	t.put(byCustomer, customerKey(o.Customer, o.ID), []byte{})
	if store.Active(o.Status) {
		t.put(activeBucket, []byte(o.ID), []byte{})
	} else if t.err == nil {
		if err := t.tx.Bucket(activeBucket).Delete([]byte(o.ID)); err != nil {
			t.err = fmt.Errorf("delete %s: %w", activeBucket, err)
		}
	}
}

// customerKey is a byCustomer key: customer, 0x00, id. A customer name has
// no control character, so one customer's keys are contiguous, by id.
func customerKey(customer, id string) []byte {
	k := make([]byte, 0, len(customer)+1+len(id))
	k = append(k, customer...)
	k = append(k, 0)
	return append(k, id...)
}

// ListOrders returns a page of orders selected by q, newest first, never
// nil. It returns an error wrapping ErrInvalid for a bad query (see
// OrderQuery.Check). It is safe for concurrent use.
func (b *Store) ListOrders(ctx context.Context, q store.OrderQuery) ([]store.Order, error) {
	limit, err := q.Check()
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	var out []store.Order
	err = b.view(ctx, func(tx *bbolt.Tx) error {
		var err error
		out, err = listOrders(tx, q, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	return out, nil
}

// listOrders reads a page of q in tx, newest first, never nil.
func listOrders(tx *bbolt.Tx, q store.OrderQuery, limit int) ([]store.Order, error) {
	var (
		bucket = orderBucket
		prefix []byte
	)
	switch {
	case q.Customer != "":
		bucket, prefix = byCustomer, customerKey(q.Customer, "")
	case q.Active:
		bucket = activeBucket
	}
	c := tx.Bucket(bucket).Cursor()
	// Step back from the first key at or after the cursor's (or past the
	// prefix's last key): every key before it is older.
	seek := append(bytes.Clone(prefix), q.Before...)
	if q.Before == "" {
		seek = append(seek, 0xff) // after every id (ids are hex)
	}
	var k []byte
	if k, _ = c.Seek(seek); k == nil {
		k, _ = c.Last()
	} else {
		k, _ = c.Prev()
	}
	out := make([]store.Order, 0, min(limit, store.DefaultListLimit))
	for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, _ = c.Prev() {
		o, err := getOrder(tx, string(k[len(prefix):]))
		if err != nil {
			return nil, fmt.Errorf("order %s: %w", k[len(prefix):], err)
		}
		if q.Active && !store.Active(o.Status) {
			continue
		}
		out = append(out, o)
	}
	return out, nil
}

// migrate brings a format 1 file up to format 2, in the caller's
// transaction: it indexes every retained order change under its list
// topics (derived from the order's customer) and fills the order indexes.
func migrate(tx *bbolt.Tx) error {
	index := tx.Bucket(topicBucket)
	err := tx.Bucket(logBucket).ForEach(func(k, v []byte) error {
		var r record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode change %d: %w", decodeUint(k), err)
		}
		for _, topic := range r.lists() {
			if err := index.Put(topicKey(topic, decodeUint(k)), []byte{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tx.Bucket(orderBucket).ForEach(func(k, v []byte) error {
		var o store.Order
		if err := json.Unmarshal(v, &o); err != nil {
			return fmt.Errorf("decode order %s: %w", k, err)
		}
		if err := tx.Bucket(byCustomer).Put(customerKey(o.Customer, string(k)), []byte{}); err != nil {
			return err
		}
		if store.Active(o.Status) {
			return tx.Bucket(activeBucket).Put(bytes.Clone(k), []byte{})
		}
		return nil
	})
}
