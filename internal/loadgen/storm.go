package loadgen

import (
	"bytes"
	"changecast/internal/latency"
	"changecast/protocol"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// stormWriters is how many rooms are written at once while the
// storm's clients are away; each room is written by one writer, in order.
const stormWriters = 32

// stormLinger is how long the storm keeps reading after the last
// client caught up, to see duplicates that follow the last event.
const stormLinger = 250 * time.Millisecond

// roomLog is what the storm wrote to one room, in log order. Ids and
// texts are kept back to back in two arrays: thousands of clients walk
// them in order while checking millions of events, and scattered strings
// would cost a cache miss or two per event.
type roomLog struct {
	ids, texts     []byte  // texts as `"text":"<text>"`, as the event's JSON carries them
	idEnd, textEnd []int32 // where each message's id and text end
	index          map[string]int32
}

func newRoomLog(n int) *roomLog {
	return &roomLog{index: make(map[string]int32, n)}
}

// add records the next message written: its id and text.
func (l *roomLog) add(id, text string) {
	l.index[id] = int32(len(l.idEnd))
	l.ids = append(l.ids, id...)
	l.idEnd = append(l.idEnd, int32(len(l.ids)))
	l.texts = append(l.texts, `"text":"`...)
	l.texts = append(l.texts, text...)
	l.texts = append(l.texts, '"')
	l.textEnd = append(l.textEnd, int32(len(l.texts)))
}

// len returns how many messages were written.
func (l *roomLog) len() int { return len(l.idEnd) }

func (l *roomLog) id(p int) []byte   { return l.ids[l.start(l.idEnd, p):l.idEnd[p]] }
func (l *roomLog) text(p int) []byte { return l.texts[l.start(l.textEnd, p):l.textEnd[p]] }

func (l *roomLog) start(ends []int32, p int) int32 {
	if p == 0 {
		return 0
	}
	return ends[p-1]
}

// stormClient is one storm client's check of what it receives.
type stormClient struct {
	log        *roomLog
	seen       []uint64
	got        int
	next       int // one past the latest message received
	dups       int64
	disorder   int64
	unexpected int64
	caughtUp   time.Duration
}

// storm: cfg.Conns clients each connect, read their snapshot and go
// away; cfg.Behind messages are written to each room; then every client
// reconnects at once with its last event id. It measures the time until
// each holds every message it missed, and checks that each received them
// exactly once and in order (the message ids and texts written, and SSE
// ids that only increase).
func (b *bencher) storm(ctx context.Context) (Result, error) {
	var res Result
	ss := b.newStreams(stormReadBuf)

	// 1. Connect, take the snapshot's id, go away.
	var wg sync.WaitGroup
	connect, err := b.connectAll(ctx, &wg, ss, func(s *stream, ev *event) bool {
		s.countEvent(ev)
		return protocol.EventName(ev.name) != protocol.EventSnapshot
	})
	wg.Wait()
	res.ConnectSeconds = connect.Seconds()
	if err != nil {
		return res, err
	}
	for _, s := range ss {
		if len(s.lastID) == 0 {
			return res, fmt.Errorf("bench: the snapshot of %s had no id", s.room)
		}
	}

	// 2. Write cfg.Behind messages to every room, each room in order.
	logs, err := b.stormWrite(ctx)
	if err != nil {
		return res, err
	}
	for _, l := range logs {
		res.Writes += int64(l.len())
	}
	res.WriteErrors = int64(b.cfg.Rooms*b.cfg.Behind) - res.Writes

	return res, b.stormBack(ctx, ss, logs, &res)
}

// stormBack is the storm's third step: every client reconnects at once
// with its last event id; it fills res with what they received.
func (b *bencher) stormBack(ctx context.Context, ss []*stream, logs []*roomLog, res *Result) error {
	var wg sync.WaitGroup
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var pending atomic.Int64
	allDone := make(chan struct{})
	for _, s := range ss {
		l := logs[s.roomIdx]
		s.storm = &stormClient{log: l, seen: make([]uint64, (l.len()+63)/64)}
		res.Expected += int64(l.len())
		if l.len() > 0 {
			pending.Add(1)
		}
	}
	if pending.Load() == 0 {
		close(allDone)
	}
	fmt.Fprintf(b.log, "bench: %d clients reconnecting at once, %d events behind each (%d in all)\n", len(ss), b.cfg.Behind, res.Expected)
	st0, self0 := b.serverStats(ctx), selfCPU()
	var delivered atomic.Int64
	var last int64
	stop := b.progress(func(time.Duration) string {
		d := delivered.Load()
		line := fmt.Sprintf("caught up %d of %d  open %d  events %d (%d/s)  errors %d  reconnects %d",
			int64(len(ss))-pending.Load(), len(ss), b.open.Load(), d, d-last, b.errs.Load(), b.reconnects.Load())
		last = d
		return line
	})
	start := time.Now()
	for _, s := range ss {
		b.start(ctx, &wg, s, func(s *stream, ev *event) bool {
			if !s.countEvent(ev) {
				return true
			}
			c := s.storm
			if !c.check(ev.data) {
				return true
			}
			delivered.Add(1)
			if c.got == c.log.len() && c.caughtUp == 0 {
				c.caughtUp = time.Since(start)
				if pending.Add(-1) == 0 {
					close(allDone)
				}
			}
			return true
		})
	}
	timeout := time.NewTimer(b.cfg.Timeout)
	defer timeout.Stop()
	select {
	case <-allDone:
	case <-timeout.C:
		fmt.Fprintf(b.log, "bench: %d clients not caught up after %s\n", pending.Load(), b.cfg.Timeout)
	case <-parent.Done():
	}
	caught := time.Since(start)
	st1, self1 := b.serverStats(ctx), selfCPU()
	d1 := delivered.Load()
	time.Sleep(stormLinger)
	stop()
	res.Streams = b.open.Load()
	cancel()
	wg.Wait()
	if err := parent.Err(); err != nil {
		return err
	}

	res.addStormClients(ss, caught, d1)
	res.applyServerStats(st0, st1, d1, int64(len(ss)), caught)
	res.applyClientCPU(self0, self1, d1)
	return nil
}

// addStormClients adds up what the storm's clients received, and how long
// each took to catch up.
func (r *Result) addStormClients(ss []*stream, caught time.Duration, delivered int64) {
	var h latency.Hist
	for _, s := range ss {
		c := s.storm
		r.Delivered += int64(c.got)
		r.Duplicates += c.dups
		r.OutOfOrder += c.disorder + s.idDisorder
		r.Unexpected += c.unexpected + s.unexpected
		r.Resets += s.resets
		if c.caughtUp > 0 {
			r.CaughtUp++
			h.Add(c.caughtUp.Nanoseconds())
		}
	}
	r.Lost = r.Expected - r.Delivered
	r.CaughtUpSeconds = caught.Seconds()
	r.Seconds = caught.Seconds()
	r.DeliveriesPerS = float64(delivered) / caught.Seconds()
	r.P50ms, r.P90ms, r.P99ms, r.MaxMs = h.Quantile(.5), h.Quantile(.9), h.Quantile(.99), h.Max()
}

// check records one message event; it reports whether it was a new one
// of the messages this client missed.
func (c *stormClient) check(data []byte) bool {
	id, rest := messageID(data)
	p := int32(c.next)
	if c.next >= c.log.len() || !bytes.Equal(id, c.log.id(c.next)) {
		var ok bool
		if p, ok = c.log.index[string(id)]; !ok {
			c.unexpected++
			return false
		}
	}
	if i := bytes.Index(rest, []byte(`"text":"`)); i < 0 || !bytes.HasPrefix(rest[i:], c.log.text(int(p))) {
		c.unexpected++
		return false
	}
	if c.seen[p/64]&(1<<(p%64)) != 0 {
		c.dups++
		return false
	}
	c.seen[p/64] |= 1 << (p % 64)
	if int(p) < c.next {
		c.disorder++ // a later one came first
	} else {
		c.next = int(p) + 1
	}
	c.got++
	return true
}

// messageID returns the message id in a message event's data
// (`{"topic":...,"message":{"id":"...",...}}`), or nil, and the data
// after it.
func messageID(data []byte) (id, rest []byte) {
	i := bytes.Index(data, []byte(`"message":`))
	if i < 0 {
		return nil, nil
	}
	rest = data[i:]
	j := bytes.Index(rest, []byte(`"id":"`))
	if j < 0 {
		return nil, nil
	}
	rest = rest[j+len(`"id":"`):]
	k := bytes.IndexByte(rest, '"')
	if k < 0 {
		return nil, nil
	}
	return rest[:k], rest[k:]
}

// stormWrite writes cfg.Behind messages to every room, each room's in
// order by one writer, and returns what each room got.
func (b *bencher) stormWrite(ctx context.Context) ([]*roomLog, error) {
	run := runID()
	logs := make([]*roomLog, b.cfg.Rooms)
	rooms := make(chan int, b.cfg.Rooms)
	for r := range b.cfg.Rooms {
		logs[r] = newRoomLog(b.cfg.Behind)
		rooms <- r
	}
	close(rooms)
	var written atomic.Int64
	var last int64
	total := b.cfg.Rooms * b.cfg.Behind
	fmt.Fprintf(b.log, "bench: clients away; writing %d messages to each of %d rooms\n", b.cfg.Behind, b.cfg.Rooms)
	stop := b.progress(func(time.Duration) string {
		n := written.Load()
		line := fmt.Sprintf("written %d of %d (%d/s)  errors %d", n, total, n-last, b.errs.Load())
		last = n
		return line
	})
	defer stop()
	var wg sync.WaitGroup
	for range min(b.cfg.Rooms, stormWriters) {
		wg.Go(func() {
			var body []byte
			for r := range rooms {
				l := logs[r]
				for i := range b.cfg.Behind {
					if ctx.Err() != nil {
						return
					}
					text := "storm " + run + " " + strconv.Itoa(r) + " " + strconv.Itoa(i) + padding(b.cfg.Size)
					body = append(body[:0], `{"text":`...)
					body = strconv.AppendQuote(body, text)
					if b.cfg.Token == "" {
						body = append(body, `,"author":"bench"`...)
					}
					body = append(body, '}')
					_, out, err := b.post(ctx, b.room(r), body, true)
					var m struct {
						ID string `json:"id"`
					}
					if err == nil {
						err = json.Unmarshal(out, &m)
					}
					if err == nil && m.ID == "" {
						err = fmt.Errorf("post %s: no id in %q", b.room(r), out)
					}
					if err != nil {
						if ctx.Err() == nil {
							b.fail(err)
						}
						continue
					}
					l.add(m.ID, text)
					written.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return logs, ctx.Err()
}

// padding returns " " and n-1 bytes of padding, or "" for n = 0.
func padding(n int) string {
	if n == 0 {
		return ""
	}
	p := make([]byte, n)
	p[0] = ' '
	for i := 1; i < n; i++ {
		p[i] = 'x'
	}
	return string(p)
}
