package mongo_test

import (
	"slices"
	"testing"
	"time"

	"changecast/store"
	"changecast/store/mongo"
)

func presentUsers(es []store.PresenceEntry) []string {
	out := []string{}
	for _, e := range es {
		out = append(out, e.Topic+" "+e.User)
	}
	slices.Sort(out)
	return out
}

// TestRealPresenceTwoProcesses: two processes (two Stores, two
// Presences) on one database see each other's users, not their own; a
// leave is seen at the next round; a stopped one's entries go at once;
// a vanished one's (no goodbye, as after SIGKILL) are no longer read
// once its heartbeat is older than PresenceTTL by the server's clock, and
// are deleted; when it comes back it writes them again.
func TestRealPresenceTwoProcesses(t *testing.T) {
	r := realServer(t)
	s1, s2, s3 := r.open(t), r.open(t), r.open(t)
	p1, p2, p3 := s1.NewPresence(), s2.NewPresence(), s3.NewPresence()
	ctx := ctxWait(t)
	now := time.Now()
	alice := []store.PresenceEntry{{Topic: "rooms/a", User: "alice", Since: now}}
	bob := []store.PresenceEntry{{Topic: "rooms/a", User: "bob", Since: now}}
	sync := func(p *mongo.Presence, local []store.PresenceEntry, want ...string) {
		t.Helper()
		got, err := p.Sync(ctx, local)
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if want == nil {
			want = []string{}
		}
		if g := presentUsers(got); !slices.Equal(g, want) {
			t.Fatalf("Sync read %q, want %q", g, want)
		}
	}
	sync(p1, alice)
	sync(p2, bob, "rooms/a alice")
	sync(p1, alice, "rooms/a bob")
	sync(p1, nil, "rooms/a bob") // alice left p1
	sync(p2, bob)
	if err := p2.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	sync(p1, nil)

	// p3 writes carol, then vanishes without a goodbye.
	carol := []store.PresenceEntry{{Topic: "rooms/b", User: "carol", Since: now}}
	sync(p3, carol)
	sync(p1, nil, "rooms/b carol")
	deadline := time.Now().Add(mongo.PresenceTTL + mongo.PresenceInterval)
	for {
		got, err := p1.Sync(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a vanished process's users still read %v after its entries expired", presentUsers(got))
		}
		time.Sleep(500 * time.Millisecond) // polling for the expiry, the bound under test
	}
	// p3 beats again: its entry, deleted as a dead process's, is back.
	sync(p3, carol)
	sync(p1, nil, "rooms/b carol")
}
