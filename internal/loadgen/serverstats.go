package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// serverSample is the server's resource use at one moment, from /proc
// (given -pid) and /metrics (when the server serves it).
type serverSample struct {
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
func (b *bencher) serverStats(ctx context.Context) serverSample {
	var st serverSample
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
		user, sys, err1 := procTimes(b.cfg.Pid)
		rss, err2 := procRSS(b.cfg.Pid)
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
	m := parsePromText(resp.Body)
	if len(m) == 0 {
		return nil
	}
	return m
}
