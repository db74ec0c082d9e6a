package bolt

import (
	"context"
	"testing"
	"time"

	"changecast/store"
	"changecast/store/storetest"
)

// TestConformance runs the conformance suite against the embedded store.
func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Storage: func(t *testing.T) func(t *testing.T) store.Backend {
			dir := t.TempDir()
			return func(t *testing.T) store.Backend { return confOpen(t, dir, Options{}) }
		},
		LoseHistory: func(t *testing.T) (store.Backend, string) {
			// Keep only the newest change; prune by hand, not by timer.
			bt := confOpen(t, t.TempDir(), Options{RetainCount: 1, PruneInterval: time.Hour})
			ctx := context.Background()
			first, err := bt.Head(ctx)
			if err != nil {
				t.Fatalf("Head: %v", err)
			}
			o := mustOrder(t, bt, "ann")
			for _, st := range []string{store.StatusPreparing, store.StatusOutForDelivery, store.StatusDelivered} {
				if _, err := bt.UpdateOrderStatus(ctx, o.ID, st, 0); err != nil {
					t.Fatalf("UpdateOrderStatus(%s): %v", st, err)
				}
			}
			n, err := bt.prune(ctx)
			if err != nil || n == 0 {
				t.Fatalf("prune: pruned %d, %v; want the older changes gone", n, err)
			}
			return bt, first
		},
	})
}

// confOpen opens a store in dir, closed by cleanup.
func confOpen(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	b, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}
