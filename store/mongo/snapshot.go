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
// The position is taken first, as Head takes it: the post-batch token of a
// fresh change stream, a high-water mark at cluster time T that sorts
// before every event at T or later. The state is then read in a snapshot
// session at cluster time T-1 (readConcern snapshot with atClusterTime,
// MongoDB 5.0 or later), which holds exactly the commits before T.
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
		pos, err := m.head(ctx)
		if err != nil {
			return nil, "", err
		}
		snaps, err := m.readSnapshot(ctx, topics, pos)
		if err == nil {
			return snaps, pos, nil
		}
		if attempt == snapshotAttempts || !serverCode(err, codeSnapshotTooOld, codeSnapshotUnavailable) {
			return nil, "", m.fail("snapshot", err)
		}
	}
}

// readSnapshot reads topics as of just before position pos.
func (m *Store) readSnapshot(ctx context.Context, topics []string, pos string) ([]store.Snapshot, error) {
	ts, err := positionTime(pos)
	if err != nil {
		return nil, err
	}
	sess, err := m.client.StartSession(options.Session().
		SetSnapshot(true).
		SetSnapshotTime(timestampBefore(ts)))
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
		if kind == store.KindOrder {
			if o, ok := orders[key]; ok {
				snaps[i].Order = &o
			}
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
