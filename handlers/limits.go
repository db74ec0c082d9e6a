package handlers

import (
	"errors"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"
)

// Default bounds (Limits fields left zero).
const (
	// DefaultStreamsPerSubject is how many streams one subject may hold
	// open: a browser's six connections per origin in a couple of tabs
	// plus a CLI tail, with room to spare.
	DefaultStreamsPerSubject = 16
	// DefaultTopicsPerRequest is how many topics one multi-topic stream
	// may name: a dashboard of a few rooms and a screenful of orders.
	DefaultTopicsPerRequest = 32
	// DefaultWritesPerSecond is the sustained writes per second of one
	// subject: far above a person typing or a kitchen moving orders.
	DefaultWritesPerSecond = 20
	// DefaultWriteBurst is how many writes one subject may make at once
	// before the sustained rate applies.
	DefaultWriteBurst = 40
)

// Limits bound what one subject (a token's sub) may use, so that no
// client exhausts the service. A zero field takes its default; a
// negative StreamsPerSubject or WritesPerSecond turns that bound off. In
// dev mode the per-subject bounds (streams, writes) do not apply, since
// everyone is the same subject.
type Limits struct {
	// StreamsPerSubject is how many streams one subject may have open at
	// once; one more is answered 429 with Retry-After.
	StreamsPerSubject int
	// TopicsPerRequest is how many distinct topics one multi-topic stream
	// may name; more is a 400 (retrying the same request cannot succeed).
	TopicsPerRequest int
	// WritesPerSecond is how many writes (POST and PATCH) one subject may
	// make per second on average; past it (and the burst), 429 with
	// Retry-After.
	WritesPerSecond float64
	// WriteBurst is how many writes one subject may make in a burst.
	WriteBurst int
}

// withDefaults fills zero fields with the defaults.
func (l Limits) withDefaults() (Limits, error) {
	if l.StreamsPerSubject == 0 {
		l.StreamsPerSubject = DefaultStreamsPerSubject
	}
	if l.TopicsPerRequest == 0 {
		l.TopicsPerRequest = DefaultTopicsPerRequest
	}
	if l.TopicsPerRequest < 0 {
		return l, errors.New("handlers: Limits.TopicsPerRequest must be positive")
	}
	if l.WritesPerSecond == 0 {
		l.WritesPerSecond = DefaultWritesPerSecond
	}
	if math.IsNaN(l.WritesPerSecond) || math.IsInf(l.WritesPerSecond, 0) {
		return l, errors.New("handlers: Limits.WritesPerSecond must be a finite number")
	}
	if l.WriteBurst == 0 {
		l.WriteBurst = DefaultWriteBurst
	}
	if l.WriteBurst < 0 {
		return l, errors.New("handlers: Limits.WriteBurst must be positive")
	}
	return l, nil
}

// streamRetryAfter is the Retry-After of a refused stream: a guess at how
// soon one of the subject's streams ends; a reconnecting client should
// not hammer.
const streamRetryAfter = 5 * time.Second

// openStream counts a stream of p against its bound and returns the
// function that uncounts it, or a 429.
func (s *server) openStream(c echo.Context, p Principal) (release func(), err error) {
	if p.Dev || s.open == nil {
		return func() {}, nil
	}
	if !s.open.acquire(p.Subject) {
		return nil, tooMany(c, streamRetryAfter, "too many open streams (at most %d per user)", s.open.max)
	}
	return func() { s.open.release(p.Subject) }, nil
}

// allowWrite counts a write of p against its rate, or answers 429.
func (s *server) allowWrite(c echo.Context, p Principal) error {
	if p.Dev || s.writes == nil {
		return nil
	}
	if wait := s.writes.reserve(p.Subject, s.now()); wait > 0 {
		return tooMany(c, wait, "too many writes (at most %g per second per user)", float64(s.writes.limit))
	}
	return nil
}

// tooMany returns a 429 with Retry-After set to wait, rounded up to
// whole seconds.
func tooMany(c echo.Context, wait time.Duration, format string, args ...any) error {
	secs := int64(math.Ceil(wait.Seconds()))
	if secs < 1 {
		secs = 1
	}
	c.Response().Header().Set(echo.HeaderRetryAfter, strconv.FormatInt(secs, 10))
	return errorf(http.StatusTooManyRequests, format, args...)
}

// subjectCounter counts what each subject holds at once (open streams,
// questions to the room backend) against a bound. It is safe for
// concurrent use.
type subjectCounter struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

// newSubjectCounter returns a counter allowing max per subject, or nil
// (no bound) for a negative max.
func newSubjectCounter(max int) *subjectCounter {
	if max < 0 {
		return nil
	}
	return &subjectCounter{max: max, n: make(map[string]int)}
}

// acquire counts one more for sub and reports whether it is within the
// bound; if not, nothing is counted.
func (sc *subjectCounter) acquire(sub string) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.n[sub] >= sc.max {
		return false
	}
	sc.n[sub]++
	return true
}

// release uncounts one of sub's.
func (sc *subjectCounter) release(sub string) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.n[sub] <= 1 {
		delete(sc.n, sub) // the map holds only subjects that hold something
		return
	}
	sc.n[sub]--
}

// sweepEvery is how often, at most, the write limiter drops the limiters
// of subjects that have been idle long enough to be back at a full
// burst: such a limiter behaves like a new one, so dropping it changes
// nothing but the memory held.
const sweepEvery = time.Minute

// writeLimiter keeps a token bucket per subject. It is safe for
// concurrent use.
type writeLimiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

// newWriteLimiter returns a limiter of perSecond writes with burst per
// subject, or nil (no bound) for a negative rate.
func newWriteLimiter(perSecond float64, burst int) *writeLimiter {
	if perSecond < 0 {
		return nil
	}
	return &writeLimiter{limit: rate.Limit(perSecond), burst: burst, buckets: make(map[string]*rate.Limiter)}
}

// reserve takes one write of sub at now and returns 0, or, when sub is
// over its rate, how long until it may write again (and takes nothing).
func (wl *writeLimiter) reserve(sub string, now time.Time) time.Duration {
	wl.mu.Lock()
	defer wl.mu.Unlock()
	if now.Sub(wl.lastSweep) >= sweepEvery {
		for k, b := range wl.buckets {
			if b.TokensAt(now) >= float64(wl.burst) {
				delete(wl.buckets, k)
			}
		}
		wl.lastSweep = now
	}
	b, ok := wl.buckets[sub]
	if !ok {
		b = rate.NewLimiter(wl.limit, wl.burst)
		wl.buckets[sub] = b
	}
	r := b.ReserveN(now, 1)
	if !r.OK() {
		// Only with a zero rate and burst: writes are off.
		return time.Hour
	}
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now)
		return wait
	}
	return 0
}
