package mongo

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

func presenceReply(extra ...bson.E) bson.D {
	return append(bson.D{{Key: "ok", Value: 1.0}}, extra...)
}

// TestPresenceSyncCommands checks what one presence round sends: the
// expiry index once, an upsert per local entry with expiresAt = now +
// PresenceTTL, a delete of this process's entries not rewritten, and a
// find of the other processes' unexpired entries; and what it returns.
func TestPresenceSyncCommands(t *testing.T) {
	mm := openMock(t, Options{})
	p := mm.store.NewPresence()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	p.now = func() time.Time { return now }
	since := now.Add(-time.Minute)
	other := bson.D{
		{Key: "_id", Value: "rooms/a\ncarol\nfeedbeef"}, {Key: "topic", Value: "rooms/a"}, {Key: "user", Value: "carol"},
		{Key: "process", Value: "feedbeef"}, {Key: "since", Value: bson.NewDateTimeFromTime(since)},
		{Key: "expiresAt", Value: bson.NewDateTimeFromTime(now.Add(10 * time.Second))},
	}
	mm.data.AddResponses(
		presenceReply(bson.E{Key: "numIndexesBefore", Value: int32(1)}, bson.E{Key: "numIndexesAfter", Value: int32(2)}),
		presenceReply(bson.E{Key: "n", Value: int32(2)}, bson.E{Key: "nModified", Value: int32(0)}),
		presenceReply(bson.E{Key: "n", Value: int32(1)}),
		findReply(presenceColl, other),
	)
	before := len(mm.dataCmds.names())
	local := []PresenceEntry{{Topic: "rooms/a", User: "alice", Since: since}, {Topic: "rooms/b", User: "alice", Since: since}}
	got, err := p.Sync(context.Background(), local)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if len(got) != 1 || got[0].Topic != "rooms/a" || got[0].User != "carol" || !got[0].Since.Equal(since) {
		t.Fatalf("Sync returned %+v, want carol on rooms/a", got)
	}
	if names := mm.dataCmds.names()[before:]; !slices.Equal(names, []string{"createIndexes", "update", "delete", "find"}) {
		t.Fatalf("commands %q, want createIndexes, update, delete, find", names)
	}
	idx := mm.dataCmds.named("createIndexes")
	ib := idx[len(idx)-1].Body
	if lookupString(ib, "createIndexes") != presenceColl {
		t.Fatalf("index on %s", ib)
	}
	if ttl, ok := ib.Lookup("indexes", "0", "expireAfterSeconds").AsInt64OK(); !ok || ttl != 0 {
		t.Fatalf("index %s: want a TTL index on expiresAt (expireAfterSeconds 0)", ib)
	}
	if k, _ := ib.Lookup("indexes", "0", "key").DocumentOK(); k.Lookup("expiresAt").Type == 0 {
		t.Fatalf("index key %s, want expiresAt", k)
	}
	exp := now.Add(PresenceTTL)
	up := mm.dataCmds.named("update")[0].Body
	if lookupString(up, "update") != presenceColl {
		t.Fatalf("update on %s", up)
	}
	ups, _ := up.Lookup("updates").ArrayOK()
	vals, _ := ups.Values()
	if len(vals) != 2 {
		t.Fatalf("%d upserts, want 2", len(vals))
	}
	for i, v := range vals {
		d := v.Document()
		id := lookupString(d, "q", "_id")
		want := local[i].Topic + "\nalice\n" + p.process
		if id != want {
			t.Errorf("upsert %d _id %q, want %q", i, id, want)
		}
		if u, _ := d.Lookup("upsert").BooleanOK(); !u {
			t.Errorf("upsert %d is not an upsert: %s", i, d)
		}
		if e, _ := d.Lookup("u", "$set", "expiresAt").DateTimeOK(); !time.UnixMilli(e).Equal(exp) {
			t.Errorf("upsert %d expiresAt %v, want now+%v", i, time.UnixMilli(e).UTC(), PresenceTTL)
		}
		if lookupString(d, "u", "$set", "user") != "alice" || lookupString(d, "u", "$set", "topic") != local[i].Topic || lookupString(d, "u", "$set", "process") != p.process {
			t.Errorf("upsert %d sets %s", i, d.Lookup("u"))
		}
	}
	del := mm.dataCmds.named("delete")[0].Body
	if lookupString(del, "deletes", "0", "q", "process") != p.process {
		t.Fatalf("delete %s: want this process's entries only", del)
	}
	if e, _ := del.Lookup("deletes", "0", "q", "expiresAt", "$lt").DateTimeOK(); !time.UnixMilli(e).Equal(exp) {
		t.Fatalf("delete %s: want expiresAt < this round's expiry", del)
	}
	find := mm.dataCmds.named("find")
	fb := find[len(find)-1].Body
	if lookupString(fb, "find") != presenceColl || lookupString(fb, "filter", "process", "$ne") != p.process {
		t.Fatalf("find %s: want the other processes' entries", fb)
	}
	if e, _ := fb.Lookup("filter", "expiresAt", "$gt").DateTimeOK(); !time.UnixMilli(e).Equal(now) {
		t.Fatalf("find %s: want expiresAt > now (the TTL monitor is late)", fb)
	}

	// A second round, with nobody local: no index, no upsert.
	mm.data.AddResponses(presenceReply(bson.E{Key: "n", Value: int32(2)}), findReply(presenceColl))
	before = len(mm.dataCmds.names())
	if got, err := p.Sync(context.Background(), nil); err != nil || len(got) != 0 {
		t.Fatalf("second Sync = %v, %v", got, err)
	}
	if names := mm.dataCmds.names()[before:]; !slices.Equal(names, []string{"delete", "find"}) {
		t.Fatalf("second round's commands %q, want delete, find", names)
	}

	mm.data.AddResponses(presenceReply(bson.E{Key: "n", Value: int32(0)}))
	if err := p.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	dels := mm.dataCmds.named("delete")
	lb := dels[len(dels)-1].Body
	if lookupString(lb, "deletes", "0", "q", "process") != p.process || lb.Lookup("deletes", "0", "q", "expiresAt").Type != 0 {
		t.Fatalf("Leave sent %s, want a delete of every entry of this process", lb)
	}
}
