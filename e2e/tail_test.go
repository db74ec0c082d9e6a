package e2e

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestTailResumesAcrossRestart runs `changecast tail` on a room, restarts
// the server under it (same port and data), and checks that tail printed
// every message exactly once, in order, including those written while it
// was away.
func TestTailResumesAcrossRestart(t *testing.T) {
	t.Parallel()
	port, dir := freePort(t), t.TempDir()
	env := map[string]string{"PORT": strconv.Itoa(port), "DATA_DIR": dir}
	s := newE2EServer(t, env)
	url := s.URL + "/api/rooms/tailed/events"

	var out, errOut lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runBinary(ctx, []string{"tail", url}, nil, &out, &errOut) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tail: %v", err)
		}
	})
	waitOut := func(what string, ok func(string) bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !ok(out.String()); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("tail never printed %s; it printed:\n%s\nstderr:\n%s", what, out.String(), errOut.String())
			}
		}
	}
	waitOut("a snapshot", func(o string) bool { return strings.HasPrefix(o, "snapshot ") })
	for i := range 3 {
		postMessage(t, s.URL, "tailed", fmt.Sprint("before ", i))
	}
	waitOut("the first messages", func(o string) bool { return strings.Contains(o, `"before 2"`) })

	s.Stop(t)
	s2 := newE2EServer(t, env)
	for i := range 3 {
		postMessage(t, s2.URL, "tailed", fmt.Sprint("after ", i))
	}
	waitOut("the messages after the restart", func(o string) bool { return strings.Contains(o, `"after 2"`) })

	var texts []string
	presences := 0
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		name, rest, _ := strings.Cut(line, " ")
		if name == "presence" {
			// Presence carries no id; a client keeps the last one it saw,
			// which tail must not print as this event's.
			presences++
			if !strings.HasPrefix(rest, "- ") {
				t.Errorf("tail printed an id on a presence event: %q", line)
			}
		}
		if name == "message" {
			i := strings.Index(rest, `"text":"`)
			texts = append(texts, rest[i+8:i+8+strings.Index(rest[i+8:], `"`)])
		}
	}
	if presences == 0 {
		t.Errorf("tail printed no presence event:\n%s", out.String())
	}
	want := []string{"before 0", "before 1", "before 2", "after 0", "after 1", "after 2"}
	if strings.Join(texts, "|") != strings.Join(want, "|") {
		t.Fatalf("tail printed messages %q, want %q\nfull output:\n%s", texts, want, out.String())
	}
	if strings.Count(out.String(), "snapshot ") != 1 || strings.Contains(out.String(), "reset ") {
		t.Fatalf("tail resumed with a new snapshot or a reset; it should resume from its last id:\n%s", out.String())
	}
}

// TestTailStopsOnClientError: a 404 (unknown order) ends tail with an
// error instead of retrying forever.
func TestTailStopsOnClientError(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	var out, errOut strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := runBinary(ctx, []string{"tail", s.URL + "/api/orders/0123456789abcdef01234567/events"}, nil, &out, &errOut)
	if exitCode(err) != exitFailure || !strings.Contains(errOut.String(), "404") || ctx.Err() != nil {
		t.Fatalf("tail of an unknown order: %v, stderr %q; want a prompt 404 error", err, errOut.String())
	}
}
