package e2e

import (
	"bufio"
	"context"
	"net/http"
	"testing"
	"time"
)

// TestHeartbeatIntervalEndToEnd: HEARTBEAT_INTERVAL reaches the streams
// (docs/api.md: a `: ping` comment goes out every HEARTBEAT_INTERVAL,
// default 15 s). With 1 s, an idle stream gets three pings well within
// 10 s (with the default it would get none), and not faster than the
// interval: the third comes no sooner than two intervals after the
// request was sent.
func TestHeartbeatIntervalEndToEnd(t *testing.T) {
	const interval = time.Second
	s := newE2EServer(t, map[string]string{"HEARTBEAT_INTERVAL": interval.String()})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/rooms/lobby/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("stream status %d, want 200", resp.StatusCode)
	}
	lines := make(chan string)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() {
		cancel()
		resp.Body.Close()
		<-done
	}()

	// 10 s bounds a hang on a loaded machine; with the default 15 s
	// interval no ping comes within it.
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	var at []time.Time
	for len(at) < 3 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended after %d pings; want it open", len(at))
			}
			if l == ": ping" {
				at = append(at, time.Now())
			}
		case <-deadline.C:
			t.Fatalf("got %d pings within 10s with HEARTBEAT_INTERVAL=%s, want at least 3", len(at), interval)
		}
	}
	// Delays (a busy machine) only make pings later: this bound cannot
	// flake, and it allows the first ping at once.
	if took := at[2].Sub(start); took < 2*interval {
		t.Errorf("three pings %v after the request; want them %v apart", took, interval)
	}
}
