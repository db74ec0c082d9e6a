package loadgen

import (
	"bytes"
	"changecast/internal/latency"
	"changecast/protocol"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"
)

// The board mode is the kitchen board of a food-delivery app: cfg.Conns
// staff streams on the list topic `orders` (every change to any order)
// while the generator creates orders and moves each along
// placed → preparing → out_for_delivery → delivered, cfg.Rate changes a
// second in all. Every stream receives every change.
//
// An order's creation time is the server's, so the generator keeps the
// time it sent each change itself, keyed by the order and the version
// the change makes: the order's number in this run (its item's sku,
// "bench r<run> <n>", says which; the server gives the id, which is not
// known before the create answers) and the version (1 for the create,
// 2 to 4 for the moves). Each change is sent by one writer after the
// previous change of its order was answered, so its version is known
// before it is sent.

// boardPath is the board's stream: the list topic of every order.
const boardPath = "/api/events?topic=orders"

// boardMoves are the statuses an order moves to after placed, in order:
// the move to boardMoves[i] makes version i+2.
var boardMoves = [...]string{"preparing", "out_for_delivery", "delivered"}

// boardVersions is how many changes an order gets: its create and its
// moves.
const boardVersions = int64(1 + len(boardMoves))

// boardRun is the state of a board run shared by writers and readers.
type boardRun struct {
	b            *bencher
	run          string
	measureStart int64 // unix nanos: changes sent from then on are measured
	// sent holds when each change was sent (unix nanos), at
	// n*boardVersions + version-1 for order n; 0: not sent.
	sent    []atomic.Int64
	next    atomic.Int64     // the next order number
	waiting chan *boardOrder // orders waiting for their next move
}

// boardOrder is one order the generator moves along.
type boardOrder struct {
	n       int64
	id      string
	version int64
}

// board runs the board mode.
func (b *bencher) board(ctx context.Context) (Result, error) {
	ss := b.newStreams(readBuf)
	for _, s := range ss {
		s.room, s.roomIdx, s.path = "orders", 0, boardPath
	}
	return b.live(ctx, ss, newBoardRun(b))
}

func newBoardRun(b *bencher) *boardRun {
	// Each change is either a create or a move, so there are never more
	// orders than changes.
	orders := int64(b.cfg.Rate*(b.cfg.Warmup+b.cfg.Duration).Seconds()) + 1
	return &boardRun{
		b:       b,
		run:     runID(),
		sent:    make([]atomic.Int64, orders*boardVersions),
		waiting: make(chan *boardOrder, orders),
	}
}

func (r *boardRun) begin(measureStart int64) { r.measureStart = measureStart }

func (r *boardRun) describe() string {
	return fmt.Sprintf("changing orders %.0f/s in all (creates and moves) with %d writers", r.b.cfg.Rate, r.b.writers())
}

func (r *boardRun) write(ctx context.Context, w *writeStats, start, end time.Time) {
	r.b.write(ctx, w, start, end, func(h *latency.Hist) func() {
		return func() { r.change(ctx, w, h) }
	})
}

// orders returns how many orders the run has room for.
func (r *boardRun) orders() int64 { return int64(len(r.sent)) / boardVersions }

// change makes one change: the next move of a waiting order, or else a
// new order. An order that still has moves to make waits again.
func (r *boardRun) change(ctx context.Context, w *writeStats, h *latency.Hist) {
	var o *boardOrder
	select {
	case o = <-r.waiting:
	default:
		n := r.next.Add(1) - 1
		if n >= r.orders() {
			w.skipped.Add(1)
			return
		}
		o = &boardOrder{n: n}
	}
	w.writes.Add(1)
	version := o.version + 1
	sent := time.Now().UnixNano()
	r.sent[o.n*boardVersions+version-1].Store(sent)
	var err error
	if o.version == 0 {
		o.id, err = r.create(ctx, o.n)
	} else {
		err = r.move(ctx, o, boardMoves[o.version-1])
	}
	if err != nil {
		if ctx.Err() == nil {
			w.errs.Add(1)
			r.b.fail(err)
		}
		return // the order is left where it is
	}
	h.Add(time.Now().UnixNano() - sent)
	w.ok.Add(1)
	w.expected.Add(int64(r.b.cfg.Conns))
	if sent >= r.measureStart {
		w.measured.Add(1)
	}
	o.version = version
	if version < boardVersions {
		r.waiting <- o // never blocks: it holds every order
	}
}

// create makes order n and returns its id.
func (r *boardRun) create(ctx context.Context, n int64) (string, error) {
	body := fmt.Appendf(nil, `{"customer":"bench","items":[{"sku":"bench r%s %d","qty":1}]}`, r.run, n)
	out, err := r.b.send(ctx, http.MethodPost, "/api/orders", body, "", http.StatusCreated)
	if err != nil {
		return "", err
	}
	var o struct {
		ID      string `json:"id"`
		Version int64  `json:"version"`
	}
	if err := json.Unmarshal(out, &o); err != nil || o.ID == "" || o.Version != 1 {
		return "", fmt.Errorf("create order: unexpected answer %.200q", out)
	}
	return o.ID, nil
}

// move changes o's status, if it still has the version the generator
// knows (If-Match).
func (r *boardRun) move(ctx context.Context, o *boardOrder, status string) error {
	body := []byte(`{"status":"` + status + `"}`)
	_, err := r.b.send(ctx, http.MethodPatch, "/api/orders/"+o.id, body, strconv.FormatInt(o.version, 10), http.StatusOK)
	return err
}

// send makes one JSON request to the server and returns the answer's
// body; an answer other than want is an error.
func (b *bencher) send(ctx context.Context, method, path string, body []byte, ifMatch string, want int) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, b.cfg.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if ifMatch != "" {
		req.Header.Set("If-Match", ifMatch)
	}
	if b.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+b.cfg.Token)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err == nil && resp.StatusCode != want {
		err = fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(out))
	}
	return out, err
}

// onEvent is a board stream's handler: it records each of this run's
// changes once, checks each order's versions arrive in order, and the
// latency of the changes sent in the measured window.
func (r *boardRun) onEvent(s *stream, ev *event) bool {
	if protocol.EventName(ev.name) != protocol.EventOrder {
		s.countEvent(ev)
		return true
	}
	n, version, ok := parseOrderEvent(ev.data, r.run)
	if !ok {
		return true // not this run's
	}
	now := time.Now().UnixNano()
	if n >= r.orders() || version < 1 || version > boardVersions {
		s.unexpected++
		return true
	}
	if !s.recordVersion(n, version) {
		return true
	}
	s.unique.Add(1)
	if sent := r.sent[n*boardVersions+version-1].Load(); sent >= r.measureStart && sent > 0 {
		s.hist.Add(now - sent)
		s.measured++
	}
	return true
}

// recordVersion records that s received version (1 to 8) of order n; it
// reports whether it is new, counting a double in s.dups and a version
// that came after a later one of its order in s.versionDisorder.
func (s *stream) recordVersion(n, version int64) bool {
	for n >= int64(len(s.versions)) {
		s.versions = append(s.versions, make([]uint8, max(64, len(s.versions)))...)
	}
	bit := uint8(1) << (version - 1)
	seen := s.versions[n]
	if seen&bit != 0 {
		s.dups++
		return false
	}
	if seen > bit { // a higher version came first
		s.versionDisorder++
	}
	s.versions[n] = seen | bit
	return true
}

// parseOrderEvent finds, in an order event's data, an order of run (its
// sku "bench r<run> <n>") and returns its number and version, without
// allocating.
func parseOrderEvent(data []byte, run string) (n, version int64, ok bool) {
	const key = `"sku":"bench r`
	i := bytes.Index(data, []byte(key))
	if i < 0 {
		return 0, 0, false
	}
	rest := data[i+len(key):]
	if len(rest) < len(run)+2 || string(rest[:len(run)]) != run || rest[len(run)] != ' ' {
		return 0, 0, false
	}
	n, rest, ok = digits(rest[len(run)+1:])
	if !ok || len(rest) == 0 || rest[0] != '"' {
		return 0, 0, false
	}
	const vkey = `"version":`
	j := bytes.Index(data, []byte(vkey))
	if j < 0 {
		return 0, 0, false
	}
	version, _, ok = digits(data[j+len(vkey):])
	return n, version, ok
}
