package loadgen

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"

	"changecast/internal/latency"
)

// drainWait bounds the wait for the last deliveries after the writes.
const drainWait = 10 * time.Second

// fanoutRun is the state of a fan-out run shared by writers and
// readers; readers only read it.
type fanoutRun struct {
	b            *bencher
	run          string // tags this run's messages
	measureStart int64  // unix nanos: writes sent from then on are measured
	perRoom      []int64
}

// liveLoad is a mode that writes while its streams read (fanout, board):
// live runs it.
type liveLoad interface {
	// onEvent is each stream's handler.
	onEvent(s *stream, ev *event) bool
	// begin sets the start of the measured window (unix nanos), before
	// the first write.
	begin(measureStart int64)
	// write makes the writes at cfg.Rate a second from start until end.
	write(ctx context.Context, w *writeStats, start, end time.Time)
	// describe is the line printed as the writes begin.
	describe() string
}

// fanout connects cfg.Conns streams, writes cfg.Rate messages a second
// for cfg.Warmup then cfg.Duration, and measures write-to-delivery
// latency of the writes sent after the warm-up.
func (b *bencher) fanout(ctx context.Context) (Result, error) {
	f := &fanoutRun{b: b, run: runID(), perRoom: make([]int64, b.cfg.Rooms)}
	for i := range b.cfg.Conns {
		f.perRoom[i%b.cfg.Rooms]++
	}
	return b.live(ctx, b.newStreams(readBuf), f)
}

func (f *fanoutRun) begin(measureStart int64) { f.measureStart = measureStart }

func (f *fanoutRun) describe() string {
	return fmt.Sprintf("writing %.0f/s with %d writers", f.b.cfg.Rate, f.b.writers())
}

func (f *fanoutRun) write(ctx context.Context, w *writeStats, start, end time.Time) {
	f.b.write(ctx, w, start, end, func(h *latency.Hist) func() {
		body := make([]byte, 0, 128+f.b.cfg.Size)
		return func() { body = f.b.postBench(ctx, w, f, h, body) }
	})
}

// live connects the streams ss with l's handler, has l write for
// cfg.Warmup then cfg.Duration, and measures write-to-delivery latency
// of the writes sent after the warm-up, deliveries/s and server CPU.
func (b *bencher) live(ctx context.Context, ss []*stream, l liveLoad) (Result, error) {
	var res Result
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	for _, s := range ss {
		s.hist = new(latency.Hist)
	}
	connect, err := b.connectAll(ctx, &wg, ss, l.onEvent)
	res.ConnectSeconds = connect.Seconds()
	if err != nil {
		return res, err
	}

	start := time.Now()
	measureStart := start.Add(b.cfg.Warmup)
	end := measureStart.Add(b.cfg.Duration)
	l.begin(measureStart.UnixNano())
	var w writeStats
	fmt.Fprintf(b.log, "bench: %s: %s warm-up, then %s measured\n", l.describe(), b.cfg.Warmup, b.cfg.Duration)
	delivered := func() int64 {
		var n int64
		for _, s := range ss {
			n += s.unique.Load()
		}
		return n
	}
	var lastW, lastD int64
	stopProgress := b.progress(func(time.Duration) string {
		wn, dn := w.writes.Load(), delivered()
		line := fmt.Sprintf("writes %d (%d/s, %d failed, %d skipped)  deliveries %d (%d/s)  open %d  errors %d  reconnects %d",
			wn, wn-lastW, w.errs.Load(), w.skipped.Load(), dn, dn-lastD, b.open.Load(), b.errs.Load(), b.reconnects.Load())
		lastW, lastD = wn, dn
		return line
	})
	var ww sync.WaitGroup
	ww.Go(func() { l.write(ctx, &w, start, end) })

	// The measured window: server CPU and deliveries from the end of the
	// warm-up to the last delivery.
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(measureStart)):
	}
	st0, d0, self0 := b.serverStats(ctx), delivered(), selfCPU()
	if b.cfg.Stages != "" {
		if _, err := b.stages(ctx, true); err != nil {
			fmt.Fprintf(b.log, "bench: no stage timing: %v\n", err)
		}
	}
	ww.Wait()
	writesEnd := time.Now()
	for until := time.Now().Add(drainWait); delivered() < w.expected.Load() && time.Now().Before(until) && ctx.Err() == nil; {
		time.Sleep(5 * time.Millisecond)
	}
	window := time.Since(measureStart)
	st1, d1, self1 := b.serverStats(ctx), delivered(), selfCPU()
	stopProgress()
	if b.cfg.Stages != "" {
		b.readStages(ctx, &res)
	}
	res.Streams = b.open.Load()
	cancel()
	wg.Wait()
	if err := parent.Err(); err != nil {
		return res, err
	}

	res.addStreams(ss)
	res.addWrites(&w, b.cfg, measureStart, writesEnd, end)
	res.applyServerStats(st0, st1, d1-d0, res.Streams, window)
	res.applyClientCPU(self0, self1, d1-d0)
	return res, nil
}

// addStreams adds up what a fan-out's streams received, and their
// write-to-delivery latency.
func (r *Result) addStreams(ss []*stream) {
	var h latency.Hist
	for _, s := range ss {
		h.Merge(s.hist)
		r.Delivered += s.unique.Load()
		r.Duplicates += s.dups
		r.OutOfOrder += s.idDisorder + s.versionDisorder
		r.Resets += s.resets
		r.Unexpected += s.unexpected
		r.MeasuredDelivers += s.measured
	}
	r.P50ms, r.P90ms, r.P99ms, r.MaxMs = h.Quantile(.5), h.Quantile(.9), h.Quantile(.99), h.Max()
	r.P999ms = h.Quantile(.999)
}

// addWrites adds what a fan-out's writers did, and the rates over the
// measured window (from measureStart to the last write, or end).
func (r *Result) addWrites(w *writeStats, cfg config, measureStart, writesEnd, end time.Time) {
	r.RateAsked = cfg.Rate
	r.Writes, r.WriteErrors, r.WritesSkipped = w.ok.Load(), w.errs.Load(), w.skipped.Load()
	r.MeasuredWrites = w.measured.Load()
	r.Expected = w.expected.Load()
	r.Lost = max(0, r.Expected-r.Delivered)
	r.Unexpected += max(0, r.Delivered-r.Expected)
	r.WarmupSeconds = cfg.Warmup.Seconds()
	if writesEnd.After(end) {
		writesEnd = end
	}
	measured := writesEnd.Sub(measureStart)
	r.Seconds = measured.Seconds()
	if r.Seconds > 0 {
		r.WritesPerS = float64(r.MeasuredWrites) / r.Seconds
		r.DeliveriesPerS = float64(r.MeasuredDelivers) / r.Seconds
	}
	wh := w.merged()
	r.WriteP50ms, r.WriteP99ms = wh.Quantile(.5), wh.Quantile(.99)
}

// onEvent is a fan-out stream's handler: it records each of this run's
// messages once, and the latency of those sent in the measured window.
func (f *fanoutRun) onEvent(s *stream, ev *event) bool {
	if !s.countEvent(ev) {
		return true
	}
	sent, seq, ok := parseText(ev.data, f.run)
	if !ok {
		return true // not this run's
	}
	now := time.Now().UnixNano()
	rooms := int64(len(f.perRoom))
	if seq%rooms != int64(s.roomIdx) {
		s.unexpected++ // another room's message on this stream
		return true
	}
	i := seq / rooms
	for int(i/64) >= len(s.seen) {
		s.seen = append(s.seen, 0)
	}
	bit := uint64(1) << (i % 64)
	if s.seen[i/64]&bit != 0 {
		s.dups++
		return true
	}
	s.seen[i/64] |= bit
	s.unique.Add(1)
	if sent >= f.measureStart {
		s.hist.Add(now - sent)
		s.measured++
	}
	return true
}

// runID returns a random tag for one run's messages.
func runID() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

// appendText appends a fan-out message text: "bench <sent unix
// nanos> <seq> r<run>", then size bytes of padding.
func appendText(dst []byte, sent, seq int64, run string, size int) []byte {
	dst = append(dst, "bench "...)
	dst = strconv.AppendInt(dst, sent, 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, " r"...)
	dst = append(dst, run...)
	for range size {
		dst = append(dst, 'x')
	}
	return dst
}

// parseText finds a fan-out message text of run in an event's data
// and returns its send time and sequence number, without allocating.
func parseText(data []byte, run string) (sent, seq int64, ok bool) {
	const key = `"text":"bench `
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, 0, false
	}
	rest := data[i+len(key):]
	sent, rest, ok1 := digits(rest)
	if !ok1 || len(rest) == 0 || rest[0] != ' ' {
		return 0, 0, false
	}
	seq, rest, ok2 := digits(rest[1:])
	if !ok2 || len(rest) < 2+len(run) || rest[0] != ' ' || rest[1] != 'r' || string(rest[2:2+len(run)]) != run {
		return 0, 0, false
	}
	return sent, seq, true
}

// digits parses leading decimal digits.
func digits(b []byte) (int64, []byte, bool) {
	var n int64
	i := 0
	for ; i < len(b) && i < 19 && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int64(b[i]-'0')
	}
	return n, b[i:], i > 0
}
