package loadgen

import (
	"os"
	"strings"
	"testing"
)

// TestPromText reads unlabelled samples and skips the rest.
func TestPromText(t *testing.T) {
	text := "# HELP go_goroutines Number of goroutines.\n# TYPE go_goroutines gauge\ngo_goroutines 17\n" +
		"process_cpu_seconds_total 1.25\nchangecast_streams_open{kind=\"rooms\"} 3\nchangecast_streams_open 5\n" +
		"go_memstats_heap_inuse_bytes 2.5e+06\nbroken\nnot_a_number x\n\n"
	m := parsePromText(strings.NewReader(text))
	want := map[string]float64{"go_goroutines": 17, "process_cpu_seconds_total": 1.25, "changecast_streams_open": 5, "go_memstats_heap_inuse_bytes": 2.5e6}
	if len(m) != len(want) {
		t.Fatalf("got %v, want %v", m, want)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
}

// TestProc reads this process's CPU time and resident memory.
func TestProc(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	for i := 0; selfCPU() == 0 && i < 1e9; i++ { // burn a clock tick
	}
	user, sys, err := procTimes(os.Getpid())
	if err != nil || user+sys <= 0 {
		t.Errorf("procTimes: %v, %v, %v; want some CPU time", user, sys, err)
	}
	if rss, err := procRSS(os.Getpid()); err != nil || rss <= 0 {
		t.Errorf("procRSS: %v, %v; want some KiB", rss, err)
	}
	if _, _, err := procTimes(-1); err == nil {
		t.Error("procTimes(-1): no error")
	}
}
