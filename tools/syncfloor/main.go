// Command syncfloor measures the durability floor of this machine's disk:
// how long a write waits before it is on disk when nothing else is done
// with it. Writes arrive at a steady rate, as the load generators send
// them; one committer takes every write that arrived meanwhile (a group
// commit), writes pages over blocks the file already has and fdatasyncs.
// A server that delivers only what is on disk (changecast, whose store
// does this and more) cannot deliver sooner than this; a fan-out that
// keeps nothing on disk (the bare net/http floor, Centrifugo) does not
// wait for it at all.
//
//	go run ./tools/syncfloor -dir /var/lib/changecast -rate 300 -d 10s
//
// -syncs 2 -pages 10 is what one commit of the embedded store does for a
// message (bbolt writes the pages, syncs, writes its meta page and syncs
// again; strace counts about ten page writes). -json prints one line.
//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
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

func (c config) check() error {
	switch {
	case c.Rate <= 0 || c.Rate > 100000:
		return errors.New("-rate must be above 0 and at most 100000")
	case c.Duration <= 0:
		return errors.New("-d must be above 0")
	case c.Syncs < 1 || c.Syncs > 2:
		return errors.New("-syncs must be 1 or 2")
	case c.Pages < 1 || c.Pages > 256:
		return errors.New("-pages must be 1 to 256")
	}
	return nil
}

// measure runs c on a new file in c.Dir, removed afterwards.
func measure(c config) (result, error) {
	if err := c.check(); err != nil {
		return result{}, err
	}
	f, err := os.CreateTemp(c.Dir, "syncfloor-*")
	if err != nil {
		return result{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	zeros := make([]byte, 1<<20)
	for off := int64(0); off < fileSize; off += int64(len(zeros)) {
		if _, err := f.WriteAt(zeros, off); err != nil {
			return result{}, err
		}
	}
	if err := f.Sync(); err != nil {
		return result{}, err
	}

	var (
		mu      sync.Mutex
		arrived []time.Time // waiting for the next commit
		count   int         // arrived in all
		stopped bool
		wake    = make(chan struct{}, 1)
		hist    latency.Hist
		commits int
		failed  error
		done    = make(chan struct{})
	)
	go func() {
		defer close(done)
		page := make([]byte, pageSize)
		var off int64
		for {
			mu.Lock()
			batch, last := arrived, stopped
			arrived = nil
			mu.Unlock()
			if len(batch) == 0 {
				if last {
					return
				}
				<-wake
				continue
			}
			err := commit(f, page, &off, c)
			now := time.Now()
			mu.Lock()
			if err != nil && failed == nil {
				failed = err
			}
			commits++
			for _, t := range batch {
				hist.Add(int64(now.Sub(t)))
			}
			mu.Unlock()
		}
	}()
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.Rate))
	defer tick.Stop()
	for end := time.Now().Add(c.Duration); time.Now().Before(end); {
		<-tick.C
		t := time.Now()
		mu.Lock()
		arrived = append(arrived, t)
		count++
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	mu.Lock()
	stopped = true
	mu.Unlock()
	select {
	case wake <- struct{}{}:
	default:
	}
	<-done
	if failed != nil {
		return result{}, failed
	}
	return result{
		Rate: c.Rate, Syncs: c.Syncs, Pages: c.Pages, Arrived: count, Writes: hist.Count(), Commits: commits,
		P50: hist.Quantile(.5), P99: hist.Quantile(.99), P999: hist.Quantile(.999), Max: hist.Max(),
	}, nil
}

// commit writes c.Pages pages after *off (wrapping within the file) and
// syncs c.Syncs times: with two, the last page is written between the
// syncs, as bbolt writes its meta page.
func commit(f *os.File, page []byte, off *int64, c config) error {
	write := func(n int) error {
		for range n {
			if _, err := f.WriteAt(page, *off); err != nil {
				return err
			}
			*off = (*off + pageSize) % fileSize
		}
		return nil
	}
	first := c.Pages
	if c.Syncs == 2 && c.Pages > 1 {
		first--
	}
	if err := write(first); err != nil {
		return err
	}
	if err := fdatasync(f); err != nil {
		return err
	}
	if c.Syncs == 2 {
		if err := write(c.Pages - first); err != nil {
			return err
		}
		return fdatasync(f)
	}
	return nil
}

// fdatasync is the sync bbolt does on Linux: the data, and the metadata
// needed to read it, not the file's times.
func fdatasync(f *os.File) error {
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	return nil
}

func main() {
	var c config
	flag.StringVar(&c.Dir, "dir", os.TempDir(), "directory on the disk to measure (a file of 16 MiB is written there and removed)")
	flag.Float64Var(&c.Rate, "rate", 300, "writes per second")
	flag.DurationVar(&c.Duration, "d", 10*time.Second, "how long writes arrive")
	flag.IntVar(&c.Syncs, "syncs", 1, "fdatasyncs per commit: 1, or 2 as bbolt does")
	flag.IntVar(&c.Pages, "pages", 1, "4 KiB pages written per commit")
	asJSON := flag.Bool("json", false, "print one JSON line")
	flag.Parse()
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
