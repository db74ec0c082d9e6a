package handlers

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable time for Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestWriteRateLimit(t *testing.T) {
	clk := &clock{now: time.Now()}
	e := newEnv(t, func(c *Config) {
		c.Now = clk.Now
		c.Limits = Limits{WritesPerSecond: 1, WriteBurst: 2}
	})
	alice := token(t, "alice", RoleCustomer, "lobby")
	post := req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"hi"}`, token: alice}
	mustStatus(t, e.do(t, post), http.StatusCreated)
	mustStatus(t, e.do(t, post), http.StatusCreated)

	before := e.head(t)
	for _, r := range []req{post, {method: "POST", path: "/api/orders", body: `{"items":[{"sku":"p","qty":1}]}`, token: alice}} {
		got := e.do(t, r)
		if got.status != http.StatusTooManyRequests || got.header.Get("Retry-After") != "1" || !strings.Contains(got.errText(), "too many writes") {
			t.Errorf("%s %s over the rate: got %d Retry-After %q %s, want 429 Retry-After 1", r.method, r.path, got.status, got.header.Get("Retry-After"), got.body)
		}
	}
	if e.head(t) != before {
		t.Error("a write over the rate moved the log")
	}
	// Reads are not writes; another subject has its own bucket.
	mustStatus(t, e.do(t, req{method: "GET", path: "/api/rooms/lobby/messages", token: alice}), http.StatusOK)
	mustStatus(t, e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"hi"}`, token: token(t, "bob", RoleCustomer, "lobby")}), http.StatusCreated)

	clk.Add(time.Second)
	mustStatus(t, e.do(t, post), http.StatusCreated)
	if got := e.do(t, post); got.status != http.StatusTooManyRequests {
		t.Errorf("got %d, want 429 again", got.status)
	}
}

func TestStreamLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Limits = Limits{StreamsPerSubject: 2} })
	alice := map[string]string{"Authorization": "Bearer " + token(t, "alice", RoleCustomer, "lobby")}
	first := e.openStream(t, "/api/rooms/lobby/events", alice)
	e.openStream(t, "/api/rooms/lobby/events", alice)

	s, r := e.tryStream(t, "/api/rooms/lobby/events", alice)
	if s != nil || r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" || !strings.Contains(r.errText(), "too many open streams") {
		t.Fatalf("third stream: got %d Retry-After %q %s, want 429 with Retry-After", r.status, r.header.Get("Retry-After"), r.body)
	}
	// Another subject is not affected.
	e.openStream(t, "/api/rooms/lobby/events", map[string]string{"Authorization": "Bearer " + token(t, "bob", RoleCustomer, "lobby")})

	// When one of alice's streams ends, she may open another.
	first.Close()
	deadline := time.Now().Add(waitTimeout)
	for {
		s, _ := e.tryStream(t, "/api/rooms/lobby/events", alice)
		if s != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the stream count was not released")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTopicLimit(t *testing.T) {
	e := newEnv(t, dev, func(c *Config) { c.Limits = Limits{TopicsPerRequest: 2} })
	r := e.do(t, req{method: "GET", path: "/api/events?topic=rooms/a&topic=rooms/b&topic=rooms/c"})
	if r.status != http.StatusBadRequest || !strings.Contains(r.errText(), "at most 2 topics") {
		t.Errorf("got %d %s, want 400 at most 2 topics", r.status, r.body)
	}
	// Repeats count once.
	e.openStream(t, "/api/events?topic=rooms/a&topic=rooms/b&topic=rooms/a", nil)
}

// TestDevModeHasNoSubjectLimits: in dev mode everyone is one subject, so
// the per-subject bounds are off.
func TestDevModeHasNoSubjectLimits(t *testing.T) {
	e := newEnv(t, dev, func(c *Config) { c.Limits = Limits{StreamsPerSubject: 1, WritesPerSecond: 1, WriteBurst: 1} })
	e.openStream(t, "/api/rooms/lobby/events", nil)
	e.openStream(t, "/api/rooms/lobby/events", nil)
	for range 3 {
		mustStatus(t, e.do(t, req{method: "POST", path: "/api/rooms/lobby/messages", body: `{"text":"hi"}`}), http.StatusCreated)
	}
}

func TestWriteLimiterForgetsIdleSubjects(t *testing.T) {
	now := time.Now()
	wl := newWriteLimiter(10, 5)
	for _, sub := range []string{"a", "b", "c"} {
		if wait := wl.reserve(sub, now); wait != 0 {
			t.Fatalf("first write of %s: got wait %s, want 0", sub, wait)
		}
	}
	now = now.Add(2 * sweepEvery)
	wl.reserve("d", now)
	if got := len(wl.buckets); got != 1 {
		t.Errorf("got %d buckets after the idle ones were swept, want 1", got)
	}
}

func TestLimitsConfig(t *testing.T) {
	got, err := Limits{}.withDefaults()
	want := Limits{StreamsPerSubject: DefaultStreamsPerSubject, TopicsPerRequest: DefaultTopicsPerRequest, WritesPerSecond: DefaultWritesPerSecond, WriteBurst: DefaultWriteBurst}
	if err != nil || got != want {
		t.Errorf("defaults: got %+v, %v; want %+v", got, err, want)
	}
	for _, bad := range []Limits{{TopicsPerRequest: -1}, {WriteBurst: -1}} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v: got no error, want one", bad)
		}
	}
	// Negative turns a bound off.
	if newSubjectCounter(-1) != nil || newWriteLimiter(-1, 1) != nil {
		t.Error("a negative bound should turn it off")
	}
}
