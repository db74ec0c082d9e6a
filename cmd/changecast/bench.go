package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// benchConfig is what `changecast bench` is told.
type benchConfig struct {
	URL      string
	Mode     string
	Conns    int
	Rooms    int
	Rate     float64
	Duration time.Duration
	Behind   int
	Pid      int
	Sources  int
	Token    string
	JSON     bool
}

// benchResult is what it measured; -json prints it.
type benchResult struct {
	Mode            string  `json:"mode"`
	Conns           int     `json:"conns"`
	Rooms           int     `json:"rooms"`
	Writes          int64   `json:"writes"`
	WriteErrors     int64   `json:"writeErrors"`
	Expected        int64   `json:"expectedDeliveries"`
	Delivered       int64   `json:"deliveries"`
	Lost            int64   `json:"lost"`
	Duplicates      int64   `json:"duplicates"`
	OutOfOrder      int64   `json:"outOfOrder"`
	Errors          int64   `json:"errors"`
	Reconnects      int64   `json:"reconnects"`
	Seconds         float64 `json:"seconds"`
	DeliveriesPerS  float64 `json:"deliveriesPerSecond"`
	P50ms           float64 `json:"p50ms"`
	P90ms           float64 `json:"p90ms"`
	P99ms           float64 `json:"p99ms"`
	MaxMs           float64 `json:"maxMs"`
	CaughtUpSeconds float64 `json:"caughtUpSeconds,omitempty"`
	ServerCPUSecs   float64 `json:"serverCpuSeconds,omitempty"`
	CPUPerDelivery  float64 `json:"serverCpuMicrosPerDelivery,omitempty"`
	RSSBeforeKiB    int64   `json:"serverRssBeforeKiB,omitempty"`
	RSSAfterKiB     int64   `json:"serverRssAfterKiB,omitempty"`
	KiBPerStream    float64 `json:"serverKiBPerStream,omitempty"`
}

// runBench is `changecast bench`: a load generator for a changecast
// server on this machine (loopback only).
func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("changecast bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c benchConfig
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:8080", "server to load (loopback only)")
	fs.StringVar(&c.Mode, "mode", "fanout", "fanout, idle or storm")
	fs.IntVar(&c.Conns, "conns", 100, "SSE connections (storm: clients)")
	fs.IntVar(&c.Rooms, "rooms", 10, "rooms the connections spread over")
	fs.Float64Var(&c.Rate, "rate", 100, "fanout: writes per second, in total")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "fanout: how long to write; idle: how long to hold")
	fs.IntVar(&c.Behind, "behind", 100, "storm: events written per room while the clients are away")
	fs.IntVar(&c.Pid, "pid", 0, "server process id, to read its CPU time and memory from /proc")
	fs.IntVar(&c.Sources, "sources", 1, "loopback source addresses to spread connections over (127.0.0.1, .2, ...)")
	fs.StringVar(&c.Token, "token", "", "bearer token (default $CHANGECAST_TOKEN)")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.Token == "" {
		c.Token = getenv("CHANGECAST_TOKEN")
	}
	if c.Conns < 1 || c.Rooms < 1 || c.Sources < 1 || c.Sources > 250 || c.Rate <= 0 || c.Behind < 1 {
		return errors.New("bench: -conns, -rooms, -rate, -behind must be positive and -sources 1 to 250")
	}
	if err := benchLoopbackOnly(c.URL); err != nil {
		return err
	}
	benchRaiseFileLimit()
	b := newBencher(c, stderr)
	defer b.tr.CloseIdleConnections()
	var (
		res benchResult
		err error
	)
	switch c.Mode {
	case "fanout":
		res, err = b.fanout(ctx)
	case "idle":
		res, err = b.idle(ctx)
	case "storm":
		res, err = b.storm(ctx)
	default:
		return fmt.Errorf("bench: -mode %q: want fanout, idle or storm", c.Mode)
	}
	if err != nil {
		return err
	}
	if c.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		benchTable(stdout, res)
	}
	if err == nil && (res.Lost > 0 || res.Duplicates > 0 || res.OutOfOrder > 0) {
		err = fmt.Errorf("bench: %d lost, %d duplicate, %d out-of-order deliveries", res.Lost, res.Duplicates, res.OutOfOrder)
	}
	return err
}

// benchLoopbackOnly refuses a target that is not on this machine.
func benchLoopbackOnly(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("bench: -url %q is not an http(s) URL", raw)
	}
	addrs, err := net.LookupIP(u.Hostname())
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("bench: cannot resolve %q", u.Hostname())
	}
	for _, a := range addrs {
		if !a.IsLoopback() {
			return fmt.Errorf("bench: -url %s resolves to %s, not a loopback address; bench loads this machine only", raw, a)
		}
	}
	return nil
}

// benchRaiseFileLimit raises the open-file limit to its hard limit.
func benchRaiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// bencher holds one run's client side.
type bencher struct {
	cfg      benchConfig
	log      io.Writer
	tr       *http.Transport
	client   *http.Client
	next     atomic.Uint32
	errs     atomic.Int64
	reconns  atomic.Int64
	received atomic.Int64
}

func newBencher(c benchConfig, log io.Writer) *bencher {
	b := &bencher{cfg: c, log: log}
	b.tr = &http.Transport{
		MaxIdleConnsPerHost: 256,
		DisableCompression:  true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := net.Dialer{Timeout: 10 * time.Second}
			if n := b.cfg.Sources; n > 1 {
				i := b.next.Add(1) % uint32(n)
				d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	b.client = &http.Client{Transport: b.tr}
	return b
}

func (b *bencher) room(i int) string { return "bench-" + strconv.Itoa(i%b.cfg.Rooms) }

// post writes one message; it returns its id.
func (b *bencher) post(ctx context.Context, room, text string) (string, error) {
	body := fmt.Sprintf(`{"text":%q,"author":"bench"}`, text)
	req, err := http.NewRequestWithContext(ctx, "POST", b.cfg.URL+"/api/rooms/"+room+"/messages", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if b.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+b.cfg.Token)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var m struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("post: status %d, %v", resp.StatusCode, err)
	}
	return m.ID, nil
}

// benchEvent is one parsed SSE event.
type benchEvent struct {
	id, name string
	data     []byte
}

// benchConn is one SSE connection and what it received.
type benchConn struct {
	room    string
	lastID  string
	hist    benchHist
	got     int64
	dups    int64
	order   int64
	texts   []string // storm: message texts in arrival order
	ready   chan struct{}
	readyOK sync.Once
}

// open streams the room until ctx ends; on a drop it reconnects with its
// last id. onEvent runs for every event.
func (b *bencher) open(ctx context.Context, c *benchConn, onEvent func(*benchConn, benchEvent)) {
	for ctx.Err() == nil {
		err := b.stream(ctx, c, onEvent)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			b.errs.Add(1)
		}
		b.reconns.Add(1)
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (b *bencher) stream(ctx context.Context, c *benchConn, onEvent func(*benchConn, benchEvent)) error {
	req, err := http.NewRequestWithContext(ctx, "GET", b.cfg.URL+"/api/rooms/"+c.room+"/events", nil)
	if err != nil {
		return err
	}
	if c.lastID != "" {
		req.Header.Set("Last-Event-ID", c.lastID)
	}
	if b.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+b.cfg.Token)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("stream: status %d", resp.StatusCode)
	}
	br := bufio.NewReaderSize(resp.Body, 8<<10)
	var ev benchEvent
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return err
			}
			return nil // a clean end or a drop: reconnect
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if ev.name != "" || ev.data != nil {
				if ev.id != "" {
					c.lastID = ev.id
				}
				onEvent(c, ev)
			}
			ev = benchEvent{}
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("id: ")):
			ev.id = string(line[4:])
		case bytes.HasPrefix(line, []byte("event: ")):
			ev.name = string(line[7:])
		case bytes.HasPrefix(line, []byte("data: ")):
			ev.data = append(ev.data, line[6:]...)
		}
	}
}

// benchText is a message text carrying its send time and sequence.
func benchText(seq int64) string {
	return "bench " + strconv.FormatInt(time.Now().UnixNano(), 10) + " " + strconv.FormatInt(seq, 10)
}

// benchParse finds the send time and sequence in a message event's data.
func benchParse(data []byte) (sent, seq int64, ok bool) {
	i := bytes.Index(data, []byte(`"text":"bench `))
	if i < 0 {
		return 0, 0, false
	}
	rest := data[i+len(`"text":"bench `):]
	j := bytes.IndexByte(rest, ' ')
	k := bytes.IndexByte(rest, '"')
	if j < 0 || k < j {
		return 0, 0, false
	}
	sent, err1 := strconv.ParseInt(string(rest[:j]), 10, 64)
	seq, err2 := strconv.ParseInt(string(rest[j+1:k]), 10, 64)
	return sent, seq, err1 == nil && err2 == nil
}

// connectAll opens cfg.Conns connections and waits for each snapshot.
func (b *bencher) connectAll(ctx context.Context, onEvent func(*benchConn, benchEvent)) ([]*benchConn, *sync.WaitGroup, error) {
	conns := make([]*benchConn, b.cfg.Conns)
	var wg sync.WaitGroup
	for i := range conns {
		c := &benchConn{room: b.room(i), ready: make(chan struct{})}
		conns[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.open(ctx, c, func(c *benchConn, ev benchEvent) {
				if ev.name == "snapshot" {
					c.readyOK.Do(func() { close(c.ready) })
				}
				onEvent(c, ev)
			})
		}()
		if i%500 == 499 {
			time.Sleep(20 * time.Millisecond) // let the server accept
		}
	}
	deadline := time.After(120 * time.Second)
	for i, c := range conns {
		select {
		case <-c.ready:
		case <-ctx.Done():
			return conns, &wg, ctx.Err()
		case <-deadline:
			return conns, &wg, fmt.Errorf("bench: only %d of %d connections got their snapshot within 120s", i, len(conns))
		}
	}
	return conns, &wg, nil
}

// fanout measures write-to-delivery latency with cfg.Rate writes/s.
func (b *bencher) fanout(ctx context.Context) (benchResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := benchResult{Mode: "fanout", Conns: b.cfg.Conns, Rooms: b.cfg.Rooms}
	perRoom := make(map[string]int64)
	for i := range b.cfg.Conns {
		perRoom[b.room(i)]++
	}
	conns, wg, err := b.connectAll(ctx, func(c *benchConn, ev benchEvent) {
		if ev.name != "message" {
			return
		}
		sent, _, ok := benchParse(ev.data)
		if !ok {
			return
		}
		c.hist.add(time.Now().UnixNano() - sent)
		c.got++
		b.received.Add(1)
	})
	defer func() { cancel(); wg.Wait() }()
	if err != nil {
		return res, err
	}
	fmt.Fprintf(b.log, "bench: %d connections ready; writing %.0f/s for %s\n", len(conns), b.cfg.Rate, b.cfg.Duration)

	cpu0, _ := benchCPU(b.cfg.Pid)
	res.RSSBeforeKiB, _ = benchRSS(b.cfg.Pid)
	start := time.Now()
	var writes, writeErrs, expected atomic.Int64
	writers := max(1, min(64, int(b.cfg.Rate/50)))
	interval := time.Duration(float64(time.Second) * float64(writers) / b.cfg.Rate)
	wctx, wstop := context.WithTimeout(ctx, b.cfg.Duration)
	var ww sync.WaitGroup
	for w := range writers {
		ww.Add(1)
		go func() {
			defer ww.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-wctx.Done():
					return
				case <-tick.C:
				}
				room := b.room(w + n*writers)
				if _, err := b.post(ctx, room, benchText(writes.Add(1))); err != nil {
					writeErrs.Add(1)
					continue
				}
				expected.Add(perRoom[room])
			}
		}()
	}
	progress := time.NewTicker(time.Second)
	defer progress.Stop()
	for done := false; !done; {
		select {
		case <-wctx.Done():
			done = true
		case <-progress.C:
			fmt.Fprintf(b.log, "bench: %4.0fs  writes %d  deliveries %d  errors %d  reconnects %d\n",
				time.Since(start).Seconds(), writes.Load(), b.received.Load(), b.errs.Load(), b.reconns.Load())
		}
	}
	wstop()
	ww.Wait()
	// Let the last deliveries arrive.
	for deadline := time.Now().Add(10 * time.Second); b.received.Load() < expected.Load() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu1, _ := benchCPU(b.cfg.Pid)
	res.RSSAfterKiB, _ = benchRSS(b.cfg.Pid)

	var h benchHist
	for _, c := range conns {
		h.merge(&c.hist)
	}
	res.Writes, res.WriteErrors = writes.Load()-writeErrs.Load(), writeErrs.Load()
	res.Expected, res.Delivered = expected.Load(), b.received.Load()
	res.Lost = max(0, res.Expected-res.Delivered)
	res.Errors, res.Reconnects = b.errs.Load(), b.reconns.Load()
	res.Seconds = elapsed.Seconds()
	res.DeliveriesPerS = float64(res.Delivered) / b.cfg.Duration.Seconds()
	res.P50ms, res.P90ms, res.P99ms, res.MaxMs = h.quantile(.5), h.quantile(.9), h.quantile(.99), h.max()
	if b.cfg.Pid > 0 && res.Delivered > 0 {
		res.ServerCPUSecs = cpu1 - cpu0
		res.CPUPerDelivery = res.ServerCPUSecs * 1e6 / float64(res.Delivered)
		res.KiBPerStream = float64(res.RSSAfterKiB) / float64(b.cfg.Conns)
	}
	return res, nil
}

// idle opens cfg.Conns streams, holds them and reports server memory per
// stream.
func (b *bencher) idle(ctx context.Context) (benchResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	res := benchResult{Mode: "idle", Conns: b.cfg.Conns, Rooms: b.cfg.Rooms}
	res.RSSBeforeKiB, _ = benchRSS(b.cfg.Pid)
	start := time.Now()
	conns, wg, err := b.connectAll(ctx, func(*benchConn, benchEvent) {})
	defer func() { cancel(); wg.Wait() }()
	if err != nil {
		return res, err
	}
	fmt.Fprintf(b.log, "bench: %d streams open after %s; holding for %s\n", len(conns), time.Since(start).Round(time.Millisecond), b.cfg.Duration)
	select {
	case <-ctx.Done():
	case <-time.After(b.cfg.Duration):
	}
	res.RSSAfterKiB, _ = benchRSS(b.cfg.Pid)
	res.Errors, res.Reconnects = b.errs.Load(), b.reconns.Load()
	res.Seconds = time.Since(start).Seconds()
	if b.cfg.Pid > 0 {
		res.KiBPerStream = float64(res.RSSAfterKiB-res.RSSBeforeKiB) / float64(len(conns))
	}
	return res, nil
}

// storm: clients read their snapshot and go away; cfg.Behind messages are
// written to each room; all clients come back at once with their last
// ids. Every client must then hold every missed message exactly once, in
// order.
func (b *bencher) storm(ctx context.Context) (benchResult, error) {
	res := benchResult{Mode: "storm", Conns: b.cfg.Conns, Rooms: b.cfg.Rooms}
	first, cancelFirst := context.WithCancel(ctx)
	conns, wg, err := b.connectAll(first, func(*benchConn, benchEvent) {})
	cancelFirst()
	wg.Wait()
	if err != nil {
		return res, err
	}
	b.tr.CloseIdleConnections()

	// Write cfg.Behind messages to every room while everyone is away.
	want := make(map[string][]string, b.cfg.Rooms)
	var mu sync.Mutex
	var ww sync.WaitGroup
	for r := range b.cfg.Rooms {
		ww.Add(1)
		go func() {
			defer ww.Done()
			room := b.room(r)
			for i := range b.cfg.Behind {
				text := fmt.Sprintf("storm %d %d", r, i)
				if _, err := b.post(ctx, room, text); err != nil {
					b.errs.Add(1)
					continue
				}
				mu.Lock()
				want[room] = append(want[room], text)
				mu.Unlock()
			}
		}()
	}
	ww.Wait()
	for _, ts := range want {
		res.Writes += int64(len(ts))
	}
	fmt.Fprintf(b.log, "bench: %d clients away; %d messages written; reconnecting all at once\n", len(conns), res.Writes)

	cpu0, _ := benchCPU(b.cfg.Pid)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var caught sync.WaitGroup
	var pending atomic.Int64
	start := time.Now()
	for _, c := range conns {
		c.texts = c.texts[:0]
		need := len(want[c.room])
		res.Expected += int64(need)
		pending.Add(1)
		caught.Add(1)
		var prev string
		var once sync.Once
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.open(ctx, c, func(c *benchConn, ev benchEvent) {
				if ev.name != "message" {
					if ev.name == "reset" || ev.name == "snapshot" {
						c.order++ // a resume must not reset
					}
					return
				}
				if ev.id <= prev {
					c.order++
				}
				prev = ev.id
				i := bytes.Index(ev.data, []byte(`"text":"`))
				j := bytes.IndexByte(ev.data[i+8:], '"')
				c.texts = append(c.texts, string(ev.data[i+8:i+8+j]))
				b.received.Add(1)
				if len(c.texts) >= need {
					once.Do(func() { pending.Add(-1); caught.Done() })
				}
			})
		}()
	}
	done := make(chan struct{})
	go func() { caught.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		fmt.Fprintf(b.log, "bench: %d clients not caught up after 120s\n", pending.Load())
	}
	res.CaughtUpSeconds = time.Since(start).Seconds()
	cancel()
	wg.Wait()
	select {
	case <-done:
	default:
		// Unblock the waiter goroutine for clients that never caught up.
		for range pending.Load() {
			caught.Done()
		}
	}
	cpu1, _ := benchCPU(b.cfg.Pid)

	for _, c := range conns {
		w := want[c.room]
		seen := make(map[string]bool, len(c.texts))
		for i, t := range c.texts {
			if seen[t] {
				res.Duplicates++
			}
			seen[t] = true
			if i < len(w) && t != w[i] {
				res.OutOfOrder++
			}
		}
		for _, t := range w {
			if !seen[t] {
				res.Lost++
			}
		}
		res.OutOfOrder += c.order
	}
	res.Delivered = b.received.Load()
	res.Errors, res.Reconnects = b.errs.Load(), b.reconns.Load()
	res.Seconds = res.CaughtUpSeconds
	if res.CaughtUpSeconds > 0 {
		res.DeliveriesPerS = float64(res.Delivered) / res.CaughtUpSeconds
	}
	if b.cfg.Pid > 0 && res.Delivered > 0 {
		res.ServerCPUSecs = cpu1 - cpu0
		res.CPUPerDelivery = res.ServerCPUSecs * 1e6 / float64(res.Delivered)
	}
	return res, nil
}

// benchCPU returns a process's user+system CPU seconds.
func benchCPU(pid int) (float64, error) {
	if pid <= 0 {
		return 0, nil
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the ")" that closes the command name: state is field 3;
	// utime and stime are fields 14 and 15, in clock ticks (100 per second).
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil
}

// benchRSS returns a process's resident memory in KiB.
func benchRSS(pid int) (int64, error) {
	if pid <= 0 {
		return 0, nil
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				return strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS")
}

func benchTable(w io.Writer, r benchResult) {
	fmt.Fprintf(w, "mode              %s\n", r.Mode)
	fmt.Fprintf(w, "connections       %d over %d rooms\n", r.Conns, r.Rooms)
	fmt.Fprintf(w, "writes            %d (%d failed)\n", r.Writes, r.WriteErrors)
	fmt.Fprintf(w, "deliveries        %d of %d expected (%.0f/s)\n", r.Delivered, r.Expected, r.DeliveriesPerS)
	fmt.Fprintf(w, "lost / dup / order %d / %d / %d\n", r.Lost, r.Duplicates, r.OutOfOrder)
	fmt.Fprintf(w, "errors, reconnects %d, %d\n", r.Errors, r.Reconnects)
	if r.Mode == "fanout" {
		fmt.Fprintf(w, "latency ms        p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
	}
	if r.Mode == "storm" {
		fmt.Fprintf(w, "caught up in      %.2f s\n", r.CaughtUpSeconds)
	}
	if r.ServerCPUSecs > 0 {
		fmt.Fprintf(w, "server CPU        %.2f s, %.1f µs per delivery\n", r.ServerCPUSecs, r.CPUPerDelivery)
	}
	if r.RSSAfterKiB > 0 {
		fmt.Fprintf(w, "server RSS        %d KiB -> %d KiB (%.1f KiB per stream)\n", r.RSSBeforeKiB, r.RSSAfterKiB, r.KiBPerStream)
	}
}

// benchHist is a log-bucketed latency histogram in microseconds: values
// below 32 µs exact, above that 16 buckets per power of two (≤ 6% error).
type benchHist struct {
	counts [512]uint32
	n      uint64
	maxV   int64
}

func benchBucket(us int64) int {
	if us < 32 {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 5
	m := us >> e // 16..31
	return min(32+(e-1)*16+int(m-16), 511)
}

// benchLower returns the smallest value of bucket i, in µs.
func benchLower(i int) int64 {
	if i < 32 {
		return int64(i)
	}
	e := (i-32)/16 + 1
	m := int64((i-32)%16 + 16)
	return m << e
}

func (h *benchHist) add(nanos int64) {
	us := nanos / 1000
	h.counts[benchBucket(us)]++
	h.n++
	h.maxV = max(h.maxV, us)
}

func (h *benchHist) merge(o *benchHist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.maxV = max(h.maxV, o.maxV)
}

// quantile returns the q-quantile in milliseconds (a bucket's lower bound).
func (h *benchHist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n-1)) + 1
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			return float64(benchLower(i)) / 1000
		}
	}
	return float64(h.maxV) / 1000
}

func (h *benchHist) max() float64 { return float64(h.maxV) / 1000 }
