package mongo

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"changecast/store"
)

// activeStatuses are the statuses of an order that is not finished, for a
// filter that the {status, _id} index serves: an $in of a few values,
// merged by _id, where a $nin would scan the whole index.
var activeStatuses = bson.A{store.StatusPlaced, store.StatusPreparing, store.StatusOutForDelivery}

// orderFilter returns the find filter of q: customer, active statuses and
// an _id below the cursor. q must have passed Check.
func orderFilter(q store.OrderQuery) bson.D {
	filter := bson.D{}
	if q.Customer != "" {
		filter = append(filter, bson.E{Key: "customer", Value: q.Customer})
	}
	if q.Active {
		filter = append(filter, bson.E{Key: "status", Value: bson.D{{Key: "$in", Value: activeStatuses}}})
	}
	if q.Before != "" {
		oid, _ := bson.ObjectIDFromHex(q.Before)
		filter = append(filter, bson.E{Key: "_id", Value: bson.D{{Key: "$lt", Value: oid}}})
	}
	return filter
}

// ListOrders returns a page of orders selected by q, newest first (by _id,
// whose leading seconds order them by creation), never nil: one find
// sorted by _id descending with the page size as its limit, served by the
// {customer, _id} or {status, _id} index. It returns an error wrapping
// ErrInvalid for a bad query (see OrderQuery.Check).
func (m *Store) ListOrders(ctx context.Context, q store.OrderQuery) ([]store.Order, error) {
	limit, err := q.Check()
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	defer end()
	orders, err := m.findOrders(ctx, orderFilter(q), limit)
	if err != nil {
		return nil, m.fail("list orders", err)
	}
	return orders, nil
}

// findOrders returns the newest limit orders matching filter, newest
// first, never nil. It reads in ctx's session, if any.
func (m *Store) findOrders(ctx context.Context, filter bson.D, limit int) ([]store.Order, error) {
	cur, err := m.orders.Find(ctx, filter, options.Find().
		SetSort(bson.D{{Key: "_id", Value: -1}}).
		SetLimit(int64(limit)))
	if err != nil {
		return nil, err
	}
	var docs []orderDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	orders := make([]store.Order, len(docs))
	for i, d := range docs {
		orders[i] = d.order()
	}
	return orders, nil
}

// listSnapshot reads the orders of a list topic of kind and key: the
// newest SnapshotActiveOrders active orders, or customer key's newest
// SnapshotCustomerOrders orders.
func (m *Store) listSnapshot(ctx context.Context, kind store.TopicKind, key string) ([]store.Order, error) {
	if kind == store.KindCustomer {
		return m.findOrders(ctx, orderFilter(store.OrderQuery{Customer: key}), store.SnapshotCustomerOrders)
	}
	return m.findOrders(ctx, orderFilter(store.OrderQuery{Active: true}), store.SnapshotActiveOrders)
}
