// Package loadgen is the load generator behind `changecast bench`: it
// loads a changecast server on this machine (loopback targets only) with
// many SSE streams and writes, and checks that every event arrives once
// and in order. Run is the whole command.
//
// The modes: fanout (fanout.go, its writers in write.go), board
// (board.go: list topic orders under order changes), idle (idle.go) and
// storm (storm.go), connecting their streams through connect.go. A
// stream is a bare TCP connection (stream.go) whose body is decoded
// without allocation (decode.go, over package stream/sseparse), read by a
// goroutine each or by a few epoll loops (poll_linux.go). Latencies go
// into log-bucketed histograms (hist.go); the server's CPU and memory
// come from /proc (proc.go) and its /metrics (serverstats.go,
// promtext.go); result.go holds the figures and prints them.
package loadgen

import (
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
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// config is what `changecast bench` is told.
type config struct {
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
	Stages   string // the server's debug listener, for its stage timing
	Trace    string // where to save the trace of its slowest delivery
	// The curve mode's.
	Rates   string
	SVG     string
	Compare string
	Name    string
}

// Run is `changecast bench`: a load generator for a changecast
// server on this machine (loopback targets only). It prints a progress
// line a second to stderr and the result to stdout, and returns an error
// if any event was lost, doubled or out of order.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, getenv, stdout)
	if err != nil {
		return err
	}
	if c.Mode == "curve" {
		cv, err := curve(ctx, c, stderr)
		if err != nil {
			return err
		}
		if c.JSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(cv)
		}
		printCurve(stdout, cv)
		return nil
	}
	res, err := measure(ctx, c, stderr)
	if err != nil {
		return err
	}
	return report(stdout, c, res)
}

// UsageError is a bad command line: the caller prints it once, with a
// hint to run -h.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// parseFlags reads the command line and checks it. -h prints the usage
// to stdout and returns flag.ErrHelp; a flag it does not know, or an
// argument, is a UsageError, printed by the caller (not here too).
func parseFlags(args []string, getenv func(string) string, stdout io.Writer) (config, error) {
	fs := flag.NewFlagSet("changecast bench", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var c config
	fs.StringVar(&c.URL, "url", "http://127.0.0.1:8080", "server to load (loopback only)")
	fs.StringVar(&c.Mode, "mode", "fanout", "fanout (latency under writes), curve (fanout at rising -rates up to saturation), board (staff streams on topic orders under order changes), idle (memory per stream) or storm (reconnect storm)")
	fs.StringVar(&c.Rates, "rates", defaultRates, "curve: the write rates per second to step through, rising; the sweep ends after the first that is not kept up with")
	fs.StringVar(&c.SVG, "svg", "", "curve: write the plot (latency against load, log scale) to this SVG file")
	fs.StringVar(&c.Compare, "compare", "", "curve: comma-separated JSON files of other -mode curve -json runs to plot beside this one")
	fs.StringVar(&c.Name, "name", "changecast", "curve: this run's name in the plot")
	fs.IntVar(&c.Conns, "conns", 100, "SSE connections (storm: clients)")
	fs.IntVar(&c.Rooms, "rooms", 10, "rooms the connections and writes spread over (not board)")
	fs.Float64Var(&c.Rate, "rate", 100, "fanout: writes per second, in total; board: order changes (creates and moves) per second")
	fs.IntVar(&c.Writers, "writers", 0, "fanout, board: concurrent writers (0: from -rate)")
	fs.IntVar(&c.Size, "size", 0, "bytes of padding added to each message text")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "fanout, board: how long to measure; idle: how long to hold the streams")
	fs.DurationVar(&c.Warmup, "warmup", 2*time.Second, "fanout, board: how long to write before measuring")
	fs.IntVar(&c.Behind, "behind", 100, "storm: messages written to each room while the clients are away")
	fs.DurationVar(&c.Timeout, "timeout", 2*time.Minute, "bound on connecting every stream, and on a storm's catch-up")
	fs.IntVar(&c.Pid, "pid", 0, "server process id: read its CPU time and memory from /proc (else from /metrics)")
	fs.IntVar(&c.Sources, "sources", 1, "loopback source addresses to spread the streams over (127.0.0.1, .2, ...)")
	fs.StringVar(&c.Token, "token", "", "bearer token (default $CHANGECAST_TOKEN)")
	fs.BoolVar(&c.JSON, "json", false, "print the result as JSON")
	fs.StringVar(&c.Reader, "reader", "epoll", "how streams are read: epoll (a loop per core; Linux) or goroutine (one per stream)")
	fs.DurationVar(&c.Coalesce, "coalesce", 500*time.Microsecond, "epoll reader: after a wake-up, wait this long for more readable streams (fewer system calls; adds up to this much to latency)")
	fs.StringVar(&c.Stages, "stages", "", "fanout, board, curve: the server's debug listener (its PPROF_ADDR, such as http://127.0.0.1:6060): print how long each stage of a change took on the server")
	fs.StringVar(&c.Trace, "trace", "", "with -stages and a server run with TRACE_SLOW: save the runtime trace kept around its slowest delivery to this file (for go tool trace)")
	fs.StringVar(&c.Profile, "cpuprofile", "", "write the load generator's own CPU profile to this file")
	switch err := fs.Parse(args); {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintln(stdout, "usage: changecast bench [flags]   load a changecast server on this machine (loopback only)")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return config{}, err
	case err != nil:
		return config{}, &UsageError{err}
	}
	if fs.NArg() > 0 {
		return config{}, &UsageError{fmt.Errorf("bench: unexpected argument %q", fs.Arg(0))}
	}
	if c.Token == "" {
		c.Token = getenv("CHANGECAST_TOKEN")
	}
	switch {
	case c.Conns < 1 || c.Rooms < 1 || c.Behind < 1:
		return config{}, errors.New("bench: -conns, -rooms and -behind must be at least 1")
	case !(c.Rate > 0) || c.Rate > 1e6:
		return config{}, errors.New("bench: -rate must be above 0 and at most 1e6")
	case c.Sources < 1 || c.Sources > 254:
		return config{}, errors.New("bench: -sources must be 1 to 254")
	case c.Duration <= 0 || c.Warmup < 0 || c.Timeout <= 0 || c.Writers < 0 || c.Size < 0 || c.Size > 3000:
		return config{}, errors.New("bench: -duration and -timeout must be positive, -warmup and -writers not negative, -size 0 to 3000")
	case c.Mode != "fanout" && c.Mode != "curve" && c.Mode != "board" && c.Mode != "idle" && c.Mode != "storm":
		return config{}, fmt.Errorf("bench: -mode %q: want fanout, curve, board, idle or storm", c.Mode)
	case c.Reader != "epoll" && c.Reader != "goroutine":
		return config{}, fmt.Errorf("bench: -reader %q: want epoll or goroutine", c.Reader)
	}
	if c.Stages != "" {
		if _, err := loopbackOnly(c.Stages); err != nil {
			return config{}, fmt.Errorf("bench: -stages: %w", err)
		}
		c.Stages = strings.TrimRight(c.Stages, "/")
	}
	if c.Trace != "" && c.Stages == "" {
		return config{}, errors.New("bench: -trace needs -stages")
	}
	if c.Mode == "curve" {
		if _, err := parseRates(c.Rates); err != nil {
			return config{}, err
		}
	}
	return c, nil
}

// measure runs the mode c asks for and returns what it measured.
func measure(ctx context.Context, c config, stderr io.Writer) (Result, error) {
	b, err := newBencher(c, stderr)
	if err != nil {
		return Result{}, err
	}
	defer b.tr.CloseIdleConnections()
	raiseFileLimit(stderr)
	if c.Profile != "" {
		f, err := os.Create(c.Profile)
		if err != nil {
			return Result{}, fmt.Errorf("bench: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return Result{}, fmt.Errorf("bench: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	if c.Reader == "epoll" {
		if b.poll, err = newPollSet(b); err != nil {
			return Result{}, err
		}
		defer b.poll.close()
	}

	var res Result
	switch c.Mode {
	case "fanout":
		res, err = b.fanout(ctx)
	case "board":
		res, err = b.board(ctx)
	case "idle":
		res, err = b.idle(ctx)
	case "storm":
		res, err = b.storm(ctx)
	}
	if err != nil {
		return Result{}, err
	}
	res.Mode, res.Conns, res.Rooms = c.Mode, c.Conns, c.Rooms
	if c.Mode == "board" {
		res.Rooms = 0
	}
	res.Errors, res.Reconnects = b.errs.Load(), b.reconnects.Load()
	return res, nil
}

// report prints res (as JSON with -json) and returns an error if any
// event was lost, doubled or out of order.
func report(stdout io.Writer, c config, res Result) error {
	var err error
	if c.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(res)
	} else {
		printTable(stdout, res)
	}
	if err == nil && res.Lost+res.Duplicates+res.OutOfOrder+res.Unexpected+res.Resets > 0 {
		err = fmt.Errorf("bench: %d lost, %d duplicate, %d out-of-order, %d unexpected deliveries, %d resets",
			res.Lost, res.Duplicates, res.OutOfOrder, res.Unexpected, res.Resets)
	}
	return err
}

// bencher holds one run's client side.
type bencher struct {
	cfg      config
	log      io.Writer
	host     string // Host header
	hostPort string // dial address
	basePath string // the URL's path, without a trailing slash
	tr       *http.Transport
	client   *http.Client // writes and /metrics
	poll     *pollSet     // the epoll reader; nil: a goroutine per stream

	nextSource atomic.Uint32
	open       atomic.Int64 // streams connected now
	errs       atomic.Int64
	reconnects atomic.Int64

	logMu  sync.Mutex
	logged int
}

func newBencher(c config, log io.Writer) (*bencher, error) {
	u, err := loopbackOnly(c.URL)
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

// loopbackOnly parses raw and refuses it unless it is a plain http
// URL whose host resolves only to loopback addresses: bench loads this
// machine and no other.
func loopbackOnly(raw string) (*url.URL, error) {
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
