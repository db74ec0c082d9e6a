//go:build linux

// Command syncfloor measures the durability floor of this machine's disk:
// how long a write waits before it is on disk when nothing else is done
// with it. One committer takes every write that arrived meanwhile (a
// group commit), writes pages over blocks the file already has and
// fdatasyncs. A server that delivers only what is on disk (changecast,
// whose store does this and more) cannot deliver sooner; a fan-out that
// keeps nothing on disk (the bare net/http floor, Centrifugo) does not
// wait at all.
//
// By default writes arrive at a steady rate, as the load generators send
// them, and it prints how long they waited:
//
//	go run ./tools/syncfloor -dir /var/lib/changecast -rate 300 -d 10s
//
// -syncs 2 -pages 10 is what one commit of the embedded store does for a
// message (bbolt writes the pages, syncs, writes its meta page and syncs
// again; strace counts about ten page writes). -json prints one line.
//
// With -serve ADDR it is instead the thinnest durable fan-out: the bare
// net/http fan-out of the development workspace's peers (the same routes,
// so the peers' reader loads it the same way), except that a message is
// group committed to the file before it is fanned out and answered 201.
// Loaded beside changecast and the bare fan-out, it shows what durability
// alone costs on this machine, under the same load.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"changecast/internal/latency"
)

const (
	pageSize = 4096
	// fileSize is the file written over: written with zeros and synced
	// first, so the measured writes allocate nothing (as the embedded
	// store keeps the space ahead of its pages written).
	fileSize = 16 << 20
)

// config is what one measurement does.
type config struct {
	Dir      string
	Rate     float64       // writes per second
	Duration time.Duration // how long writes arrive
	Syncs    int           // fdatasyncs per commit
	Pages    int           // pages written per commit (the last after the first sync when Syncs > 1)
}

// result is what it measured: the wait of each write from its arrival to
// its commit's last fdatasync returning.
type result struct {
	Rate    float64 `json:"rate"`
	Syncs   int     `json:"syncs"`
	Pages   int     `json:"pages"`
	Arrived int     `json:"arrived"`
	Writes  uint64  `json:"writes"`
	Commits int     `json:"commits"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	P999    float64 `json:"p999_ms"`
	Max     float64 `json:"max_ms"`
}

func checkCommit(syncs, pages int) error {
	switch {
	case syncs < 1 || syncs > 2:
		return errors.New("-syncs must be 1 or 2")
	case pages < 1 || pages > 256:
		return errors.New("-pages must be 1 to 256")
	}
	return nil
}

func (c config) check() error {
	switch {
	case c.Rate <= 0 || c.Rate > 100000:
		return errors.New("-rate must be above 0 and at most 100000")
	case c.Duration <= 0:
		return errors.New("-d must be above 0")
	}
	return checkCommit(c.Syncs, c.Pages)
}

// write is one write waiting for a commit: when it arrived, what it
// writes (if anything), and where to say that its commit is done (nil:
// nowhere).
type write struct {
	at   time.Time
	data []byte
	done chan error
}

// committer group-commits writes to a file of its own.
type committer struct {
	f            *os.File
	syncs, pages int

	mu      sync.Mutex
	waiting []write
	closing bool
	commits int
	hist    latency.Hist // each write's wait
	failed  error

	wake  chan struct{} // capacity 1
	ended chan struct{}
}

// startCommitter creates its file in dir, writes it with zeros and starts
// committing.
func startCommitter(dir string, syncs, pages int) (*committer, error) {
	if err := checkCommit(syncs, pages); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(dir, "syncfloor-*")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*committer, error) {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < fileSize; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros, off); err != nil {
			return fail(err)
		}
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	c := &committer{f: f, syncs: syncs, pages: pages, wake: make(chan struct{}, 1), ended: make(chan struct{})}
	go c.run()
	return c, nil
}

// submit queues w for the next commit.
func (c *committer) submit(w write) {
	c.mu.Lock()
	c.waiting = append(c.waiting, w)
	c.mu.Unlock()
	c.kick()
}

// kick wakes the committer if it waits.
func (c *committer) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *committer) run() {
	defer close(c.ended)
	var buf []byte
	var off int64
	for {
		c.mu.Lock()
		batch, last := c.waiting, c.closing
		c.waiting = nil
		c.mu.Unlock()
		if len(batch) == 0 {
			if last {
				return
			}
			<-c.wake
			continue
		}
		buf = buf[:0]
		for _, w := range batch {
			buf = append(buf, w.data...)
		}
		err := c.commit(buf, &off)
		now := time.Now()
		c.mu.Lock()
		if err != nil && c.failed == nil {
			c.failed = err
		}
		c.commits++
		for _, w := range batch {
			c.hist.Add(int64(now.Sub(w.at)))
		}
		c.mu.Unlock()
		for _, w := range batch {
			if w.done != nil {
				w.done <- err
			}
		}
	}
}

// commit writes data in whole pages, at least c.pages of them, after
// *off (wrapping within the file) and syncs c.syncs times: with two, the
// last page is written between the syncs, as bbolt writes its meta page.
func (c *committer) commit(data []byte, off *int64) error {
	n := max(c.pages, (len(data)+pageSize-1)/pageSize)
	pages := make([]byte, n*pageSize)
	copy(pages, data)
	write := func(from, to int) error {
		for i := from; i < to; i++ {
			if _, err := c.f.WriteAt(pages[i*pageSize:(i+1)*pageSize], *off); err != nil {
				return err
			}
			*off = (*off + pageSize) % fileSize
		}
		return nil
	}
	first := n
	if c.syncs == 2 && n > 1 {
		first--
	}
	if err := write(0, first); err != nil {
		return err
	}
	if err := fdatasync(c.f); err != nil {
		return err
	}
	if c.syncs == 2 {
		if err := write(first, n); err != nil {
			return err
		}
		return fdatasync(c.f)
	}
	return nil
}

// stop commits what is queued, stops, and removes the file. It returns
// the first failed commit's error.
func (c *committer) stop() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.kick()
	<-c.ended
	c.f.Close()
	os.Remove(c.f.Name())
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// measure runs c on a new file in c.Dir, removed afterwards.
func measure(c config) (result, error) {
	if err := c.check(); err != nil {
		return result{}, err
	}
	com, err := startCommitter(c.Dir, c.Syncs, c.Pages)
	if err != nil {
		return result{}, err
	}
	arrived := 0
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.Rate))
	defer tick.Stop()
	for end := time.Now().Add(c.Duration); time.Now().Before(end); arrived++ {
		<-tick.C
		// The tick's own time is when it was due; on a busy machine
		// this goroutine wakes later, and the write arrives then.
		com.submit(write{at: time.Now()})
	}
	if err := com.stop(); err != nil {
		return result{}, err
	}
	h := &com.hist
	return result{
		Rate: c.Rate, Syncs: c.Syncs, Pages: c.Pages, Arrived: arrived, Writes: h.Count(), Commits: com.commits,
		P50: h.Quantile(.5), P99: h.Quantile(.99), P999: h.Quantile(.999), Max: h.Max(),
	}, nil
}

// fdatasync is the sync bbolt does on Linux: the data, and the metadata
// needed to read it, not the file's times.
func fdatasync(f *os.File) error {
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	return nil
}

// fanOut is the bare fan-out of the peers' floor, its message committed
// first.
type fanOut struct {
	com  *committer
	mu   sync.RWMutex
	subs map[string]map[chan []byte]struct{}
}

func newFanOut(com *committer) http.Handler {
	h := &fanOut{com: com, subs: map[string]map[chan []byte]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/rooms/{room}/events", h.events)
	mux.HandleFunc("POST /api/rooms/{room}/messages", h.post)
	mux.HandleFunc("GET /healthz", func(http.ResponseWriter, *http.Request) {})
	return mux
}

func (h *fanOut) events(w http.ResponseWriter, r *http.Request) {
	room := r.PathValue("room")
	ch := make(chan []byte, 64)
	h.mu.Lock()
	if h.subs[room] == nil {
		h.subs[room] = map[chan []byte]struct{}{}
	}
	h.subs[room][ch] = struct{}{}
	h.mu.Unlock()
	defer func() { h.mu.Lock(); delete(h.subs[room], ch); h.mu.Unlock() }()
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	for {
		select {
		case b := <-ch:
			w.Write(b)
			rc.Flush()
		case <-r.Context().Done():
			return
		}
	}
}

func (h *fanOut) post(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	done := make(chan error, 1)
	h.com.submit(write{at: time.Now(), data: body, done: done})
	if err := <-done; err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	msg := fmt.Appendf(nil, "event: message\ndata: %s\n\n", body)
	h.mu.RLock()
	for ch := range h.subs[r.PathValue("room")] {
		select {
		case ch <- msg:
		default:
		}
	}
	h.mu.RUnlock()
	w.WriteHeader(http.StatusCreated)
}

func main() {
	var c config
	flag.StringVar(&c.Dir, "dir", os.TempDir(), "directory on the disk to measure (a file of 16 MiB is written there and removed)")
	flag.Float64Var(&c.Rate, "rate", 300, "writes per second")
	flag.DurationVar(&c.Duration, "d", 10*time.Second, "how long writes arrive")
	flag.IntVar(&c.Syncs, "syncs", 1, "fdatasyncs per commit: 1, or 2 as bbolt does")
	flag.IntVar(&c.Pages, "pages", 1, "4 KiB pages written per commit")
	asJSON := flag.Bool("json", false, "print one JSON line")
	serve := flag.String("serve", "", "serve the durable fan-out on this address (such as 127.0.0.1:18120) instead of measuring")
	flag.Parse()
	if *serve != "" {
		com, err := startCommitter(c.Dir, c.Syncs, c.Pages)
		if err != nil {
			fmt.Fprintln(os.Stderr, "syncfloor:", err)
			os.Exit(1)
		}
		defer com.stop()
		fmt.Fprintln(os.Stderr, "syncfloor:", http.ListenAndServe(*serve, newFanOut(com)))
		return
	}
	r, err := measure(c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "syncfloor:", err)
		os.Exit(1)
	}
	if *asJSON {
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
		return
	}
	dir, _ := filepath.Abs(c.Dir)
	fmt.Printf("%s: %.0f writes/s, %d page(s) and %d fdatasync(s) per commit: %d writes in %d commits, waited p50 %.2f p99 %.2f p99.9 %.2f max %.2f ms\n",
		dir, r.Rate, r.Pages, r.Syncs, r.Writes, r.Commits, r.P50, r.P99, r.P999, r.Max)
}
