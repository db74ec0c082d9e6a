package mongo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"changecast/store"
	"changecast/store/storetest"
)

// TestConformance runs the conformance suite against the replica set
// MONGODB_URI names, in a fresh database per run, dropped afterwards.
func TestConformance(t *testing.T) {
	uri := os.Getenv("MONGODB_URI")
	if uri == "" {
		t.Skip("MONGODB_URI not set: MongoDB conformance skipped")
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	database := "changecast_conf_" + hex.EncodeToString(rnd[:])
	open := func(t *testing.T) store.Backend {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), storetest.Wait)
		defer cancel()
		m, err := Open(ctx, uri, database, Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		t.Cleanup(func() { _ = m.Close() })
		return m
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), storetest.Wait)
		defer cancel()
		m, err := Open(ctx, uri, database, Options{})
		if err != nil {
			t.Errorf("drop the test database %s: %v", database, err)
			return
		}
		defer m.Close()
		if err := m.db.Drop(ctx); err != nil {
			t.Errorf("drop the test database %s: %v", database, err)
		}
	})
	storetest.Run(t, storetest.Harness{
		// One database per run; every case uses its own orders and rooms.
		Storage: func(*testing.T) func(t *testing.T) store.Backend { return open },
		LoseHistory: func(t *testing.T) (store.Backend, string) {
			// The oplog cannot be made to roll over from here; a
			// high-water mark moved back to 1970 is older than any
			// oplog, which the server reports as lost history.
			b := open(t)
			head, err := b.Head(context.Background())
			if err != nil {
				t.Fatalf("Head: %v", err)
			}
			return b, head[:2] + "0000000100000001" + head[18:]
		},
	})
}
