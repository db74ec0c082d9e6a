package e2e

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"changecast/internal/sseclient"
)

// holdStream opens a stream at url and keeps it open until the returned
// function (also run at cleanup) closes it.
func holdStream(t *testing.T, url string) (closeStream func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	closeStream = func() { cancel(); resp.Body.Close() }
	t.Cleanup(closeStream)
	return closeStream
}

// present returns the users GET /api/rooms/:room/presence lists.
func present(t *testing.T, base, room string) []string {
	t.Helper()
	var page struct {
		Room  string
		Users []struct{ User string }
	}
	if st, _ := doJSON(t, "GET", base+"/api/rooms/"+room+"/presence", nil, nil, &page); st != http.StatusOK {
		t.Fatalf("presence of %s: status %d", room, st)
	}
	out := []string{}
	for _, u := range page.Users {
		out = append(out, u.User)
	}
	return out
}

// waitPresent waits until room's presence at base is want.
func waitPresent(t *testing.T, base, room string, within time.Duration, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	deadline := time.Now().Add(within)
	for {
		got := present(t, base, room)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("presence of %s at %s is %q after %v, want %q", room, base, got, within, want)
		}
		time.Sleep(20 * time.Millisecond) // polling for a condition
	}
}

// TestPresenceAfterSIGKILL: the built binary lists a dev stream's user;
// killed with SIGKILL and restarted on the same data, it lists nobody
// (presence lives in the process, never in the embedded store).
func TestPresenceAfterSIGKILL(t *testing.T) {
	t.Parallel()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port, dataDir := freePort(t), t.TempDir()
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	cmd := startBinary(t, bin, port, dataDir)
	holdStream(t, base+"/api/rooms/lobby/events?user=alice")
	holdStream(t, base+"/api/events?topic=rooms/lobby&user=alice")
	holdStream(t, base+"/api/rooms/lobby/events") // anonymous
	waitPresent(t, base, "lobby", 10*time.Second, "alice")
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	startBinary(t, bin, port, dataDir)
	if got := present(t, base, "lobby"); len(got) != 0 {
		t.Fatalf("after a SIGKILL restart %q are present, want nobody", got)
	}
}

// TestPresenceTwoProcessesMongo: two processes on one MongoDB database
// see each other's users: a join on one appears on the other (list and
// presence event), and so does the leave after the stream closes.
func TestPresenceTwoProcessesMongo(t *testing.T) {
	env := mongoDatabase(t)
	a := startMongoProcess(t, env)
	b := startMongoProcess(t, env)
	watcher := watchPresence(t, b.URL+"/api/rooms/lobby/events")
	closeAlice := holdStream(t, a.URL+"/api/rooms/lobby/events?user=alice")
	waitPresent(t, a.URL, "lobby", 5*time.Second, "alice")
	// Bound: 2×PresenceInterval (10 s); the wait only guards against hangs.
	waitPresent(t, b.URL, "lobby", mongoE2EWait, "alice")
	watcher.WaitFor(t, "alice's join on the other process", func(evs []sseclient.Event) bool {
		return slices.ContainsFunc(evs, func(e sseclient.Event) bool {
			return e.Name == "presence" && string(e.Data) == `{"topic":"rooms/lobby","op":"join","user":"alice"}`
		})
	})
	closeAlice()
	waitPresent(t, b.URL, "lobby", mongoE2EWait)
	watcher.WaitFor(t, "alice's leave on the other process", func(evs []sseclient.Event) bool {
		return slices.ContainsFunc(evs, func(e sseclient.Event) bool {
			return e.Name == "presence" && string(e.Data) == `{"topic":"rooms/lobby","op":"leave","user":"alice"}`
		})
	})

	// A process that stops says goodbye through the database.
	holdStream(t, a.URL+"/api/rooms/lobby/events?user=carol")
	waitPresent(t, b.URL, "lobby", mongoE2EWait, "carol")
	a.Stop(t)
	waitPresent(t, b.URL, "lobby", mongoE2EWait)
}

// watchPresence is watch keeping only presence events.
func watchPresence(tb testing.TB, url string) *collector {
	tb.Helper()
	return watchWhere(tb, url, "", func(ev sseclient.Event) bool { return ev.Name == "presence" })
}
