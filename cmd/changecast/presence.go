package main

import (
	"context"
	"sync"

	"changecast/protocol"
	"changecast/store"
	"changecast/store/mongo"
	"changecast/stream"
)

// presenceSharer is a backend that shares presence between the processes
// of a deployment: local is called for this process's present users,
// apply with the others', until ctx ends. The MongoDB store is one; the
// embedded store has one process and nothing to share.
type presenceSharer interface {
	SharePresence(ctx context.Context, local func() []store.PresenceEntry, apply func([]store.PresenceEntry))
}

var _ presenceSharer = (*mongo.Store)(nil)

// sharePresence makes every process of a deployment whose backend is a
// presenceSharer see every process's users on the rooms: a goroutine
// tells the backend mux's users and gives mux the others' (see
// mongo.RunPresence for how stale they can be). The returned stop ends
// the goroutine, which lets the backend delete this process's entries,
// and waits for it; call it before the store is closed.
func sharePresence(ctx context.Context, b store.Backend, mux *stream.Multiplexer) (stop func()) {
	ps, ok := b.(presenceSharer)
	if !ok {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		ps.SharePresence(ctx, func() []store.PresenceEntry {
			var out []store.PresenceEntry
			for topic, ms := range mux.LocalPresence() {
				for _, mb := range ms {
					out = append(out, store.PresenceEntry{Topic: topic, User: mb.User, Since: mb.Since})
				}
			}
			return out
		}, func(others []store.PresenceEntry) {
			remote := make(map[string][]protocol.Member)
			for _, e := range others {
				remote[e.Topic] = append(remote[e.Topic], protocol.Member{User: e.User, Since: e.Since})
			}
			mux.SetRemotePresence(remote)
		})
	})
	var once sync.Once
	return func() { once.Do(func() { cancel(); wg.Wait() }) }
}
