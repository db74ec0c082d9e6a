package main

import "math/bits"

// benchHist is a log-bucketed histogram of durations in microseconds, in
// the manner of an HDR histogram: values below benchHistExact are counted
// exactly; above, each power of two is split into benchHistSub buckets,
// so a bucket is at most 1/32 (3.2%) of its values wide. Values past the
// last bucket (about 19 hours) are counted in it. A benchHist is owned by
// one goroutine (one per connection), and merged once that goroutine is
// done: no lock per recorded value. The zero value is ready to use.
type benchHist struct {
	counts [benchHistBuckets]uint32
	n      uint64
	maxV   int64
	minV   int64
}

const (
	// benchHistSub is the number of buckets per power of two: 32 keeps
	// the relative error of a percentile under 3.2%.
	benchHistSub = 32
	// benchHistExact is the value below which buckets are one µs wide.
	benchHistExact = 2 * benchHistSub
	// benchHistBuckets covers values up to 2^36 µs (19 hours).
	benchHistBuckets = benchHistExact + (36-6)*benchHistSub
)

// benchBucket returns the bucket of a value in µs.
func benchBucket(us int64) int {
	if us < benchHistExact {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 6 // us>>e is in [32, 64)
	i := benchHistExact + (e-1)*benchHistSub + int(us>>e) - benchHistSub
	return min(i, benchHistBuckets-1)
}

// benchBucketLow returns the smallest value of bucket i, in µs.
func benchBucketLow(i int) int64 {
	if i < benchHistExact {
		return int64(i)
	}
	e := (i-benchHistExact)/benchHistSub + 1
	return int64((i-benchHistExact)%benchHistSub+benchHistSub) << e
}

// benchBucketHigh returns the largest value of bucket i, in µs.
func benchBucketHigh(i int) int64 {
	if i < benchHistExact {
		return int64(i)
	}
	e := (i-benchHistExact)/benchHistSub + 1
	return benchBucketLow(i) + 1<<e - 1
}

// add records a duration given in nanoseconds (negative counts as 0).
func (h *benchHist) add(nanos int64) {
	us := max(nanos/1000, 0)
	h.counts[benchBucket(us)]++
	if h.n == 0 || us < h.minV {
		h.minV = us
	}
	h.n++
	h.maxV = max(h.maxV, us)
}

// merge adds o's counts to h.
func (h *benchHist) merge(o *benchHist) {
	if o == nil || o.n == 0 {
		return
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.minV < h.minV {
		h.minV = o.minV
	}
	h.n += o.n
	h.maxV = max(h.maxV, o.maxV)
}

// count returns how many values were recorded.
func (h *benchHist) count() uint64 { return h.n }

// quantile returns the q-quantile (0 < q <= 1) in milliseconds: the
// largest value of the bucket holding the value of rank ceil(q*n), so it
// errs high by at most one bucket width, and never past the maximum. It
// returns 0 for an empty histogram.
func (h *benchHist) quantile(q float64) float64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q * float64(h.n))
	if float64(rank) < q*float64(h.n) {
		rank++
	}
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			return float64(min(max(benchBucketHigh(i), h.minV), h.maxV)) / 1000
		}
	}
	return float64(h.maxV) / 1000
}

// max returns the largest value recorded, in milliseconds.
func (h *benchHist) max() float64 { return float64(h.maxV) / 1000 }
