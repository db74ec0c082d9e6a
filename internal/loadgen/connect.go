package loadgen

import (
	"changecast/protocol"
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// maxHandshakes bounds connections between dial and snapshot while
// connecting them all: the server's accept queue (somaxconn, often 4096)
// overflows, and SYNs wait a second for a retry, if tens of thousands
// arrive at once.
const maxHandshakes = 256

// room returns the i-th room's name.
func (b *bencher) room(i int) string { return "bench-" + strconv.Itoa(i%b.cfg.Rooms) }

// newStreams makes cfg.Conns streams, spread round-robin over the rooms.
func (b *bencher) newStreams(bufSize int) []*stream {
	ss := make([]*stream, b.cfg.Conns)
	for i := range ss {
		ss[i] = &stream{room: b.room(i), roomIdx: i % b.cfg.Rooms, ready: make(chan struct{}), bufSize: bufSize}
	}
	return ss
}

// connectAll starts a follow goroutine per stream (in wg; they run until
// ctx ends or h stops them) and waits until each has had its snapshot, or
// for cfg.Timeout. At most maxHandshakes are between dial and snapshot
// at once.
func (b *bencher) connectAll(ctx context.Context, wg *sync.WaitGroup, ss []*stream, h handler) (time.Duration, error) {
	start := time.Now()
	var readyN atomic.Int64
	stop := b.progress(func(time.Duration) string {
		return fmt.Sprintf("connecting: %d of %d streams ready, %d open, errors %d", readyN.Load(), len(ss), b.open.Load(), b.errs.Load())
	})
	defer stop()
	sem := make(chan struct{}, maxHandshakes)
	deadline := time.NewTimer(b.cfg.Timeout)
	defer deadline.Stop()
	for _, s := range ss {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-deadline.C:
			return time.Since(start), fmt.Errorf("bench: only %d of %d streams connected within %s", readyN.Load(), len(ss), b.cfg.Timeout)
		}
		held := true
		b.start(ctx, wg, s, func(s *stream, ev *event) bool {
			if held && protocol.EventName(ev.name) == protocol.EventSnapshot {
				held = false
				close(s.ready)
				readyN.Add(1)
				<-sem
			}
			return h(s, ev)
		})
	}
	for _, s := range ss {
		select {
		case <-s.ready:
		case <-ctx.Done():
			return time.Since(start), ctx.Err()
		case <-deadline.C:
			return time.Since(start), fmt.Errorf("bench: only %d of %d streams had their snapshot within %s", readyN.Load(), len(ss), b.cfg.Timeout)
		}
	}
	d := time.Since(start)
	fmt.Fprintf(b.log, "bench: %d streams ready in %.2f s\n", len(ss), d.Seconds())
	return d, nil
}
