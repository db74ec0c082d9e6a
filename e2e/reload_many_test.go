package e2e

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"changecast/internal/sseclient"
)

// TestNginxReloadManyStreams measures how an nginx reload completes with
// CHANGECAST_RELOAD_STREAMS streams (2,000 for the figure in
// docs/deploy.md) open through nginx, configured as docs/deploy.md says,
// and STREAM_MAX_AGE=1m: the time from `nginx -s reload` until the old
// worker exits, and until every stream has resumed through the new one,
// while a message is posted every 500 ms; every follower must end with
// every message once, in order. It only runs when the variable is set:
// a measurement, not a check of every run.
func TestNginxReloadManyStreams(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("CHANGECAST_RELOAD_STREAMS"))
	if n <= 0 {
		t.Skip("a measurement: set CHANGECAST_RELOAD_STREAMS=2000 to run it")
	}
	k := proxyKinds[0]
	needProxy(t, k)
	up := newE2EServer(t, map[string]string{"STREAM_MAX_AGE": "1m", "HEARTBEAT_INTERVAL": "15s", "STREAMS_PER_SUBJECT": "-1"})
	p := startNginxWith(t, 4*n+64, upstreamPort(t, up.URL))
	const room = "reloadmany"
	url := p.URL + "/api/rooms/" + room + "/events"

	type follower struct {
		mu       sync.Mutex
		texts    []string
		connects []time.Time
	}
	fs := make([]*follower, n)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	opened := make(chan struct{}, n)
	for i := range fs {
		f := &follower{}
		fs[i] = f
		wg.Go(func() {
			first := true
			sseclient.Follow(ctx, sseclient.Options{
				URL: url,
				OnConnect: func(string) {
					f.mu.Lock()
					f.connects = append(f.connects, time.Now())
					f.mu.Unlock()
				},
			}, func(ev sseclient.Event) error {
				if first {
					first = false
					opened <- struct{}{}
				}
				if ev.Name == "message" {
					var m struct {
						Message struct{ Text string } `json:"message"`
					}
					if err := jsonUnmarshal(ev.Data, &m); err != nil {
						return err
					}
					f.mu.Lock()
					f.texts = append(f.texts, m.Message.Text)
					f.mu.Unlock()
				}
				return nil
			})
		})
		if i%100 == 99 {
			time.Sleep(50 * time.Millisecond) // let nginx and changecast keep up
		}
	}
	for range n {
		select {
		case <-opened:
		case <-time.After(2 * time.Minute):
			t.Fatal("not every stream opened within 2 minutes")
		}
	}
	t.Logf("%d streams open through nginx", n)

	var posted []string
	post := func() {
		text := fmt.Sprint("m", len(posted))
		postMessage(t, up.URL, room, text)
		posted = append(posted, text)
	}
	post()
	at := time.Now()
	gone := p.reload(t)
	goneAt := whenClosed(gone)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(3 * time.Minute)
	// resumed returns, for each stream that has resumed since the
	// reload, how long after it.
	resumed := func() []time.Duration {
		var after []time.Duration
		for _, f := range fs {
			f.mu.Lock()
			if i := slices.IndexFunc(f.connects, func(c time.Time) bool { return c.After(at) }); i >= 0 {
				after = append(after, f.connects[i].Sub(at))
			}
			f.mu.Unlock()
		}
		slices.Sort(after)
		return after
	}
	var after []time.Duration
	for {
		select {
		case <-tick.C:
			post()
		case <-deadline:
			t.Fatalf("within 3 minutes of the reload: %d of %d streams resumed; old worker gone: %v", len(resumed()), n, isClosedChan(gone))
		}
		if after = resumed(); len(after) == n && isClosedChan(gone) {
			break
		}
	}
	post()
	// Every follower gets every message once, in order.
	for wait := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		behind := 0
		for _, f := range fs {
			f.mu.Lock()
			if len(f.texts) < len(posted) {
				behind++
			}
			f.mu.Unlock()
		}
		if behind == 0 {
			break
		}
		if time.Now().After(wait) {
			t.Fatalf("%d of %d followers lack messages a minute after the last post", behind, n)
		}
	}
	for i, f := range fs {
		f.mu.Lock()
		if !slices.Equal(f.texts, posted) {
			t.Errorf("follower %d: %d messages %s, want %d in order once", i, len(f.texts), strings.Join(f.texts, ","), len(posted))
		}
		f.mu.Unlock()
	}
	round := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	t.Logf("nginx reload with %d streams and STREAM_MAX_AGE=1m: old worker exited %v after the reload; streams resumed through the new worker from %v (first) and %v (median) to %v (last) after it; %d messages posted meanwhile, none lost or doubled",
		n, round(goneAt().Sub(at)), round(after[0]), round(after[n/2]), round(after[n-1]), len(posted))
}

// isClosedChan reports whether c is closed.
func isClosedChan(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
