package latency

import "testing"

func TestHistogram(t *testing.T) {
	var h Hist
	if h.Quantile(.5) != 0 || h.Max() != 0 {
		t.Fatalf("empty histogram: got p50 %v, max %v; want 0", h.Quantile(.5), h.Max())
	}
	// 1 ms .. 10 s in 1 ms steps, in two halves merged.
	var a, b Hist
	for v := int64(1); v <= 10000; v++ {
		if v%2 == 0 {
			a.Add(v * 1e6)
		} else {
			b.Add(v * 1e6)
		}
	}
	h.Merge(&a)
	h.Merge(&b)
	if h.Count() != 10000 || h.Max() != 10000 {
		t.Fatalf("got %d values, max %v ms; want 10000, 10000", h.Count(), h.Max())
	}
	for _, tc := range []struct{ q, want float64 }{{.5, 5000}, {.9, 9000}, {.99, 9900}, {.999, 9990}, {1, 10000}} {
		if got := h.Quantile(tc.q); got < tc.want || got > tc.want*1.032 {
			t.Errorf("quantile(%v) = %v ms, want %v to 3.2%% above", tc.q, got, tc.want)
		}
	}
	// Small values are exact.
	var small Hist
	for _, us := range []int64{3, 3, 3, 7, 50} {
		small.Add(us * 1000)
	}
	for _, tc := range []struct{ q, want float64 }{{.2, .003}, {.6, .003}, {.8, .007}, {.99, .05}} {
		if got := small.Quantile(tc.q); got != tc.want {
			t.Errorf("small quantile(%v) = %v ms, want %v", tc.q, got, tc.want)
		}
	}
	// A quantile never exceeds the maximum, nor falls below the minimum.
	var one Hist
	one.Add(1234567 * 1000)
	if got := one.Quantile(.5); got != 1234.567 {
		t.Errorf("one value: quantile(.5) = %v, want 1234.567", got)
	}
	// Every value lies in its bucket, and buckets are at most 1/32 wide.
	for us := int64(0); us < 1<<36; us = us*17/16 + 1 {
		i := bucket(us)
		lo, hi := bucketLow(i), bucketHigh(i)
		if lo > us || us > hi || float64(hi-lo) > float64(lo)/32 {
			t.Fatalf("value %d µs in bucket %d [%d, %d]", us, i, lo, hi)
		}
		if i > 0 && bucketHigh(i-1)+1 != lo {
			t.Fatalf("bucket %d starts at %d, previous ends at %d", i, lo, bucketHigh(i-1))
		}
	}
	if got := bucket(1 << 50); got != histBuckets-1 {
		t.Errorf("huge value in bucket %d, want the last, %d", got, histBuckets-1)
	}
}
