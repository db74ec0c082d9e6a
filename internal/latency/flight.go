package latency

import (
	"bytes"
	"runtime/trace"
	"sync"
	"time"
)

// flightWindow is how much execution the flight recorder keeps: several
// times the slowest delivery worth tracing, so the trace shows what led
// to it. flightBytes bounds the window (a busy 2-core server traces
// about 10 MB a second).
const (
	flightWindow = time.Second
	flightBytes  = 64 << 20
)

// flightAfter is how long after a slow delivery its trace is taken, so
// it shows the moments after as well.
const flightAfter = 20 * time.Millisecond

// FlightRecorder keeps a moving window of the runtime's execution trace
// and, when a delivery takes longer than any before it (and at least a
// threshold), keeps a copy of the window around it: `go tool trace`
// then shows what the workers, the feed and the committer were doing
// while the change waited. It needs stage timing (Enable). Its methods
// are safe for concurrent use.
type FlightRecorder struct {
	fr        *trace.FlightRecorder
	threshold time.Duration

	mu        sync.Mutex
	slowest   time.Duration // of the trace kept, or being taken
	taking    bool
	stopped   bool
	kept      []byte
	keptDelay time.Duration
	wg        sync.WaitGroup
}

// StartFlightRecorder starts the runtime's flight recorder and has every
// delivery slower than threshold that is the slowest so far snapshot it.
// Stop stops it.
func StartFlightRecorder(threshold time.Duration) (*FlightRecorder, error) {
	f := &FlightRecorder{fr: trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: flightWindow, MaxBytes: flightBytes}), threshold: threshold}
	if err := f.fr.Start(); err != nil {
		return nil, err
	}
	mu.Lock()
	slow = f.delivered
	mu.Unlock()
	return f, nil
}

// delivered is told of each delivery's server time.
func (f *FlightRecorder) delivered(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if d < f.threshold || d <= f.slowest || f.taking || f.stopped {
		return
	}
	f.slowest, f.taking = d, true
	f.wg.Go(func() {
		time.Sleep(flightAfter)
		var buf bytes.Buffer
		_, err := f.fr.WriteTo(&buf)
		f.mu.Lock()
		defer f.mu.Unlock()
		f.taking = false
		if err == nil {
			f.kept, f.keptDelay = buf.Bytes(), d
		}
	})
}

// Slowest returns the trace kept around the slowest delivery and how
// long that delivery took; nil if none was slower than the threshold.
func (f *FlightRecorder) Slowest() ([]byte, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kept, f.keptDelay
}

// Reset forgets the trace kept, so the next slow delivery is traced
// whatever its delay.
func (f *FlightRecorder) Reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kept, f.keptDelay = nil, 0
	if !f.taking {
		f.slowest = 0
	}
}

// Stop stops the flight recorder, once any snapshot being taken is kept.
func (f *FlightRecorder) Stop() {
	mu.Lock()
	slow = nil
	mu.Unlock()
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
	f.wg.Wait()
	f.fr.Stop()
}
