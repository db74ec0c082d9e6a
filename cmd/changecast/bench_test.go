package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
)

func runBenchJSON(t *testing.T, url string, args ...string) benchResult {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"-url", url, "-json", "-pid", strconv.Itoa(os.Getpid())}, args...)
	if err := runBench(t.Context(), args, func(string) string { return "" }, &out, &errOut); err != nil {
		t.Fatalf("bench %q: %v\n%s", args, err, errOut.String())
	}
	var r benchResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("bench -json printed %q: %v", out.String(), err)
	}
	return r
}

func TestBenchFanout(t *testing.T) {
	s := newE2EServer(t, nil)
	r := runBenchJSON(t, s.URL, "-conns", "20", "-rooms", "2", "-rate", "50", "-duration", "2s")
	if r.Writes < 50 || r.Expected != r.Writes*10 || r.Delivered != r.Expected || r.Lost != 0 {
		t.Fatalf("fanout: %d writes, %d of %d deliveries, %d lost; want every write delivered to the 10 watchers of its room", r.Writes, r.Delivered, r.Expected, r.Lost)
	}
	if !(0 < r.P50ms && r.P50ms <= r.P90ms && r.P90ms <= r.P99ms && r.P99ms <= r.MaxMs) {
		t.Fatalf("percentiles out of order: p50 %v p90 %v p99 %v max %v", r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
	}
	if r.RSSAfterKiB <= 0 {
		t.Errorf("no RSS read from /proc for -pid")
	}
}

func TestBenchStorm(t *testing.T) {
	s := newE2EServer(t, nil)
	r := runBenchJSON(t, s.URL, "-mode", "storm", "-conns", "10", "-rooms", "3", "-behind", "50")
	if r.Writes != 150 || r.Expected != 10*50 || r.Delivered != r.Expected || r.Lost+r.Duplicates+r.OutOfOrder != 0 || r.CaughtUpSeconds <= 0 {
		t.Fatalf("storm: %+v; want 150 writes, 500 deliveries, nothing lost, doubled or out of order", r)
	}
}

func TestBenchIdle(t *testing.T) {
	s := newE2EServer(t, nil)
	r := runBenchJSON(t, s.URL, "-mode", "idle", "-conns", "30", "-rooms", "3", "-duration", "100ms")
	if r.Conns != 30 || r.Errors != 0 {
		t.Fatalf("idle: %+v", r)
	}
}

func TestBenchRefusesOtherHosts(t *testing.T) {
	for _, u := range []string{"http://10.0.0.1:8080", "http://192.168.1.1", "ftp://127.0.0.1"} {
		var out bytes.Buffer
		err := runBench(t.Context(), []string{"-url", u}, func(string) string { return "" }, &out, &out)
		if err == nil || !(strings.Contains(err.Error(), "loopback") || strings.Contains(err.Error(), "not an http")) {
			t.Errorf("bench -url %s: %v; want a refusal", u, err)
		}
	}
}

func TestBenchHistogram(t *testing.T) {
	var h benchHist
	for v := int64(1); v <= 10000; v++ {
		h.add(v * 1000) // 1 µs .. 10 ms
	}
	for _, tc := range []struct{ q, want float64 }{{.5, 5}, {.9, 9}, {.99, 9.9}} {
		got := h.quantile(tc.q)
		if got > tc.want || got < tc.want*0.93 {
			t.Errorf("quantile(%v) = %v ms, want within 7%% below %v", tc.q, got, tc.want)
		}
	}
	if h.max() != 10 {
		t.Errorf("max = %v, want 10", h.max())
	}
	for us := int64(0); us < 1<<26; us = us*9/8 + 1 {
		if lo := benchLower(benchBucket(us)); lo > us || float64(us-lo) > 0.07*float64(us)+1 {
			t.Fatalf("value %d µs in bucket with lower bound %d", us, lo)
		}
	}
}
