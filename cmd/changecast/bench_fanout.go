package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// benchHandshakes bounds connections between dial and snapshot while
// connecting them all: the server's accept queue (somaxconn, often 4096)
// overflows, and SYNs wait a second for a retry, if tens of thousands
// arrive at once.
const benchHandshakes = 256

// benchDrain bounds the wait for the last deliveries after the writes.
const benchDrain = 10 * time.Second

// room returns the i-th room's name.
func (b *bencher) room(i int) string { return "bench-" + strconv.Itoa(i%b.cfg.Rooms) }

// newStreams makes cfg.Conns streams, spread round-robin over the rooms.
func (b *bencher) newStreams(bufSize int) []*benchStream {
	ss := make([]*benchStream, b.cfg.Conns)
	for i := range ss {
		ss[i] = &benchStream{room: b.room(i), roomIdx: i % b.cfg.Rooms, ready: make(chan struct{}), bufSize: bufSize}
	}
	return ss
}

// connectAll starts a follow goroutine per stream (in wg; they run until
// ctx ends or h stops them) and waits until each has had its snapshot, or
// for cfg.Timeout. At most benchHandshakes are between dial and snapshot
// at once.
func (b *bencher) connectAll(ctx context.Context, wg *sync.WaitGroup, ss []*benchStream, h benchHandler) (time.Duration, error) {
	start := time.Now()
	var readyN atomic.Int64
	stop := b.progress(func(time.Duration) string {
		return fmt.Sprintf("connecting: %d of %d streams ready, %d open, errors %d", readyN.Load(), len(ss), b.open.Load(), b.errs.Load())
	})
	defer stop()
	sem := make(chan struct{}, benchHandshakes)
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
		b.start(ctx, wg, s, func(s *benchStream, ev *benchEvent) bool {
			if held && string(ev.name) == "snapshot" {
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

// benchFanout is the state of a fan-out run shared by writers and
// readers; readers only read it.
type benchFanout struct {
	run          string // tags this run's messages
	measureStart int64  // unix nanos: writes sent from then on are measured
	perRoom      []int64
}

// fanout connects cfg.Conns streams, writes cfg.Rate messages a second
// for cfg.Warmup then cfg.Duration, and measures write-to-delivery
// latency of the writes sent after the warm-up.
func (b *bencher) fanout(ctx context.Context) (benchResult, error) {
	var res benchResult
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()

	f := &benchFanout{run: benchRunID(), perRoom: make([]int64, b.cfg.Rooms)}
	for i := range b.cfg.Conns {
		f.perRoom[i%b.cfg.Rooms]++
	}
	ss := b.newStreams(benchReadBuf)
	for _, s := range ss {
		s.hist = new(benchHist)
	}
	connect, err := b.connectAll(ctx, &wg, ss, f.onEvent)
	res.ConnectSeconds = connect.Seconds()
	if err != nil {
		return res, err
	}

	start := time.Now()
	measureStart := start.Add(b.cfg.Warmup)
	end := measureStart.Add(b.cfg.Duration)
	f.measureStart = measureStart.UnixNano()
	var w benchWriters
	fmt.Fprintf(b.log, "bench: writing %.0f/s with %d writers: %s warm-up, then %s measured\n", b.cfg.Rate, b.writers(), b.cfg.Warmup, b.cfg.Duration)
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
	ww.Go(func() { b.write(ctx, &w, f, start, end) })

	// The measured window: server CPU and deliveries from the end of the
	// warm-up to the last delivery.
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(measureStart)):
	}
	st0, d0, self0 := b.serverStats(ctx), delivered(), benchSelfCPU()
	ww.Wait()
	writesEnd := time.Now()
	for until := time.Now().Add(benchDrain); delivered() < w.expected.Load() && time.Now().Before(until) && ctx.Err() == nil; {
		time.Sleep(5 * time.Millisecond)
	}
	window := time.Since(measureStart)
	st1, d1, self1 := b.serverStats(ctx), delivered(), benchSelfCPU()
	stopProgress()
	res.Streams = b.open.Load()
	cancel()
	wg.Wait()
	if err := parent.Err(); err != nil {
		return res, err
	}

	var h benchHist
	for _, s := range ss {
		h.merge(s.hist)
		res.Delivered += s.unique.Load()
		res.Duplicates += s.dups
		res.OutOfOrder += s.idDisorder
		res.Resets += s.resets
		res.Unexpected += s.unexpected
		res.MeasuredDelivers += s.measured
	}
	res.RateAsked = b.cfg.Rate
	res.Writes, res.WriteErrors, res.WritesSkipped = w.ok.Load(), w.errs.Load(), w.skipped.Load()
	res.MeasuredWrites = w.measured.Load()
	res.Expected = w.expected.Load()
	res.Lost = max(0, res.Expected-res.Delivered)
	res.Unexpected += max(0, res.Delivered-res.Expected)
	res.WarmupSeconds = b.cfg.Warmup.Seconds()
	if writesEnd.After(end) {
		writesEnd = end
	}
	measured := writesEnd.Sub(measureStart)
	res.Seconds = measured.Seconds()
	if res.Seconds > 0 {
		res.WritesPerS = float64(res.MeasuredWrites) / res.Seconds
		res.DeliveriesPerS = float64(res.MeasuredDelivers) / res.Seconds
	}
	res.P50ms, res.P90ms, res.P99ms, res.MaxMs = h.quantile(.5), h.quantile(.9), h.quantile(.99), h.max()
	wh := w.merged()
	res.WriteP50ms, res.WriteP99ms = wh.quantile(.5), wh.quantile(.99)
	res.applyServerStats(st0, st1, d1-d0, res.Streams, window)
	res.applyClientCPU(self0, self1, d1-d0)
	return res, nil
}

// onEvent is a fan-out stream's handler: it records each of this run's
// messages once, and the latency of those sent in the measured window.
func (f *benchFanout) onEvent(s *benchStream, ev *benchEvent) bool {
	if !s.countEvent(ev) {
		return true
	}
	sent, seq, ok := benchParseText(ev.data, f.run)
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
		s.hist.add(now - sent)
		s.measured++
	}
	return true
}

// benchRunID returns a random tag for one run's messages.
func benchRunID() string {
	var r [4]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

// benchAppendText appends a fan-out message text: "bench <sent unix
// nanos> <seq> r<run>", then size bytes of padding.
func benchAppendText(dst []byte, sent, seq int64, run string, size int) []byte {
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

// benchParseText finds a fan-out message text of run in an event's data
// and returns its send time and sequence number, without allocating.
func benchParseText(data []byte, run string) (sent, seq int64, ok bool) {
	const key = `"text":"bench `
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, 0, false
	}
	rest := data[i+len(key):]
	sent, rest, ok1 := benchDigits(rest)
	if !ok1 || len(rest) == 0 || rest[0] != ' ' {
		return 0, 0, false
	}
	seq, rest, ok2 := benchDigits(rest[1:])
	if !ok2 || len(rest) < 2+len(run) || rest[0] != ' ' || rest[1] != 'r' || string(rest[2:2+len(run)]) != run {
		return 0, 0, false
	}
	return sent, seq, true
}

// benchDigits parses leading decimal digits.
func benchDigits(b []byte) (int64, []byte, bool) {
	var n int64
	i := 0
	for ; i < len(b) && i < 19 && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + int64(b[i]-'0')
	}
	return n, b[i:], i > 0
}

// benchWriters counts what the writers did.
type benchWriters struct {
	writes   atomic.Int64 // sequence numbers handed out
	ok       atomic.Int64
	errs     atomic.Int64
	skipped  atomic.Int64 // due but not sent: every writer was busy
	measured atomic.Int64
	expected atomic.Int64 // deliveries the successful writes should make

	mu    sync.Mutex
	hists []*benchHist // POST latency, one per writer
}

func (w *benchWriters) merged() *benchHist {
	w.mu.Lock()
	defer w.mu.Unlock()
	var h benchHist
	for _, x := range w.hists {
		h.merge(x)
	}
	return &h
}

// write paces cfg.Rate writes a second from start until end: a pacer
// hands out slots on a clock (open loop: a slow answer does not slow the
// schedule) to a pool of writers over kept-alive connections; a slot no
// writer is free to take is counted as skipped.
func (b *bencher) write(ctx context.Context, w *benchWriters, f *benchFanout, start, end time.Time) {
	n := b.writers()
	slots := make(chan struct{}, n)
	var wg sync.WaitGroup
	for range n {
		h := new(benchHist)
		w.mu.Lock()
		w.hists = append(w.hists, h)
		w.mu.Unlock()
		wg.Go(func() {
			body := make([]byte, 0, 128+b.cfg.Size)
			for range slots {
				body = b.postBench(ctx, w, f, h, body)
			}
		})
	}
	defer func() { close(slots); wg.Wait() }()

	tick := max(time.Millisecond, time.Duration(float64(time.Second)/b.cfg.Rate))
	t := time.NewTicker(tick)
	defer t.Stop()
	var issued int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if !now.Before(end) {
				return
			}
			due := int64(b.cfg.Rate * now.Sub(start).Seconds())
			for ; issued < due; issued++ {
				select {
				case slots <- struct{}{}:
				default:
					w.skipped.Add(1)
				}
			}
		}
	}
}

// postBench writes one fan-out message, counting it in w.
func (b *bencher) postBench(ctx context.Context, w *benchWriters, f *benchFanout, h *benchHist, body []byte) []byte {
	seq := w.writes.Add(1) - 1
	room := int(seq % int64(b.cfg.Rooms))
	sent := time.Now().UnixNano()
	body = append(body[:0], `{"text":"`...)
	body = benchAppendText(body, sent, seq, f.run, b.cfg.Size)
	body = append(body, '"')
	if b.cfg.Token == "" {
		body = append(body, `,"author":"bench"`...)
	}
	body = append(body, '}')
	status, _, err := b.post(ctx, b.room(room), body, false)
	if err == nil && status != http.StatusCreated {
		err = fmt.Errorf("post %s: status %d", b.room(room), status)
	}
	if err != nil {
		if ctx.Err() == nil {
			w.errs.Add(1)
			b.fail(err)
		}
		return body
	}
	h.add(time.Now().UnixNano() - sent)
	w.ok.Add(1)
	w.expected.Add(f.perRoom[room])
	if sent >= f.measureStart {
		w.measured.Add(1)
	}
	return body
}

// post sends a JSON body to a room's messages; with keep it returns the
// response body.
func (b *bencher) post(ctx context.Context, room string, body []byte, keep bool) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.cfg.URL+"/api/rooms/"+room+"/messages", bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if b.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+b.cfg.Token)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out []byte
	if keep || resp.StatusCode != http.StatusCreated {
		out, err = io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	if err == nil && resp.StatusCode != http.StatusCreated {
		err = fmt.Errorf("post %s: status %d: %s", room, resp.StatusCode, bytes.TrimSpace(out))
	}
	return resp.StatusCode, out, err
}

// idle holds cfg.Conns streams open for cfg.Duration and reports the
// server's memory per stream.
func (b *bencher) idle(ctx context.Context) (benchResult, error) {
	var res benchResult
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	st0 := b.serverStats(ctx)
	ss := b.newStreams(benchReadBuf)
	connect, err := b.connectAll(ctx, &wg, ss, func(s *benchStream, ev *benchEvent) bool {
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
