package stream

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
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
		wake := make(chan struct{}, 1)
		fb.m.mu.Lock()
		s.notify = func() {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		fb.m.mu.Unlock()
		wg.Go(func() {
			var spare []*frame
			for range wake {
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

// discardWriter is a ResponseWriter that flushes and keeps nothing, as an
// HTTP/2 stream's would; it cannot be taken over.
type discardWriter struct{ header http.Header }

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) Flush()                      {}

// benchDeliver measures one stream's whole delivery path: bursts of
// events applied to the multiplexer, taken from the subscriber's queue
// and written to the client by the stream's goroutine. open starts the
// stream and returns a function that ends it.
func benchDeliver(b *testing.B, open func(m *Multiplexer) (stop func())) {
	const burst = 16
	m := startMux(b, newFakeSource(), Config{QueueSize: 1 << 20})
	stop := open(m)
	defer stop()
	waitFor(b, "the snapshot", func() bool { return m.delivered.Load() == 1 })
	if head := m.lastPos(); head != fakePos(0) {
		b.Fatalf("the feed is at %s; want the empty log's position", head)
	}
	batches := make([]Batch, (b.N+burst-1)/burst)
	seq := 0
	for i := range batches {
		evs := make([]Event, 0, burst)
		for range min(burst, b.N-i*burst) {
			seq++
			evs = append(evs, Event{ID: fakePos(seq), Topic: "rooms/r0", Name: "message", Data: benchData})
		}
		batches[i] = Batch{Events: evs, Checkpoint: evs[len(evs)-1].ID}
	}
	want := uint64(1 + b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for _, bt := range batches {
		m.apply(bt)
	}
	for m.delivered.Load() < want {
		time.Sleep(10 * time.Microsecond)
	}
	b.StopTimer()
	if d := m.droppedSlow.Load(); d > 0 {
		b.Fatalf("the stream was dropped as slow")
	}
}

// BenchmarkDeliver measures the delivery path of one stream on a
// connection taken over (HTTP/1.1) and through a ResponseWriter.
func BenchmarkDeliver(b *testing.B) {
	b.Run("taken-over", func(b *testing.B) {
		benchDeliver(b, func(m *Multiplexer) func() {
			srv := testServer(b, m)
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			fmt.Fprintf(conn, "GET /?topic=rooms%%2Fr0 HTTP/1.1\r\nHost: x\r\n\r\n")
			done := make(chan struct{})
			go func() { defer close(done); io.Copy(io.Discard, conn) }()
			return func() { conn.Close(); <-done }
		})
	})
	b.Run("response-writer", func(b *testing.B) {
		benchDeliver(b, func(m *Multiplexer) func() {
			ctx, cancel := context.WithCancel(context.Background())
			r := httptest.NewRequest("GET", "/", nil).WithContext(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				m.Serve(&discardWriter{header: http.Header{}}, r, StreamOptions{Topics: []string{"rooms/r0"}})
			}()
			return func() { cancel(); <-done }
		})
	})
}
