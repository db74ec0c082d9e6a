// Package latency measures where the time of one change goes, from the
// write that makes it to the sockets of the streams it reaches, for
// finding the source of a latency tail; and holds the log-bucketed
// histogram (Hist) that this and the load generator keep latencies in.
//
// Stage timing is off until Enable: each hook is then one atomic load.
// When on, the store stamps a write when it is submitted and when its
// group is committed (Committed), the multiplexer picks the stamps up by
// position when the feed hands it the change (Take), and each stream
// records the time from the fan-out to its worker and to the end of its
// writev (Delivered). Summaries gives the histograms per stage; a
// FlightRecorder keeps a runtime trace of the slowest delivery.
package latency

import (
	"sync"
	"sync/atomic"
	"time"
)

// Stage is one part of a change's way to a client.
type Stage int

// The stages, in the order a change passes them. Each is timed from the
// end of the one before; StageServer is the whole server side.
const (
	// StageCommit: the write submitted to the store (after the request
	// is read and checked) to its group committed, fdatasync included.
	StageCommit Stage = iota
	// StageFeed: committed to the multiplexer applying the change (the
	// feed's wake-up, its log read and the payload's encoding).
	StageFeed
	// StageFanOut: applied to the change pushed to every subscriber of
	// its topic (the frame's encoding, the multiplexer's lock, the
	// pushes and the wakes of their streams).
	StageFanOut
	// StagePool: the fan-out begun to the stream's step starting on a
	// worker (the pool's queue and the scheduler), per delivery.
	StagePool
	// StageWrite: the step started to its writev returned, per delivery.
	StageWrite
	// StageServer: submitted to writev returned, per delivery.
	StageServer
	numStages
)

var stageNames = [numStages]string{"commit", "feed", "fanout", "pool", "write", "server"}

func (s Stage) String() string { return stageNames[s] }

// Stamps are the times one change passed the stages, from Now: FanOut
// when its fan-out began, FannedOut when it ended.
type Stamps struct {
	Submitted, Committed, Applied, FanOut, FannedOut int64
}

// base is the origin of Now: times are monotonic nanoseconds since.
var base = time.Now()

// Now returns monotonic nanoseconds since the process started timing.
func Now() int64 { return int64(time.Since(base)) }

var on atomic.Bool

// Enable switches stage timing on for the rest of the process.
func Enable() { on.Store(true) }

// On reports whether stages are timed. It is safe for concurrent use, as
// is every function of the package.
func On() bool { return on.Load() }

// maxPending bounds the changes stamped and not yet taken: a store with no
// multiplexer reading its feed must not grow without end.
const maxPending = 1 << 16

var (
	mu      sync.Mutex
	pending = map[string]Stamps{}
	hists   [numStages]Hist
	slow    func(d time.Duration) // told of each delivery's server time
)

// Committed records that the change at position pos, written by a write
// submitted at submitted, was committed at committed. It does nothing
// unless On.
func Committed(pos string, submitted, committed int64) {
	if !On() {
		return
	}
	mu.Lock()
	if len(pending) >= maxPending {
		clear(pending)
	}
	pending[pos] = Stamps{Submitted: submitted, Committed: committed}
	mu.Unlock()
}

// Take returns and forgets the stamps Committed recorded for pos, with
// Applied set to applied; nil if there are none.
func Take(pos string, applied int64) *Stamps {
	mu.Lock()
	st, ok := pending[pos]
	delete(pending, pos)
	mu.Unlock()
	if !ok {
		return nil
	}
	st.Applied = applied
	return &st
}

// FannedOut records the stages of st up to the end of its fan-out: all
// of its times but FanOut must be set.
func FannedOut(st *Stamps) {
	mu.Lock()
	hists[StageCommit].Add(st.Committed - st.Submitted)
	hists[StageFeed].Add(st.Applied - st.Committed)
	hists[StageFanOut].Add(st.FannedOut - st.Applied)
	mu.Unlock()
}

// Delivered records one stream's step that started at start and whose
// writev of the changes sts returned at done.
func Delivered(sts []*Stamps, start, done int64) {
	var slowest int64
	mu.Lock()
	for _, st := range sts {
		hists[StagePool].Add(start - st.FanOut)
		hists[StageWrite].Add(done - start)
		hists[StageServer].Add(done - st.Submitted)
		slowest = max(slowest, done-st.Submitted)
	}
	tell := slow
	mu.Unlock()
	if tell != nil {
		tell(time.Duration(slowest))
	}
}

// Summary is one stage's histogram, in milliseconds.
type Summary struct {
	Stage string  `json:"stage"`
	Count uint64  `json:"count"`
	P50   float64 `json:"p50ms"`
	P90   float64 `json:"p90ms"`
	P99   float64 `json:"p99ms"`
	P999  float64 `json:"p999ms"`
	Max   float64 `json:"maxMs"`
}

// Summaries returns every stage's histogram, in stage order, and starts
// them over if reset.
func Summaries(reset bool) []Summary {
	mu.Lock()
	defer mu.Unlock()
	out := make([]Summary, numStages)
	for i := range hists {
		h := &hists[i]
		out[i] = Summary{Stage: Stage(i).String(), Count: h.Count(), P50: h.Quantile(.5), P90: h.Quantile(.9), P99: h.Quantile(.99), P999: h.Quantile(.999), Max: h.Max()}
		if reset {
			*h = Hist{}
		}
	}
	return out
}
