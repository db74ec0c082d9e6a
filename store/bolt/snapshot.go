package bolt

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"

	"changecast/store"
)

// Snapshot returns the current state of each topic, in the order given, and
// the position of the newest change it reflects, all read in one
// transaction: every change up to the position and none after it. An
// order topic holds the order (nil if it does not exist); a room topic its
// last SnapshotMessages messages, oldest first; the orders list its newest
// SnapshotActiveOrders active orders and a customer's list that customer's
// newest SnapshotCustomerOrders orders, newest first. It returns an error
// wrapping ErrInvalid for a malformed topic.
func (b *Store) Snapshot(ctx context.Context, topics []string) ([]store.Snapshot, string, error) {
	for _, topic := range topics {
		if _, _, ok := store.ParseTopic(topic); !ok {
			return nil, "", fmt.Errorf("snapshot: topic %.80q: %w", topic, store.ErrInvalid)
		}
	}
	out := make([]store.Snapshot, 0, len(topics))
	var seq uint64
	err := b.view(ctx, func(tx *bbolt.Tx) error {
		seq = decodeUint(tx.Bucket(metaBucket).Get(keySeq))
		for _, topic := range topics {
			kind, key, _ := store.ParseTopic(topic)
			s := store.Snapshot{Topic: topic}
			switch kind {
			case store.KindOrderList, store.KindCustomer:
				q := store.OrderQuery{Active: true}
				limit := store.SnapshotActiveOrders
				if kind == store.KindCustomer {
					q, limit = store.OrderQuery{Customer: key}, store.SnapshotCustomerOrders
				}
				orders, err := listOrders(tx, q, limit)
				if err != nil {
					return fmt.Errorf("%s: %w", topic, err)
				}
				s.Orders = orders
			case store.KindOrder:
				o, err := getOrder(tx, key)
				switch {
				case err == nil:
					s.Order = &o
				case !errors.Is(err, store.ErrNotFound):
					return fmt.Errorf("%s: %w", topic, err)
				}
			default:
				msgs, err := lastMessages(tx, key, "", store.SnapshotMessages)
				if err != nil {
					return fmt.Errorf("%s: %w", topic, err)
				}
				s.Messages = msgs
			}
			out = append(out, s)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("snapshot: %w", err)
	}
	return out, b.pos(seq), nil
}
