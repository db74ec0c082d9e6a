package mongo

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/xoptions"

	"changecast/store"
)

// fakePresence is a server for the presence collections: it keeps their
// documents, answers update (upserts by _id, with a $set document or an
// update pipeline of one $set), find and delete in mongod's shapes, and
// counts the writes. Its clock is the test's (synctest's fake time): "$$NOW"
// in an update is its time, and it judges a heartbeat's age itself for the
// $expr filters it is sent (which must use $$NOW, checked by
// TestPresenceServerClock). It is safe for concurrent use.
type fakePresence struct {
	// started is the last command the client started, as command
	// monitoring gives it: with its document sequences (updates,
	// deletes) in the body, which the wire-level reply does not get.
	// Presence sends one command at a time.
	started  bson.Raw
	mu       sync.Mutex
	colls    map[string]map[string]bson.M // collection → _id → document
	cmds     []command
	writes   int // write statements: each update statement, each delete
	indexCmd map[string]int
}

func newFakePresence() *fakePresence {
	return &fakePresence{colls: map[string]map[string]bson.M{}, indexCmd: map[string]int{}}
}

// drop forgets every document, as dropDatabase does (and the indexes).
func (f *fakePresence) drop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.colls = map[string]map[string]bson.M{}
}

func (f *fakePresence) coll(name string) map[string]bson.M {
	if f.colls[name] == nil {
		f.colls[name] = map[string]bson.M{}
	}
	return f.colls[name]
}

// open opens a Store whose clients talk to f.
func (f *fakePresence) open(tb testing.TB) *Store {
	tb.Helper()
	d := newScriptDeployment(func(name string, body bson.Raw) bson.D {
		switch name {
		case "ping", "endSessions":
			return okReply()
		}
		return f.reply(name, body)
	})
	s, err := Open(context.Background(), "mongodb://127.0.0.1:27017", testDB, Options{clientOptions: func(_ string, o *options.ClientOptions) error {
		o.SetMonitor(&event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
			f.mu.Lock()
			f.started = slices.Clone(e.Command)
			f.mu.Unlock()
		}})
		return xoptions.SetInternalClientOptions(o, "deployment", d)
	}})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func (f *fakePresence) reply(name string, _ bson.Raw) bson.D {
	f.mu.Lock()
	defer f.mu.Unlock()
	body := f.started
	f.cmds = append(f.cmds, command{Name: name, Body: body})
	coll := lookupString(body, name)
	now := time.Now()
	switch name {
	case "createIndexes":
		f.indexCmd[coll]++
		return okReply()
	case "update":
		ups, _ := body.Lookup("updates").Array().Values()
		var upserted bson.A
		for i, u := range ups {
			f.writes++
			d := u.Document()
			id := lookupString(d, "q", "_id")
			var set bson.Raw
			if pipe, ok := d.Lookup("u").ArrayOK(); ok {
				set = pipe.Index(0).Document().Lookup("$set").Document()
			} else {
				set = d.Lookup("u", "$set").Document()
			}
			c := f.coll(coll)
			doc := c[id]
			if doc == nil {
				doc = bson.M{"_id": id}
				c[id] = doc
				upserted = append(upserted, bson.D{{Key: "index", Value: int32(i)}, {Key: "_id", Value: id}})
			}
			elems, _ := set.Elements()
			for _, e := range elems {
				if s, ok := e.Value().StringValueOK(); ok && s == "$$NOW" {
					doc[e.Key()] = bson.NewDateTimeFromTime(now)
					continue
				}
				doc[e.Key()] = e.Value()
			}
		}
		r := bson.D{{Key: "n", Value: int32(len(ups))}, {Key: "nModified", Value: int32(len(ups) - len(upserted))}}
		if len(upserted) > 0 {
			r = append(r, bson.E{Key: "upserted", Value: upserted})
		}
		return append(r, bson.E{Key: "ok", Value: 1.0})
	case "delete":
		dels, _ := body.Lookup("deletes").Array().Values()
		n := 0
		for _, dv := range dels {
			f.writes++
			q := dv.Document().Lookup("q").Document()
			c := f.coll(coll)
			for id, doc := range c {
				if f.matches(q, id, doc, now) {
					delete(c, id)
					n++
				}
			}
		}
		return bson.D{{Key: "n", Value: int32(n)}, {Key: "ok", Value: 1.0}}
	case "find":
		filter := body.Lookup("filter").Document()
		var docs []bson.D
		for id, doc := range f.coll(coll) {
			if !f.matches(filter, id, doc, now) {
				continue
			}
			raw, _ := bson.Marshal(doc)
			var d bson.D
			_ = bson.Unmarshal(raw, &d)
			docs = append(docs, d)
		}
		return findReply(coll, docs...)
	}
	return errReply(59, "CommandNotFound")
}

// matches evaluates the filters presence sends: _id, _id $in, process,
// process $in / $ne, and an $expr on at, which it takes as "younger than
// PresenceTTL" ($gt) or its negation ($not).
func (f *fakePresence) matches(q bson.Raw, id string, doc bson.M, now time.Time) bool {
	elems, _ := q.Elements()
	for _, e := range elems {
		var val string
		if e.Key() == "_id" {
			val = id
		} else if s, ok := doc[e.Key()].(bson.RawValue); ok {
			val, _ = s.StringValueOK()
		}
		switch e.Key() {
		case "_id", "process":
			if s, ok := e.Value().StringValueOK(); ok {
				if s != val {
					return false
				}
				continue
			}
			op := e.Value().Document()
			if in, err := op.LookupErr("$in"); err == nil {
				vals, _ := in.Array().Values()
				if !slices.ContainsFunc(vals, func(v bson.RawValue) bool { return v.StringValue() == val }) {
					return false
				}
			}
			if ne, err := op.LookupErr("$ne"); err == nil && ne.StringValue() == val {
				return false
			}
		case "$expr":
			at, ok := doc["at"].(bson.DateTime)
			young := ok && at.Time().After(now.Add(-PresenceTTL))
			if _, err := e.Value().Document().LookupErr("$not"); err == nil {
				young = !young
			}
			if !young {
				return false
			}
		}
	}
	return true
}

func (f *fakePresence) counts() (writes int, indexes map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ix := make(map[string]int, len(f.indexCmd))
	for k, v := range f.indexCmd {
		ix[k] = v
	}
	return f.writes, ix
}

func (f *fakePresence) ids(coll string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for id := range f.colls[coll] {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func manyUsers(n int) []store.PresenceEntry {
	since := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	out := make([]store.PresenceEntry, n)
	for i := range out {
		out[i] = store.PresenceEntry{Topic: store.RoomTopic(fmt.Sprintf("r%d", i%10)), User: fmt.Sprintf("u%d", i), Since: since}
	}
	return out
}

// Presence's cost does not grow with its users: with 1,000 users present
// and nobody joining or leaving, a process writes one heartbeat per
// PresenceInterval; a join or a leave costs one write when it happens.
func TestPresenceWritesPerSecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const users, period = 1000, time.Minute
		f := newFakePresence()
		s := f.open(t)
		var mu sync.Mutex
		local := manyUsers(users)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			s.RunPresence(ctx, s.NewPresence(), func() []store.PresenceEntry {
				mu.Lock()
				defer mu.Unlock()
				return slices.Clone(local)
			}, func([]store.PresenceEntry) {})
		}()
		synctest.Wait() // the first round: everyone joins
		first, _ := f.counts()
		time.Sleep(period) // 12 more rounds, nobody joins or leaves
		synctest.Wait()
		steady, _ := f.counts()
		rounds := int(period / PresenceInterval)
		perSec := float64(steady-first) / period.Seconds()
		t.Logf("%d users present: %d writes in the first round, then %d writes in %v (%.2f/s)", users, first, steady-first, period, perSec)
		if steady-first != rounds {
			t.Errorf("writes in %d rounds with %d users present and no change: got %d, want %d (one heartbeat a round)", rounds, users, steady-first, rounds)
		}

		// Ten leave and five join: one round writes the heartbeat, the
		// joins (one statement each) and one delete.
		mu.Lock()
		local = append(local[10:], manyUsers(users + 5)[users:]...)
		mu.Unlock()
		time.Sleep(PresenceInterval)
		synctest.Wait()
		churn, _ := f.counts()
		if got := churn - steady; got != 1+5+1 {
			t.Errorf("writes of a round where 10 left and 5 joined: got %d, want 7", got)
		}
		if got := len(f.ids(presenceColl)); got != users-5 {
			t.Errorf("entries stored: got %d, want %d", got, users-5)
		}
		cancel()
		<-done
	})
}

// Liveness is judged by the server's clock alone: the heartbeat and the
// entries are stamped with $$NOW, every filter on time compares with
// $$NOW, and no command carries a time from the process's clock (except
// since, shown to clients). A process that stops beating has its users
// leave for the others after PresenceTTL, and its entries are deleted.
func TestPresenceServerClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakePresence()
		s := f.open(t)
		p1, p2 := s.NewPresence(), s.NewPresence()
		ctx := context.Background()
		alice := []store.PresenceEntry{{Topic: "rooms/a", User: "alice", Since: time.Now()}}
		bob := []store.PresenceEntry{{Topic: "rooms/a", User: "bob", Since: time.Now()}}
		sync := func(p *Presence, local []store.PresenceEntry, want ...string) {
			t.Helper()
			got, err := p.Sync(ctx, local)
			if err != nil {
				t.Fatalf("Sync: %v", err)
			}
			var users []string
			for _, e := range got {
				users = append(users, e.User)
			}
			if !slices.Equal(users, want) {
				t.Fatalf("Sync read %v, want %v", users, want)
			}
		}
		sync(p1, alice)
		sync(p2, bob, "alice")
		sync(p1, alice, "bob")
		time.Sleep(PresenceTTL / 2)
		sync(p1, alice, "bob") // p2 beat PresenceTTL/2 ago: alive
		time.Sleep(PresenceTTL/2 + time.Second)
		sync(p1, alice) // p2 has not beaten for longer than PresenceTTL
		if got, want := f.ids(presenceColl), []string{presenceID("rooms/a", "alice", p1.process)}; !slices.Equal(got, want) {
			t.Errorf("entries after p2 stopped: got %q, want only alice's (p2's deleted)", got)
		}
		// p2 comes back: its entry is written again.
		sync(p2, bob, "alice")
		sync(p1, alice, "bob")

		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.cmds {
			for _, path := range clientTimes(c.Body, "") {
				t.Errorf("%s sends a time of the process's clock at %s", c.Name, path)
			}
			if c.Name == "find" && lookupString(c.Body, "find") == presenceProcesses {
				if s := c.Body.Lookup("filter").String(); !strings.Contains(s, `"$$NOW"`) {
					t.Errorf("heartbeats read with %s, want a comparison with $$NOW", s)
				}
			}
		}
	})
}

// clientTimes returns the paths of the datetime values in d, but for an
// entry's since.
func clientTimes(d bson.Raw, prefix string) []string {
	var out []string
	elems, _ := d.Elements()
	for _, e := range elems {
		path := prefix + "." + e.Key()
		v := e.Value()
		switch v.Type {
		case bson.TypeDateTime:
			if e.Key() != "since" {
				out = append(out, path)
			}
		case bson.TypeEmbeddedDocument, bson.TypeArray:
			out = append(out, clientTimes(v.Value, path)...)
		}
	}
	return out
}

// After the presence collections are dropped (a collection drop, or a
// dropDatabase, which also invalidates the feed), the next round creates
// the heartbeat's TTL index again and writes this process's users again.
func TestPresenceIndexAfterDrop(t *testing.T) {
	f := newFakePresence()
	s := f.open(t)
	p := s.NewPresence()
	ctx := context.Background()
	local := []store.PresenceEntry{{Topic: "rooms/a", User: "alice", Since: time.Now()}}
	for range 2 {
		if _, err := p.Sync(ctx, local); err != nil {
			t.Fatal(err)
		}
	}
	if _, ix := f.counts(); ix[presenceProcesses] != 1 {
		t.Fatalf("heartbeat index created %d times in two rounds, want once", ix[presenceProcesses])
	}
	idx := f.lastCommand("createIndexes")
	if ttl, ok := idx.Lookup("indexes", "0", "expireAfterSeconds").AsInt64OK(); lookupString(idx, "createIndexes") != presenceProcesses || !ok || ttl != int64(PresenceTTL/time.Second) {
		t.Errorf("index %s: want a TTL index of %v on the heartbeats", idx, PresenceTTL)
	}
	f.drop()
	if _, err := p.Sync(ctx, local); err != nil {
		t.Fatal(err)
	}
	if _, ix := f.counts(); ix[presenceProcesses] != 2 {
		t.Errorf("heartbeat index created %d times, want again after the drop", ix[presenceProcesses])
	}
	if got := f.ids(presenceColl); len(got) != 1 {
		t.Errorf("entries after the drop and a round: got %q, want alice's again", got)
	}
}

func (f *fakePresence) lastCommand(name string) bson.Raw {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := len(f.cmds) - 1; i >= 0; i-- {
		if f.cmds[i].Name == name {
			if lookupString(f.cmds[i].Body, name) == presenceProcesses {
				return f.cmds[i].Body
			}
		}
	}
	return nil
}
