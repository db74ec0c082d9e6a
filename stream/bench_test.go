package stream

import (
	"fmt"
	"sync"
	"testing"
)

// benchData is a typical chat message payload.
var benchData = []byte(`{"topic":"rooms/r0","op":"insert","message":{"id":"65a1b2c3d4e5f60718293a4b","room":"r0","author":"alice","text":"hello there, this is a typical chat message","createdAt":"2026-11-25T07:00:00Z"}}`)

// fanoutBench is a multiplexer with subs subscribers on each of topics
// topics and the batches to feed it, one event per topic each.
type fanoutBench struct {
	m       *Multiplexer
	subs    []*subscriber
	batches []Batch
}

func newFanoutBench(b *testing.B, topics, subs, queue int) *fanoutBench {
	b.Helper()
	fb := &fanoutBench{m: New(newFakeSource(), Config{QueueSize: queue, MaxTopics: topics})}
	fb.m.last = fakePos(0)
	names := make([]string, topics)
	for i := range names {
		names[i] = fmt.Sprintf("rooms/r%d", i)
		for range subs {
			s, _ := fb.m.subscribe([]string{names[i]})
			fb.subs = append(fb.subs, s)
		}
	}
	// Positions are made before timing: making them is not fan-out.
	fb.batches = make([]Batch, b.N)
	for i := range fb.batches {
		evs := make([]Event, topics)
		for j := range evs {
			evs[j] = Event{ID: fakePos(i*topics + j + 1), Topic: names[j], Name: "message", Data: benchData}
		}
		fb.batches[i] = Batch{Events: evs, Checkpoint: evs[topics-1].ID}
	}
	return fb
}

func (fb *fanoutBench) report(b *testing.B, deliveries int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*deliveries), "ns/delivery")
	if d := fb.m.Stats().DroppedSlow; d > 0 {
		b.Fatalf("%d subscribers dropped: the figures would not count them", d)
	}
}

// benchFanout measures apply alone: encoding each event once and handing
// it to every subscriber's queue. Queues are emptied with the timer
// stopped before they fill.
func benchFanout(b *testing.B, topics, subs int) {
	const queue = 64
	fb := newFanoutBench(b, topics, subs, queue)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%queue == queue-1 {
			b.StopTimer()
			for _, s := range fb.subs {
				q, _ := s.take(nil)
				clear(q)
				s.take(q)
			}
			b.StartTimer()
		}
		fb.m.apply(fb.batches[i])
	}
	b.StopTimer()
	fb.report(b, topics*subs)
}

// benchFanoutWoken is benchFanout with a goroutine parked on each queue,
// as Serve's goroutines are: each send then also wakes a goroutine, which
// competes for the same CPUs.
func benchFanoutWoken(b *testing.B, topics, subs int) {
	fb := newFanoutBench(b, topics, subs, 1024)
	var wg sync.WaitGroup
	for _, s := range fb.subs {
		wg.Go(func() {
			var spare []*frame
			for range s.wake {
				q, done := s.take(spare)
				if done {
					return
				}
				spare = q[:0]
			}
		})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		fb.m.apply(fb.batches[i])
	}
	b.StopTimer()
	fb.report(b, topics*subs)
	fb.m.mu.Lock()
	for _, s := range fb.subs {
		fb.m.dropLocked(s, "")
	}
	fb.m.mu.Unlock()
	wg.Wait()
}

func BenchmarkFanout(b *testing.B) {
	b.Run("1topic×10000subs", func(b *testing.B) { benchFanout(b, 1, 10000) })
	b.Run("1000topics×10subs", func(b *testing.B) { benchFanout(b, 1000, 10) })
}

func BenchmarkFanoutWoken(b *testing.B) {
	b.Run("1topic×10000subs", func(b *testing.B) { benchFanoutWoken(b, 1, 10000) })
	b.Run("1000topics×10subs", func(b *testing.B) { benchFanoutWoken(b, 1000, 10) })
}

func BenchmarkAppendEvent(b *testing.B) {
	data := []byte(`{"topic":"orders/65a1b2c3d4e5f60718293a4b","op":"update","order":{"id":"65a1b2c3d4e5f60718293a4b","customer":"alice","items":[{"sku":"pizza","qty":1}],"status":"preparing","version":2}}`)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for range b.N {
		buf, _ = AppendEvent(buf[:0], "5f3a9c01-00000000000004d2", "order", data)
	}
	b.SetBytes(int64(len(buf)))
}
