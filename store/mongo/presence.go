package mongo

import (
	"changecast/store"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Presence collections. They are not part of the change feed: their
// changes are not positions a client resumes from, and every process
// polls them.
//
//   - presence holds who has a stream open where: one document per
//     (topic, user, process), written when the user joins and deleted when
//     they leave, never rewritten while they stay;
//   - presenceProcesses holds one heartbeat per process, {_id: process,
//     at}, at set by the server ($$NOW) every PresenceInterval.
//
// A process's users are present while its heartbeat is younger than
// PresenceTTL by the server's clock: every comparison of times is made by
// the server, with $$NOW, so no process's clock matters.
const (
	presenceColl      = "presence"
	presenceProcesses = "presence_processes"
)

// Presence timing. A process writes its heartbeat, and its users' joins
// and leaves, every PresenceInterval and reads everyone's at the same
// time, so another process's join or leave is seen at most
// 2×PresenceInterval (10 s) late. A process killed without a goodbye
// stops its heartbeat: its users leave within PresenceTTL+PresenceInterval
// (25 s), well under the 30 s bound, and a live process beats 4 times per
// TTL, so one slow round does not make its users flap. A TTL index
// removes dead heartbeats (its monitor runs every 60 s); readers judge a
// heartbeat's age themselves, and delete the entries of processes whose
// heartbeat has gone.
const (
	PresenceInterval = 5 * time.Second
	PresenceTTL      = 20 * time.Second
	// presenceGoodbye bounds the delete of a stopping process's entries.
	presenceGoodbye = 2 * time.Second
)

// presenceDoc is a store.PresenceEntry as stored. The stored document also has
// at, when it was written by the server's clock, which only the server
// reads.
type presenceDoc struct {
	ID      string    `bson:"_id"`
	Topic   string    `bson:"topic"`
	User    string    `bson:"user"`
	Process string    `bson:"process"`
	Since   time.Time `bson:"since"`
}

// Presence shares one process's present users with the other processes
// of the deployment through the presence collections. A Presence is used
// by one goroutine at a time.
type Presence struct {
	users   *mongodrv.Collection
	procs   *mongodrv.Collection
	process string
}

// NewPresence returns the presence of this process, under a random id
// of its own: a restarted process is another one, and the entries of the
// one before go with its heartbeat.
func (m *Store) NewPresence() *Presence {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &Presence{
		users:   m.db.Collection(presenceColl),
		procs:   m.db.Collection(presenceProcesses),
		process: hex.EncodeToString(b[:]),
	}
}

// presenceID is an entry's _id: names hold no control character, so a
// newline separates the parts unambiguously.
func presenceID(topic, user, process string) string {
	return topic + "\n" + user + "\n" + process
}

// serverNowMinus is the aggregation expression of the server's time
// minus d.
func serverNowMinus(d time.Duration) bson.D {
	return bson.D{{Key: "$subtract", Value: bson.A{"$$NOW", d.Milliseconds()}}}
}

// Sync makes the presence collection hold local, this process's users,
// and returns the users of the other live processes. It writes the
// process's heartbeat, the users who joined since the last Sync and
// deletes those who left: with nobody joining or leaving, its only write
// is the heartbeat. It also deletes the entries of processes whose
// heartbeat is gone (and that are older than PresenceTTL, so that a
// process just starting is not taken for a dead one).
func (p *Presence) Sync(ctx context.Context, local []store.PresenceEntry) ([]store.PresenceEntry, error) {
	if err := p.beat(ctx); err != nil {
		return nil, err
	}
	live, err := p.liveProcesses(ctx)
	if err != nil {
		return nil, err
	}
	cur, err := p.users.Find(ctx, bson.D{})
	if err != nil {
		return nil, fmt.Errorf("presence: read: %w", err)
	}
	var docs []presenceDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("presence: read: %w", err)
	}
	mine := make(map[string]bool)
	var others []store.PresenceEntry
	var dead bson.A
	deadSeen := make(map[string]bool)
	for _, d := range docs {
		switch {
		case d.Process == p.process:
			mine[d.ID] = true
		case live[d.Process]:
			others = append(others, store.PresenceEntry{Topic: d.Topic, User: d.User, Since: d.Since})
		case !deadSeen[d.Process]:
			deadSeen[d.Process] = true
			dead = append(dead, d.Process)
		}
	}
	if err := p.write(ctx, local, mine); err != nil {
		return nil, err
	}
	if len(dead) > 0 {
		// Entries written before their process's first heartbeat was
		// read are young: only old ones are a dead process's.
		if _, err := p.users.DeleteMany(ctx, bson.D{
			{Key: "process", Value: bson.D{{Key: "$in", Value: dead}}},
			{Key: "$expr", Value: bson.D{{Key: "$not", Value: bson.A{
				bson.D{{Key: "$gt", Value: bson.A{"$at", serverNowMinus(PresenceTTL)}}},
			}}}},
		}); err != nil {
			return nil, fmt.Errorf("presence: delete the users of stopped processes: %w", err)
		}
	}
	if others == nil {
		others = []store.PresenceEntry{}
	}
	return others, nil
}

// beat writes this process's heartbeat at the server's time. When the
// heartbeat was not there (the first beat, or the collection or the
// database was dropped, or the TTL index removed it after a long pause)
// it creates the indexes, whatever it did before.
func (p *Presence) beat(ctx context.Context) error {
	res, err := p.procs.UpdateOne(ctx, bson.D{{Key: "_id", Value: p.process}},
		bson.A{bson.D{{Key: "$set", Value: bson.D{{Key: "at", Value: "$$NOW"}}}}},
		options.UpdateOne().SetUpsert(true))
	if err != nil {
		return fmt.Errorf("presence: heartbeat: %w", err)
	}
	if res.UpsertedCount == 0 {
		return nil
	}
	if _, err := p.procs.Indexes().CreateOne(ctx, mongodrv.IndexModel{
		Keys:    bson.D{{Key: "at", Value: 1}},
		Options: options.Index().SetExpireAfterSeconds(int32(PresenceTTL / time.Second)),
	}); err != nil {
		return fmt.Errorf("presence: create the heartbeat expiry index: %w", err)
	}
	if _, err := p.users.Indexes().CreateOne(ctx, mongodrv.IndexModel{
		Keys: bson.D{{Key: "process", Value: 1}},
	}); err != nil {
		return fmt.Errorf("presence: create the process index: %w", err)
	}
	return nil
}

// liveProcesses returns the processes whose heartbeat is younger than
// PresenceTTL by the server's clock.
func (p *Presence) liveProcesses(ctx context.Context) (map[string]bool, error) {
	cur, err := p.procs.Find(ctx, bson.D{{Key: "$expr", Value: bson.D{
		{Key: "$gt", Value: bson.A{"$at", serverNowMinus(PresenceTTL)}},
	}}})
	if err != nil {
		return nil, fmt.Errorf("presence: read heartbeats: %w", err)
	}
	var docs []struct {
		ID string `bson:"_id"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("presence: read heartbeats: %w", err)
	}
	live := make(map[string]bool, len(docs))
	for _, d := range docs {
		live[d.ID] = true
	}
	return live, nil
}

// write makes this process's entries, stored is, those of local: it
// inserts the missing ones (joins, and entries another process deleted
// while this one's heartbeat was late) and deletes those not in local
// (leaves). Nobody joining or leaving writes nothing.
func (p *Presence) write(ctx context.Context, local []store.PresenceEntry, stored map[string]bool) error {
	var joins []mongodrv.WriteModel
	want := make(map[string]bool, len(local))
	for _, e := range local {
		id := presenceID(e.Topic, e.User, p.process)
		if want[id] {
			continue
		}
		want[id] = true
		if stored[id] {
			continue
		}
		joins = append(joins, mongodrv.NewUpdateOneModel().
			SetFilter(bson.D{{Key: "_id", Value: id}}).
			SetUpdate(bson.A{bson.D{{Key: "$set", Value: bson.D{
				{Key: "topic", Value: e.Topic},
				{Key: "user", Value: e.User},
				{Key: "process", Value: p.process},
				{Key: "since", Value: e.Since},
				{Key: "at", Value: "$$NOW"},
			}}}}).
			SetUpsert(true))
	}
	var leaves bson.A
	for id := range stored {
		if !want[id] {
			leaves = append(leaves, id)
		}
	}
	if len(joins) > 0 {
		if _, err := p.users.BulkWrite(ctx, joins, options.BulkWrite().SetOrdered(false)); err != nil {
			return fmt.Errorf("presence: write who joined: %w", err)
		}
	}
	if len(leaves) > 0 {
		if _, err := p.users.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: leaves}}}}); err != nil {
			return fmt.Errorf("presence: delete who left: %w", err)
		}
	}
	return nil
}

// Leave deletes this process's entries and its heartbeat, so its users
// leave at once for the others.
func (p *Presence) Leave(ctx context.Context) error {
	_, err := p.users.DeleteMany(ctx, bson.D{{Key: "process", Value: p.process}})
	_, err2 := p.procs.DeleteOne(ctx, bson.D{{Key: "_id", Value: p.process}})
	return errors.Join(err, err2)
}

// SharePresence shares this process's present users with the other
// processes of the deployment: RunPresence with a new Presence.
func (m *Store) SharePresence(ctx context.Context, local func() []store.PresenceEntry, apply func([]store.PresenceEntry)) {
	m.RunPresence(ctx, m.NewPresence(), local, apply)
}

// RunPresence calls Sync with local() every PresenceInterval, passing the
// other processes' entries to apply, until ctx ends; then it deletes this
// process's entries (Leave). When Sync has failed for longer than
// PresenceTTL, apply gets nil: what it last read has expired. Errors go
// to the Store's log.
func (m *Store) RunPresence(ctx context.Context, p *Presence, local func() []store.PresenceEntry, apply func([]store.PresenceEntry)) {
	defer func() {
		gctx, cancel := context.WithTimeout(context.Background(), presenceGoodbye)
		defer cancel()
		if err := p.Leave(gctx); err != nil {
			m.log.Warn("presence: could not delete this process's entries; they go with its heartbeat", "err", err)
		}
	}()
	lastOK := time.Now()
	tick := time.NewTicker(PresenceInterval)
	defer tick.Stop()
	for {
		others, err := p.Sync(ctx, local())
		switch {
		case err == nil:
			lastOK = time.Now()
			apply(others)
		case ctx.Err() != nil:
			return
		default:
			m.log.Warn("presence: sync failed", "err", err)
			if time.Since(lastOK) > PresenceTTL {
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
