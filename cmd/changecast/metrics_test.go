package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"changecast/store"
	"changecast/store/bolt"
)

// seerBackend is a backend whose feed says what it has read (as the
// MongoDB store's does) and which counts the calls that would read the
// log: on MongoDB each Head without a feed point and each Follow opens a
// change stream, and a second Follow used to take over the feed's
// bookkeeping.
type seerBackend struct {
	store.Backend
	seen    string
	pending time.Time
	reads   atomic.Int64
}

func (b *seerBackend) SeenHead() (string, time.Time, bool) { return b.seen, b.pending, true }

func (b *seerBackend) Head(ctx context.Context) (string, error) {
	b.reads.Add(1)
	return b.Backend.Head(ctx)
}

func (b *seerBackend) Follow(ctx context.Context, after string, fn func(store.Batch) error) error {
	b.reads.Add(1)
	return b.Backend.Follow(ctx, after, fn)
}

// A scrape reads the feed's lag from what the feed has read, without
// reading the log (item 1): however many scrapes, no Head, no Follow.
func TestFeedLagReadsNoLog(t *testing.T) {
	bs, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	ctx := t.Context()
	applied, err := bs.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bs.PostMessage(ctx, "r", "a", "one"); err != nil {
		t.Fatal(err)
	}
	head, _ := bs.Head(ctx)
	now := time.Now()
	b := &seerBackend{Backend: bs, seen: head, pending: now.Add(-42 * time.Second)}
	for range 100 {
		if lag, ok := feedLag(ctx, b, applied, now); !ok || lag != 42 {
			t.Fatalf("a change read and not handed over for 42 s: lag %v (ok %v), want 42", lag, ok)
		}
	}
	b.pending = time.Time{}
	if lag, ok := feedLag(ctx, b, applied, now); !ok || lag != 0 {
		t.Errorf("everything read handed over: lag %v (ok %v), want 0", lag, ok)
	}
	if n := b.reads.Load(); n != 0 {
		t.Errorf("101 lag readings read the log %d times (Head or Follow), want 0", n)
	}
}
