package latency

import "math/bits"

// Hist is a log-bucketed histogram of durations in microseconds, in
// the manner of an HDR histogram: values below histExact are counted
// exactly; above, each power of two is split into histSub buckets,
// so a bucket is at most 1/32 (3.2%) of its values wide. Values past the
// last bucket (about 19 hours) are counted in it. A Hist is not safe
// for concurrent use: give each goroutine its own (the load generator
// keeps one per connection) and Merge them once it is done, so no value
// costs a lock. The zero value is ready to use.
type Hist struct {
	counts [histBuckets]uint32
	n      uint64
	maxV   int64
	minV   int64
}

const (
	// histSub is the number of buckets per power of two: 32 keeps
	// the relative error of a percentile under 3.2%.
	histSub = 32
	// histExact is the value below which buckets are one µs wide.
	histExact = 2 * histSub
	// histBuckets covers values up to 2^36 µs (19 hours).
	histBuckets = histExact + (36-6)*histSub
)

// bucket returns the bucket of a value in µs.
func bucket(us int64) int {
	if us < histExact {
		return int(max(us, 0))
	}
	e := bits.Len64(uint64(us)) - 6 // us>>e is in [32, 64)
	i := histExact + (e-1)*histSub + int(us>>e) - histSub
	return min(i, histBuckets-1)
}

// bucketLow returns the smallest value of bucket i, in µs.
func bucketLow(i int) int64 {
	if i < histExact {
		return int64(i)
	}
	e := (i-histExact)/histSub + 1
	return int64((i-histExact)%histSub+histSub) << e
}

// bucketHigh returns the largest value of bucket i, in µs.
func bucketHigh(i int) int64 {
	if i < histExact {
		return int64(i)
	}
	e := (i-histExact)/histSub + 1
	return bucketLow(i) + 1<<e - 1
}

// add records a duration given in nanoseconds (negative counts as 0).
func (h *Hist) Add(nanos int64) {
	us := max(nanos/1000, 0)
	h.counts[bucket(us)]++
	if h.n == 0 || us < h.minV {
		h.minV = us
	}
	h.n++
	h.maxV = max(h.maxV, us)
}

// merge adds o's counts to h.
func (h *Hist) Merge(o *Hist) {
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
func (h *Hist) Count() uint64 { return h.n }

// quantile returns the q-quantile (0 < q <= 1) in milliseconds: the
// largest value of the bucket holding the value of rank ceil(q*n), so it
// errs high by at most one bucket width, and never past the maximum. It
// returns 0 for an empty histogram.
func (h *Hist) Quantile(q float64) float64 {
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
			return float64(min(max(bucketHigh(i), h.minV), h.maxV)) / 1000
		}
	}
	return float64(h.maxV) / 1000
}

// max returns the largest value recorded, in milliseconds.
func (h *Hist) Max() float64 { return float64(h.maxV) / 1000 }
