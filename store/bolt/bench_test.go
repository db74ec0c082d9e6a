package bolt

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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

// BenchmarkBackup measures Backup (into io.Discard) and Inspect of a
// store of about 150 MB (4,000 messages of 4,000 four-byte characters,
// each kept as a message and as a change), reporting MB/s.
func BenchmarkBackup(b *testing.B) {
	dir := b.TempDir()
	s := testOpen(b, dir, Options{}, nil)
	text := strings.Repeat("\U0001F600", store.MaxTextLen)
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := range 125 {
				if _, err := s.PostMessage(context.Background(), fmt.Sprint("room", w), "bench", fmt.Sprint(i, text[4*10:])); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.Run("Backup", func(b *testing.B) {
		var n int64
		for b.Loop() {
			var err error
			if n, err = s.Backup(context.Background(), io.Discard); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(n)
	})
	path := filepath.Join(b.TempDir(), fileName)
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	n, err := s.Backup(context.Background(), f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		b.Fatal(err)
	}
	b.Run("Inspect", func(b *testing.B) {
		for b.Loop() {
			if _, err := Inspect(path); err != nil {
				b.Fatal(err)
			}
		}
		b.SetBytes(n)
	})
}
