package mongo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// presenceColl holds who has a stream open where: one document per
// (topic, user, process). It is not part of the change feed: its changes
// are not positions a client resumes from, and every process polls it.
const presenceColl = "presence"

// Presence timing. A process writes its users every PresenceInterval and
// reads everyone's at the same time, so another process's join or leave
// is seen at most 2×PresenceInterval (10 s) late. An entry lives
// PresenceTTL past its last write: a process killed without a goodbye
// has its users leave within PresenceTTL+PresenceInterval (25 s), well
// under the 30 s bound; a live process rewrites its entries 4 times per
// TTL, so one slow round does not make its users flap. The TTL index
// only cleans up (its monitor runs every 60 s): readers filter on
// expiresAt themselves.
const (
	PresenceInterval = 5 * time.Second
	PresenceTTL      = 20 * time.Second
	// presenceGoodbye bounds the delete of a stopping process's entries.
	presenceGoodbye = 2 * time.Second
)

// PresenceEntry is one user present on a topic, since the time they
// joined.
type PresenceEntry struct {
	Topic string
	User  string
	Since time.Time
}

// presenceDoc is a PresenceEntry as stored.
type presenceDoc struct {
	ID        string    `bson:"_id"`
	Topic     string    `bson:"topic"`
	User      string    `bson:"user"`
	Process   string    `bson:"process"`
	Since     time.Time `bson:"since"`
	ExpiresAt time.Time `bson:"expiresAt"`
}

// Presence shares one process's present users with the other processes
// of the deployment through the presence collection. A Presence is used
// by one goroutine at a time.
type Presence struct {
	coll    *mongodrv.Collection
	process string
	now     func() time.Time
	indexed bool
}

// NewPresence returns the presence of this process, under a random id
// of its own: a restarted process is another one, and the entries of the
// one before expire.
func (s *Store) NewPresence() *Presence {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Presence{coll: s.db.Collection(presenceColl), process: hex.EncodeToString(b[:]), now: time.Now}
}

// presenceID is an entry's _id: names hold no control character, so a
// newline separates the parts unambiguously.
func presenceID(topic, user, process string) string {
	return topic + "\n" + user + "\n" + process
}

// Sync writes local, this process's users, with a fresh expiry, removes
// this process's entries not among them, and returns the live entries of
// the other processes.
func (p *Presence) Sync(ctx context.Context, local []PresenceEntry) ([]PresenceEntry, error) {
	if !p.indexed {
		_, err := p.coll.Indexes().CreateOne(ctx, mongodrv.IndexModel{
			Keys:    bson.D{{Key: "expiresAt", Value: 1}},
			Options: options.Index().SetExpireAfterSeconds(0),
		})
		if err != nil {
			return nil, fmt.Errorf("presence: create the expiry index: %w", err)
		}
		p.indexed = true
	}
	now := p.now()
	// Stored with millisecond precision: compare with what is stored.
	exp := now.Add(PresenceTTL).Truncate(time.Millisecond)
	if len(local) > 0 {
		models := make([]mongodrv.WriteModel, 0, len(local))
		for _, e := range local {
			models = append(models, mongodrv.NewUpdateOneModel().
				SetFilter(bson.D{{Key: "_id", Value: presenceID(e.Topic, e.User, p.process)}}).
				SetUpdate(bson.D{{Key: "$set", Value: bson.D{
					{Key: "topic", Value: e.Topic},
					{Key: "user", Value: e.User},
					{Key: "process", Value: p.process},
					{Key: "since", Value: e.Since},
					{Key: "expiresAt", Value: exp},
				}}}).
				SetUpsert(true))
		}
		if _, err := p.coll.BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false)); err != nil {
			return nil, fmt.Errorf("presence: write: %w", err)
		}
	}
	// What this round did not rewrite has left.
	if _, err := p.coll.DeleteMany(ctx, bson.D{
		{Key: "process", Value: p.process},
		{Key: "expiresAt", Value: bson.D{{Key: "$lt", Value: exp}}},
	}); err != nil {
		return nil, fmt.Errorf("presence: delete who left: %w", err)
	}
	cur, err := p.coll.Find(ctx, bson.D{
		{Key: "process", Value: bson.D{{Key: "$ne", Value: p.process}}},
		{Key: "expiresAt", Value: bson.D{{Key: "$gt", Value: now}}},
	})
	if err != nil {
		return nil, fmt.Errorf("presence: read: %w", err)
	}
	var docs []presenceDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("presence: read: %w", err)
	}
	out := make([]PresenceEntry, 0, len(docs))
	for _, d := range docs {
		out = append(out, PresenceEntry{Topic: d.Topic, User: d.User, Since: d.Since})
	}
	return out, nil
}

// Leave deletes this process's entries, so its users leave at once for
// the others.
func (p *Presence) Leave(ctx context.Context) error {
	_, err := p.coll.DeleteMany(ctx, bson.D{{Key: "process", Value: p.process}})
	return err
}

// Run calls Sync with local() every PresenceInterval, passing the other
// processes' entries to apply, until ctx ends; then it deletes this
// process's entries (Leave). When Sync has failed for longer than
// PresenceTTL, apply gets nil: what it last read has expired. Errors go
// to the Store's log.
func (s *Store) RunPresence(ctx context.Context, p *Presence, local func() []PresenceEntry, apply func([]PresenceEntry)) {
	defer func() {
		gctx, cancel := context.WithTimeout(context.Background(), presenceGoodbye)
		defer cancel()
		if err := p.Leave(gctx); err != nil {
			s.log.Warn("presence: could not delete this process's entries; they expire", "err", err)
		}
	}()
	lastOK := p.now()
	tick := time.NewTicker(PresenceInterval)
	defer tick.Stop()
	for {
		others, err := p.Sync(ctx, local())
		switch {
		case err == nil:
			lastOK = p.now()
			apply(others)
		case ctx.Err() != nil:
			return
		default:
			s.log.Warn("presence: sync failed", "err", err)
			if p.now().Sub(lastOK) > PresenceTTL {
				apply(nil)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
