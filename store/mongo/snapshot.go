package mongo

import (
	"context"
	"fmt"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"changecast/store"
)

// snapshotAttempts bounds how often Snapshot starts over when the
// server no longer holds the history its read needs.
const snapshotAttempts = 3

// Snapshot returns the current state of each topic, in the order given, and
// the position it reflects: the state holds every change before that
// position and none after it, so following from the position gives exactly
// the changes the snapshot lacks. It returns an error wrapping ErrInvalid
// for a malformed topic.
//
// While a Follow runs, the position is the feed's latest checkpoint and the
// state is read at the cluster time that holds exactly the changes up to
// it (see feedPoint): no change stream is opened, and the position is
// never ahead of the feed. Otherwise the position is taken as Head takes
// it, from a fresh change stream in the pool of short-lived streams: a
// high-water mark at cluster time T that sorts before every event at T or
// later, and the state is read at T-1. Either way the read is in a
// snapshot session at a past cluster time (readConcern snapshot with
// atClusterTime, MongoDB 5.0 or later).
func (m *Store) Snapshot(ctx context.Context, topics []string) ([]store.Snapshot, string, error) {
	for _, t := range topics {
		if _, _, ok := store.ParseTopic(t); !ok {
			return nil, "", fmt.Errorf("snapshot: topic %q: %w", t, store.ErrInvalid)
		}
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("snapshot: %w", err)
	}
	defer end()
	for attempt := 1; ; attempt++ {
		at, ok := m.feedPosition()
		if !ok || attempt > 1 {
			// No feed, or its point is too old for the server's
			// snapshot history (the feed is stuck): a fresh position.
			pos, err := m.head(ctx)
			if err != nil {
				return nil, "", err
			}
			read, ok := hwmRead(pos)
			if !ok {
				return nil, "", fmt.Errorf("snapshot: %w", store.ErrInvalidPosition)
			}
			at = feedPoint{pos: pos, read: read}
		}
		snaps, err := m.readSnapshot(ctx, topics, at.read)
		if err == nil {
			return snaps, at.pos, nil
		}
		if attempt == snapshotAttempts || !serverCode(err, codeSnapshotTooOld, codeSnapshotUnavailable) {
			return nil, "", m.fail("snapshot", err)
		}
	}
}

// readSnapshot reads topics as of cluster time read.
func (m *Store) readSnapshot(ctx context.Context, topics []string, read bson.Timestamp) ([]store.Snapshot, error) {
	sess, err := m.client.StartSession(options.Session().
		SetSnapshot(true).
		SetSnapshotTime(read))
	if err != nil {
		return nil, err
	}
	defer sess.EndSession(context.WithoutCancel(ctx))
	sctx := mongodrv.NewSessionContext(ctx, sess)

	var ids bson.A
	for _, t := range topics {
		if kind, key, _ := store.ParseTopic(t); kind == store.KindOrder {
			oid, _ := bson.ObjectIDFromHex(key)
			ids = append(ids, oid)
		}
	}
	orders := make(map[string]store.Order)
	if len(ids) > 0 {
		cur, err := m.orders.Find(sctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
		if err != nil {
			return nil, err
		}
		var docs []orderDoc
		if err := cur.All(sctx, &docs); err != nil {
			return nil, err
		}
		for _, d := range docs {
			orders[d.ID.Hex()] = d.order()
		}
	}
	snaps := make([]store.Snapshot, len(topics))
	for i, t := range topics {
		kind, key, _ := store.ParseTopic(t)
		snaps[i].Topic = t
		switch kind {
		case store.KindOrder:
			if o, ok := orders[key]; ok {
				snaps[i].Order = &o
			}
			continue
		case store.KindOrderList, store.KindCustomer:
			list, err := m.listSnapshot(sctx, kind, key)
			if err != nil {
				return nil, err
			}
			snaps[i].Orders = list
			continue
		}
		msgs, err := m.lastMessages(sctx, bson.D{{Key: "room", Value: key}}, store.SnapshotMessages)
		if err != nil {
			return nil, err
		}
		snaps[i].Messages = msgs
	}
	return snaps, nil
}
