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
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchConfig is what `changecast bench` is told.
type benchConfig struct {
	URL      string
	Mode     string
	Conns    int
	Rooms    int
	Rate     float64
	Writers  int
	Size     int
	Duration time.Duration
	Warmup   time.Duration
	Behind   int
	Timeout  time.Duration
	Pid      int
	Sources  int
	Token    string
	JSON     bool
	Profile  string
	Reader   string
	Coalesce time.Duration
}

// benchResult is what a run measured; -json prints it. Deliveries count
// events received by the SSE connections; "expected" is what the writes
// that succeeded should have produced (each write reaches every
// connection watching its room).
type benchResult struct {
	Mode  string `json:"mode"`
	Conns int    `json:"conns"`
	Rooms int    `json:"rooms"`
	// Streams is how many connections were open at the end (idle,
	// fanout) or took part (storm).
	Streams          int64   `json:"streamsOpen"`
	ConnectSeconds   float64 `json:"connectSeconds"`
	RateAsked        float64 `json:"writeRateAsked,omitempty"`
	Writes           int64   `json:"writes"`
	WriteErrors      int64   `json:"writeErrors"`
	WritesSkipped    int64   `json:"writesSkipped"`
	WritesPerS       float64 `json:"writesPerSecond,omitempty"`
	WriteP50ms       float64 `json:"writeP50ms,omitempty"`
	WriteP99ms       float64 `json:"writeP99ms,omitempty"`
	Expected         int64   `json:"expectedDeliveries"`
	Delivered        int64   `json:"deliveries"`
	Lost             int64   `json:"lost"`
	Duplicates       int64   `json:"duplicates"`
	OutOfOrder       int64   `json:"outOfOrder"`
	Unexpected       int64   `json:"unexpected"`
	Resets           int64   `json:"resets"`
	Errors           int64   `json:"errors"`
	Reconnects       int64   `json:"reconnects"`
	WarmupSeconds    float64 `json:"warmupSeconds,omitempty"`
	Seconds          float64 `json:"seconds"`
	MeasuredWrites   int64   `json:"measuredWrites,omitempty"`
	MeasuredDelivers int64   `json:"measuredDeliveries,omitempty"`
	DeliveriesPerS   float64 `json:"deliveriesPerSecond"`
	P50ms            float64 `json:"p50ms"`
	P90ms            float64 `json:"p90ms"`
	P99ms            float64 `json:"p99ms"`
	MaxMs            float64 `json:"maxMs"`
	CaughtUpSeconds  float64 `json:"caughtUpSeconds,omitempty"`
	CaughtUp         int64   `json:"caughtUpClients,omitempty"`

	ServerCPUSecs     float64 `json:"serverCpuSeconds,omitempty"`
	CPUPerDelivery    float64 `json:"serverCpuMicrosPerDelivery,omitempty"`
	SysPerDelivery    float64 `json:"serverKernelCpuMicrosPerDelivery,omitempty"`
	ServerCPUPercent  float64 `json:"serverCpuPercent,omitempty"`
	ClientCPUSecs     float64 `json:"clientCpuSeconds,omitempty"`
	ClientPerDelivery float64 `json:"clientCpuMicrosPerDelivery,omitempty"`
	RSSBeforeKiB      int64   `json:"serverRssBeforeKiB,omitempty"`
	RSSAfterKiB       int64   `json:"serverRssAfterKiB,omitempty"`
	KiBPerStream      float64 `json:"serverRssKiBPerStream,omitempty"`
	HeapBeforeKiB     int64   `json:"serverHeapBeforeKiB,omitempty"`
	HeapAfterKiB      int64   `json:"serverHeapAfterKiB,omitempty"`
	HeapKiBPerStream  float64 `json:"serverHeapKiBPerStream,omitempty"`
	StackAfterKiB     int64   `json:"serverStackKiB,omitempty"`
	StackKiBPerStream float64 `json:"serverStackKiBPerStream,omitempty"`
	Goroutines        int64   `json:"serverGoroutines,omitempty"`
	ServerStreams     int64   `json:"serverStreamsOpen,omitempty"`
	ServerSource      string  `json:"serverStatsFrom,omitempty"`
}

// runBench is `changecast bench`: a load generator for a changecast
// server on this machine (loopback targets only). It prints a progress
// line a second to stderr and the result to stdout, and returns an error
// if any event was lost, doubled or out of order.
func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("changecast bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: changecast bench [flags]   load a changecast server on this machine (loopback only)")
		fs.PrintDefaults()
	}
	var c benchConfig
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:8080", "server to load (loopback only)")
	fs.StringVar(&c.Mode, "mode", "fanout", "fanout (latency under writes), idle (memory per stream) or storm (reconnect storm)")
	fs.IntVar(&c.Conns, "conns", 100, "SSE connections (storm: clients)")
	fs.IntVar(&c.Rooms, "rooms", 10, "rooms the connections and writes spread over")
	fs.Float64Var(&c.Rate, "rate", 100, "fanout: writes per second, in total")
	fs.IntVar(&c.Writers, "writers", 0, "fanout: concurrent writers (0: from -rate)")
	fs.IntVar(&c.Size, "size", 0, "bytes of padding added to each message text")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "fanout: how long to measure; idle: how long to hold the streams")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "fanout: how long to write before measuring")
	fs.IntVar(&c.Behind, "behind", 100, "storm: messages written to each room while the clients are away")
	fs.DurationVar(&c.Timeout, "timeout", 2*time.Minute, "bound on connecting every stream, and on a storm's catch-up")
	fs.IntVar(&c.Pid, "pid", 0, "server process id: read its CPU time and memory from /proc (else from /metrics)")
	fs.IntVar(&c.Sources, "sources", 1, "loopback source addresses to spread the streams over (127.0.0.1, .2, ...)")
	fs.StringVar(&c.Token, "token", "", "bearer token (default $CHANGECAST_TOKEN)")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON")
	fs.StringVar(&c.Reader, "reader", "epoll", "how streams are read: epoll (a loop per core; Linux) or goroutine (one per stream)")
	fs.DurationVar(&c.Coalesce, "coalesce", 500*time.Microsecond, "epoll reader: after a wake-up, wait this long for more readable streams (fewer system calls; adds up to this much to latency)")
	fs.StringVar(&c.Profile, "cpuprofile", "", "write the load generator's own CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))
	}
	if c.Token == "" {
		c.Token = getenv("CHANGECAST_TOKEN")
	}
	switch {
	case c.Conns < 1 || c.Rooms < 1 || c.Behind < 1:
		return errors.New("bench: -conns, -rooms and -behind must be at least 1")
	case !(c.Rate > 0) || c.Rate > 1e6:
		return errors.New("bench: -rate must be above 0 and at most 1e6")
	case c.Sources < 1 || c.Sources > 254:
		return errors.New("bench: -sources must be 1 to 254")
	case c.Duration <= 0 || c.Warmup < 0 || c.Timeout <= 0 || c.Writers < 0 || c.Size < 0 || c.Size > 3000:
		return errors.New("bench: -duration and -timeout must be positive, -warmup and -writers not negative, -size 0 to 3000")
	case c.Mode != "fanout" && c.Mode != "idle" && c.Mode != "storm":
		return fmt.Errorf("bench: -mode %q: want fanout, idle or storm", c.Mode)
	case c.Reader != "epoll" && c.Reader != "goroutine":
		return fmt.Errorf("bench: -reader %q: want epoll or goroutine", c.Reader)
	}
	b, err := newBencher(c, stderr)
	if err != nil {
		return err
	}
	defer b.tr.CloseIdleConnections()
	benchRaiseFileLimit(stderr)
	if c.Profile != "" {
		f, err := os.Create(c.Profile)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if c.Reader == "epoll" {
		if b.poll, err = newBenchPoll(b); err != nil {
			return err
		}
		defer b.poll.close()
	}

	var res benchResult
	switch c.Mode {
	case "fanout":
		res, err = b.fanout(ctx)
	case "idle":
		res, err = b.idle(ctx)
	case "storm":
		res, err = b.storm(ctx)
	}
	if err != nil {
		return err
	}
	res.Mode, res.Conns, res.Rooms = c.Mode, c.Conns, c.Rooms
	res.Errors, res.Reconnects = b.errs.Load(), b.reconnects.Load()
	if c.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		benchTable(stdout, res)
	}
	if err == nil && res.Lost+res.Duplicates+res.OutOfOrder+res.Unexpected+res.Resets > 0 {
		err = fmt.Errorf("bench: %d lost, %d duplicate, %d out-of-order, %d unexpected deliveries, %d resets",
			res.Lost, res.Duplicates, res.OutOfOrder, res.Unexpected, res.Resets)
	}
	return err
}

// bencher holds one run's client side.
type bencher struct {
	cfg      benchConfig
	log      io.Writer
	host     string // Host header
	hostPort string // dial address
	basePath string // the URL's path, without a trailing slash
	tr       *http.Transport
	client   *http.Client // writes and /metrics
	poll     *benchPoll   // the epoll reader; nil: a goroutine per stream

	nextSource atomic.Uint32
	open       atomic.Int64 // streams connected now
	errs       atomic.Int64
	reconnects atomic.Int64

	logMu  sync.Mutex
	logged int
}

func newBencher(c benchConfig, log io.Writer) (*bencher, error) {
	u, err := benchLoopbackOnly(c.URL)
	if err != nil {
		return nil, err
	}
	b := &bencher{cfg: c, log: log, host: u.Host, basePath: strings.TrimRight(u.Path, "/")}
	b.hostPort = u.Host
	if u.Port() == "" {
		b.hostPort = net.JoinHostPort(u.Hostname(), "80")
	}
	if c.Sources > 1 {
		if ip := net.ParseIP(u.Hostname()); ip != nil && ip.To4() == nil {
			return nil, errors.New("bench: -sources needs an IPv4 loopback -url (127.x.x.x)")
		}
	}
	writers := b.writers()
	b.tr = &http.Transport{
		MaxIdleConnsPerHost: writers + 2,
		MaxConnsPerHost:     writers + 2,
		DisableCompression:  true,
		IdleConnTimeout:     30 * time.Second,
	}
	b.client = &http.Client{Transport: b.tr, Timeout: 30 * time.Second}
	return b, nil
}

// writers is how many concurrent writers the pacer feeds: enough that
// writes taking 25 ms each still keep up with -rate.
func (b *bencher) writers() int {
	if b.cfg.Writers > 0 {
		return b.cfg.Writers
	}
	return min(max(int(b.cfg.Rate/40)+1, 4), 128)
}

// fail counts an error and prints the first few.
func (b *bencher) fail(err error) {
	b.errs.Add(1)
	b.logMu.Lock()
	defer b.logMu.Unlock()
	if b.logged < 5 {
		b.logged++
		fmt.Fprintf(b.log, "bench: %v\n", err)
		if b.logged == 5 {
			fmt.Fprintln(b.log, "bench: (further errors are only counted)")
		}
	}
}

// benchLoopbackOnly parses raw and refuses it unless it is a plain http
// URL whose host resolves only to loopback addresses: bench loads this
// machine and no other.
func benchLoopbackOnly(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("bench: -url %q is not an http:// URL", raw)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupIPAddr(ctx, u.Hostname())
	if err != nil || len(addrs) == 0 {
		return nil, fmt.Errorf("bench: -url %s: cannot resolve %q: %v", raw, u.Hostname(), err)
	}
	for _, a := range addrs {
		if !a.IP.IsLoopback() {
			return nil, fmt.Errorf("bench: -url %s: %s is not a loopback address; bench loads this machine only (127.0.0.0/8, ::1)", raw, a.IP)
		}
	}
	return u, nil
}

// progress prints line() to the log every second until stop is closed.
// The returned function stops it and waits.
func (b *bencher) progress(line func(elapsed time.Duration) string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	start := time.Now()
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(b.log, "bench: %5.1fs  %s\n", time.Since(start).Seconds(), line(time.Since(start)))
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// benchServerStats is the server's resource use at one moment, from /proc
// (given -pid) and /metrics (when the server serves it).
type benchServerStats struct {
	ok         bool
	from       string
	cpuSecs    float64
	sysSecs    float64 // of cpuSecs, in the kernel (from /proc only)
	rssKiB     int64
	heapKiB    int64
	stackKiB   int64
	goroutines int64
	streams    int64
}

// serverStats reads the server's CPU time and memory: from /proc/<pid>
// with -pid, and from /metrics (heap, goroutines, open streams; CPU and
// RSS too without -pid).
func (b *bencher) serverStats(ctx context.Context) benchServerStats {
	var st benchServerStats
	m := b.metrics(ctx)
	if m != nil {
		st.ok, st.from = true, "/metrics"
		st.cpuSecs = m["process_cpu_seconds_total"]
		st.rssKiB = int64(m["process_resident_memory_bytes"] / 1024)
		st.heapKiB = int64(m["go_memstats_heap_inuse_bytes"] / 1024)
		st.stackKiB = int64(m["go_memstats_stack_inuse_bytes"] / 1024)
		st.goroutines = int64(m["go_goroutines"])
		st.streams = int64(m["changecast_streams_open"])
	}
	if b.cfg.Pid > 0 {
		user, sys, err1 := benchProcTimes(b.cfg.Pid)
		rss, err2 := benchProcRSS(b.cfg.Pid)
		if err1 == nil && err2 == nil {
			st.ok, st.cpuSecs, st.sysSecs, st.rssKiB = true, user+sys, sys, rss
			if m == nil {
				st.from = "/proc/" + strconv.Itoa(b.cfg.Pid)
			} else {
				st.from = "/proc/" + strconv.Itoa(b.cfg.Pid) + " and /metrics"
			}
		} else {
			b.fail(fmt.Errorf("-pid %d: %v", b.cfg.Pid, errors.Join(err1, err2)))
		}
	}
	return st
}

// metrics scrapes the server's /metrics (Prometheus text format) into a
// map of unlabelled samples; nil if there is none.
func (b *bencher) metrics(ctx context.Context) map[string]float64 {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.cfg.URL+"/metrics", nil)
	if err != nil {
		return nil
	}
	if b.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+b.cfg.Token)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	m := make(map[string]float64)
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			m[name] = f
		}
	}
	if len(m) == 0 {
		return nil
	}
	return m
}

// benchClockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times:
// 100 on every Linux architecture Go supports.
const benchClockTicks = 100

// benchProcCPU returns a process's user+system CPU seconds.
func benchProcCPU(pid int) (float64, error) {
	user, sys, err := benchProcTimes(pid)
	return user + sys, err
}

// benchProcTimes returns a process's user and system (kernel) CPU
// seconds.
func benchProcTimes(pid int) (user, sys float64, err error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// Fields after the ")" that closes the command name start with the
	// state (field 3); utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, 0, errors.New("malformed /proc stat")
	}
	return ut / benchClockTicks, st / benchClockTicks, nil
}

// benchProcRSS returns a process's resident memory in KiB.
func benchProcRSS(pid int) (int64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// applyServerStats fills the result's server figures from the stats
// before and after a measured window in which delivered events arrived
// over streams connections.
func (r *benchResult) applyServerStats(before, after benchServerStats, delivered int64, streams int64, window time.Duration) {
	if !before.ok || !after.ok {
		return
	}
	r.ServerSource = after.from
	r.RSSBeforeKiB, r.RSSAfterKiB = before.rssKiB, after.rssKiB
	r.HeapBeforeKiB, r.HeapAfterKiB = before.heapKiB, after.heapKiB
	r.Goroutines, r.ServerStreams = after.goroutines, after.streams
	r.ServerCPUSecs = after.cpuSecs - before.cpuSecs
	if window > 0 {
		r.ServerCPUPercent = 100 * r.ServerCPUSecs / window.Seconds()
	}
	if delivered > 0 {
		r.CPUPerDelivery = r.ServerCPUSecs * 1e6 / float64(delivered)
		if after.sysSecs > 0 {
			r.SysPerDelivery = (after.sysSecs - before.sysSecs) * 1e6 / float64(delivered)
		}
	}
	if streams > 0 {
		r.KiBPerStream = float64(after.rssKiB) / float64(streams)
		if r.Mode == "idle" {
			r.KiBPerStream = float64(after.rssKiB-before.rssKiB) / float64(streams)
		}
		if after.heapKiB > 0 {
			r.HeapKiBPerStream = float64(after.heapKiB-before.heapKiB) / float64(streams)
			r.StackAfterKiB = after.stackKiB
			r.StackKiBPerStream = float64(after.stackKiB-before.stackKiB) / float64(streams)
		}
	}
}

// applyClientCPU fills the result's client CPU figures.
func (r *benchResult) applyClientCPU(before, after float64, delivered int64) {
	r.ClientCPUSecs = after - before
	if delivered > 0 {
		r.ClientPerDelivery = r.ClientCPUSecs * 1e6 / float64(delivered)
	}
}

// benchSelfCPU returns this process's CPU seconds (0 if unreadable).
func benchSelfCPU() float64 {
	s, _ := benchProcCPU(os.Getpid())
	return s
}

func benchTable(w io.Writer, r benchResult) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("mode                %s", r.Mode)
	p("streams             %d over %d rooms (%d open at the end), connected in %.2f s", r.Conns, r.Rooms, r.Streams, r.ConnectSeconds)
	if r.Mode != "idle" {
		p("writes              %d ok, %d failed, %d skipped (generator behind)", r.Writes, r.WriteErrors, r.WritesSkipped)
	}
	if r.Mode == "fanout" {
		p("write rate          %.0f/s of %.0f/s asked; POST p50 %.2f ms, p99 %.2f ms", r.WritesPerS, r.RateAsked, r.WriteP50ms, r.WriteP99ms)
		p("measured            %.1f s after %.1f s warm-up: %d writes, %d deliveries", r.Seconds, r.WarmupSeconds, r.MeasuredWrites, r.MeasuredDelivers)
	}
	if r.Mode != "idle" {
		p("deliveries          %d of %d expected, %.0f/s", r.Delivered, r.Expected, r.DeliveriesPerS)
		p("lost/dup/order      %d / %d / %d (unexpected %d, resets %d)", r.Lost, r.Duplicates, r.OutOfOrder, r.Unexpected, r.Resets)
	}
	p("errors, reconnects  %d, %d", r.Errors, r.Reconnects)
	if r.Mode == "fanout" {
		p("latency             p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms (write to delivery)", r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
	}
	if r.Mode == "storm" {
		p("caught up           %d of %d clients in %.2f s; per client p50 %.0f ms, p90 %.0f ms, p99 %.0f ms", r.CaughtUp, r.Conns, r.CaughtUpSeconds, r.P50ms, r.P90ms, r.P99ms)
	}
	if r.ServerSource != "" {
		p("server (%s)", r.ServerSource)
		if r.Mode != "idle" {
			kernel := ""
			if r.SysPerDelivery > 0 {
				kernel = fmt.Sprintf(" (%.2f µs of it in the kernel)", r.SysPerDelivery)
			}
			p("  CPU               %.2f s (%.0f%% of a core), %.2f µs per delivery%s", r.ServerCPUSecs, r.ServerCPUPercent, r.CPUPerDelivery, kernel)
		}
		p("  RSS               %d KiB -> %d KiB, %.1f KiB per stream", r.RSSBeforeKiB, r.RSSAfterKiB, r.KiBPerStream)
		if r.HeapAfterKiB > 0 {
			p("  heap in use       %d KiB -> %d KiB, %.1f KiB per stream", r.HeapBeforeKiB, r.HeapAfterKiB, r.HeapKiBPerStream)
			p("  goroutine stacks  %d KiB, %.1f KiB per stream", r.StackAfterKiB, r.StackKiBPerStream)
			p("  goroutines        %d; streams open %d", r.Goroutines, r.ServerStreams)
		}
	}
	if r.ClientCPUSecs > 0 && r.Mode != "idle" {
		p("client CPU          %.2f s, %.2f µs per delivery", r.ClientCPUSecs, r.ClientPerDelivery)
	}
}
