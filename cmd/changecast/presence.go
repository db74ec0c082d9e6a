package main

import (
	"context"
	"sync"

	"changecast/protocol"
	"changecast/store"
	"changecast/store/mongo"
	"changecast/stream"
)

// sharePresence makes every process of a MongoDB deployment see every
// process's users on the rooms: a goroutine writes the joins and leaves
// of mux's users and this process's heartbeat to the presence
// collections and gives mux the others' users (see mongo.RunPresence for
// how stale they can be). With the embedded store there is one
// process and nothing to share. The returned stop ends the goroutine,
// which deletes this process's entries, and waits for it; call it
// before the store is closed.
func sharePresence(ctx context.Context, b store.Backend, mux *stream.Multiplexer) (stop func()) {
	m, ok := b.(*mongo.Store)
	if !ok {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		m.RunPresence(ctx, m.NewPresence(), func() []mongo.PresenceEntry {
			var out []mongo.PresenceEntry
			for topic, ms := range mux.LocalPresence() {
				for _, mb := range ms {
					out = append(out, mongo.PresenceEntry{Topic: topic, User: mb.User, Since: mb.Since})
				}
			}
			return out
		}, func(others []mongo.PresenceEntry) {
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
