package loadgen

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// idle holds cfg.Conns streams open for cfg.Duration and reports the
// server's memory per stream.
func (b *bencher) idle(ctx context.Context) (Result, error) {
	var res Result
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	st0 := b.serverStats(ctx)
	ss := b.newStreams(readBuf)
	connect, err := b.connectAll(ctx, &wg, ss, func(s *stream, ev *event) bool {
		s.countEvent(ev)
		return true
	})
	res.ConnectSeconds = connect.Seconds()
	if err != nil {
		return res, err
	}
	fmt.Fprintf(b.log, "bench: holding %d streams for %s\n", len(ss), b.cfg.Duration)
	stop := b.progress(func(time.Duration) string {
		return fmt.Sprintf("open %d  errors %d  reconnects %d", b.open.Load(), b.errs.Load(), b.reconnects.Load())
	})
	select {
	case <-ctx.Done():
	case <-time.After(b.cfg.Duration):
	}
	stop()
	st1 := b.serverStats(ctx)
	res.Streams = b.open.Load()
	res.Seconds = b.cfg.Duration.Seconds()
	res.Mode = "idle"
	res.applyServerStats(st0, st1, 0, res.Streams, b.cfg.Duration)
	cancel()
	wg.Wait()
	for _, s := range ss {
		res.OutOfOrder += s.idDisorder
		res.Resets += s.resets
	}
	return res, parent.Err()
}
