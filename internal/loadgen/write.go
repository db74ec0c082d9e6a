package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"changecast/internal/latency"
)

// writeStats counts what the writers did.
type writeStats struct {
	writes   atomic.Int64 // sequence numbers handed out
	ok       atomic.Int64
	errs     atomic.Int64
	skipped  atomic.Int64 // due but not sent: every writer was busy
	measured atomic.Int64
	expected atomic.Int64 // deliveries the successful writes should make

	mu    sync.Mutex
	hists []*latency.Hist // POST latency, one per writer
}

func (w *writeStats) merged() *latency.Hist {
	w.mu.Lock()
	defer w.mu.Unlock()
	var h latency.Hist
	for _, x := range w.hists {
		h.Merge(x)
	}
	return &h
}

// write paces cfg.Rate writes a second from start until end: a pacer
// hands out slots on a clock (open loop: a slow answer does not slow the
// schedule) to a pool of writers over kept-alive connections; a slot no
// writer is free to take is counted as skipped. newWriter makes a
// writer's work for one slot, given its latency histogram.
func (b *bencher) write(ctx context.Context, w *writeStats, start, end time.Time, newWriter func(h *latency.Hist) func()) {
	n := b.writers()
	slots := make(chan struct{}, n)
	var wg sync.WaitGroup
	for range n {
		h := new(latency.Hist)
		w.mu.Lock()
		w.hists = append(w.hists, h)
		w.mu.Unlock()
		do := newWriter(h)
		wg.Go(func() {
			for range slots {
				do()
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
func (b *bencher) postBench(ctx context.Context, w *writeStats, f *fanoutRun, h *latency.Hist, body []byte) []byte {
	seq := w.writes.Add(1) - 1
	room := int(seq % int64(b.cfg.Rooms))
	sent := time.Now().UnixNano()
	body = append(body[:0], `{"text":"`...)
	body = appendText(body, sent, seq, f.run, b.cfg.Size)
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
	h.Add(time.Now().UnixNano() - sent)
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
