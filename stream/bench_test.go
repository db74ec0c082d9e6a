package stream

import (
	"fmt"
	"sync"
	"testing"
)

// benchFanout registers subs subscribers on each of topics topics, each
// drained by its own goroutine, and measures handing one event per topic
// to all of them.
func benchFanout(b *testing.B, topics, subs int) {
	m := New(newFakeSource(), Config{QueueSize: 1024, MaxTopics: topics + 1})
	m.last = fakePos(0)
	names := make([]string, topics)
	var wg sync.WaitGroup
	var all []*subscriber
	for i := range names {
		names[i] = fmt.Sprintf("rooms/r%d", i)
		for range subs {
			s, _ := m.subscribe([]string{names[i]})
			all = append(all, s)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range s.ch {
				}
			}()
		}
	}
	data := []byte(`{"topic":"rooms/r0","op":"insert","message":{"id":"65a1b2c3d4e5f60718293a4b","room":"r0","author":"alice","text":"hello there, this is a typical chat message","createdAt":"2026-11-25T07:00:00Z"}}`)
	batch := Batch{Events: make([]Event, topics)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		for j := range batch.Events {
			batch.Events[j] = Event{ID: fakePos(i*topics + j + 1), Topic: names[j], Name: "message", Data: data}
		}
		batch.Checkpoint = batch.Events[topics-1].ID
		m.apply(batch)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*topics*subs), "ns/delivery")
	if d := m.Stats().DroppedSlow; d > 0 {
		b.ReportMetric(float64(d), "dropped")
	}
	m.mu.Lock()
	for _, s := range all {
		m.dropLocked(s, "")
	}
	m.mu.Unlock()
	wg.Wait()
}

func BenchmarkFanout1Topic10000Subscribers(b *testing.B)  { benchFanout(b, 1, 10000) }
func BenchmarkFanout1000Topics10Subscribers(b *testing.B) { benchFanout(b, 1000, 10) }

func BenchmarkAppendEvent(b *testing.B) {
	data := []byte(`{"topic":"orders/65a1b2c3d4e5f60718293a4b","op":"update","order":{"id":"65a1b2c3d4e5f60718293a4b","customer":"alice","items":[{"sku":"pizza","qty":1}],"status":"preparing","version":2}}`)
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for range b.N {
		buf, _ = AppendEvent(buf[:0], "5f3a9c01-00000000000004d2", "order", data)
	}
	b.SetBytes(int64(len(buf)))
}
