package bolt

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"changecast/store"
)

// BenchmarkAppend measures durable writes (one fsync per group commit)
// with 1, 8 and 64 concurrent writers, reporting writes per second and how
// many writes shared each commit.
func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := testOpen(b, "", Options{}, nil)
			ctx := context.Background()
			commits := s.commits.Load()
			var (
				next   atomic.Int64
				failed atomic.Value
				wg     sync.WaitGroup
			)
			b.ResetTimer()
			for w := range writers {
				wg.Go(func() {
					room := fmt.Sprint("room", w)
					for next.Add(1) <= int64(b.N) {
						if _, err := s.PostMessage(ctx, room, "bench", "hello, world"); err != nil {
							failed.Store(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			if err := failed.Load(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
			b.ReportMetric(float64(b.N)/float64(max(1, s.commits.Load()-commits)), "writes/commit")
		})
	}
}

// BenchmarkCatchUp measures catching up 1,000 changes of one topic
// from a log where they are 1 in 50 changes (50,000 in all).
func BenchmarkCatchUp(b *testing.B) {
	const (
		wanted = 1000
		rooms  = 50
		total  = wanted * rooms
	)
	s := testOpen(b, "", Options{}, nil)
	ctx := context.Background()
	start := mustHead(b, s)
	var (
		next   atomic.Int64
		failed atomic.Value
		wg     sync.WaitGroup
	)
	for range 64 {
		wg.Go(func() {
			for i := next.Add(1); i <= total; i = next.Add(1) {
				if _, err := s.PostMessage(ctx, fmt.Sprint("room", i%rooms), "bench", "hello, world"); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	head := mustHead(b, s)
	topics := []string{store.RoomTopic("room7")}
	b.Run(fmt.Sprintf("events=%d/of=%d", wanted, total), func(b *testing.B) {
		for b.Loop() {
			n := 0
			if err := s.CatchUp(ctx, topics, start, head, func(store.Change) error { n++; return nil }); err != nil {
				b.Fatal(err)
			}
			if n != wanted {
				b.Fatalf("caught up %d changes, want %d", n, wanted)
			}
		}
		b.ReportMetric(float64(wanted*b.N)/b.Elapsed().Seconds(), "events/s")
	})
}
