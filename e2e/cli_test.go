package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestVersionOfBuiltBinary builds the command from a git clone of this
// checkout's HEAD and checks that `version` names that commit, and that
// -ldflags -X main.version still sets the version shown.
func TestVersionOfBuiltBinary(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not in a git checkout: %v", err)
	}
	rev := strings.TrimSpace(string(head))
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(t.TempDir(), "src")
	if out, err := exec.Command("git", "clone", "-q", "--no-checkout", strings.TrimSpace(string(top)), clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	if out, err := exec.Command("git", "-C", clone, "checkout", "-q", rev).CombinedOutput(); err != nil {
		t.Fatalf("git checkout: %v\n%s", err, out)
	}
	bin := filepath.Join(t.TempDir(), "changecast")
	for _, tc := range []struct {
		ldflags  string
		buildvcs string
		want     []string
	}{
		{"", "true", []string{"commit " + rev}},
		{"-X main.version=v9.9.9", "true", []string{"changecast v9.9.9 ", "commit " + rev}},
		// The Heroku buildpack's way: no VCS stamp, the commit as the
		// version. The line says what it knows.
		{"-X main.version=abc1234", "false", []string{"changecast abc1234 (go"}},
	} {
		build := exec.Command("go", "build", "-buildvcs="+tc.buildvcs, "-ldflags", tc.ldflags, "-o", bin, "./cmd/changecast")
		build.Dir = clone
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		for _, args := range [][]string{{"version"}, {"-version"}} {
			out, err := exec.Command(bin, args...).Output()
			if err != nil {
				t.Fatalf("%s %s: %v", bin, args[0], err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("ldflags %q, %s: %q lacks %q", tc.ldflags, args[0], out, w)
				}
			}
			if strings.Contains(string(out), "unknown") {
				t.Errorf("ldflags %q, %s: %q says what it misses", tc.ldflags, args[0], out)
			}
			if strings.Contains(string(out), "dirty") {
				t.Errorf("%s from a clean clone says dirty: %q", args[0], out)
			}
		}
	}
}

// tailRun runs `changecast tail` (the binary) until its stdout holds
// want or it exits; it returns stdout, stderr and the exit status (-1 if
// it was still running and was stopped).
func tailRun(t *testing.T, args []string, want string) (string, string, int) {
	t.Helper()
	var out, errOut lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- exitCode(runBinary(ctx, append([]string{"tail"}, args...), nil, &out, &errOut)) }()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case code := <-done:
			return out.String(), errOut.String(), code
		case <-deadline:
			cancel()
			<-done
			t.Fatalf("tail printed no %q within 20s\nstdout:\n%s\nstderr:\n%s", want, out.String(), errOut.String())
		case <-time.After(10 * time.Millisecond):
			if want != "" && strings.Contains(out.String(), want) {
				cancel()
				<-done
				return out.String(), errOut.String(), -1
			}
		}
	}
}

// TestTailTellsWhatHappens: tail says on stderr when it connects and from
// which id, prints a reset with its reason and no id (the contract's reset
// has none), and ends on a 4xx with the server's own error text.
func TestTailTellsWhatHappens(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	postMessage(t, s.URL, "told", "hello")
	room := s.URL + "/api/rooms/told/events"

	out, errOut, _ := tailRun(t, []string{room}, "snapshot ")
	if !strings.Contains(errOut, "connected to "+room) || !strings.Contains(errOut, "from now") {
		t.Errorf("a fresh tail did not say it connected from now; stderr:\n%s", errOut)
	}
	var snapID string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[0] == "snapshot" {
			snapID = f[1]
		}
	}
	if snapID == "" || snapID == "-" {
		t.Fatalf("no snapshot line with an id: %q", out)
	}

	// Resuming: stderr names the id; the next message follows.
	var resumed lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var rout lockedBuffer
	go func() {
		done <- exitCode(runBinary(ctx, []string{"tail", "-last-event-id", snapID, room}, nil, &rout, &resumed))
	}()
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(resumed.String(), "resuming after id "+snapID); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("tail -last-event-id did not say it resumed after %s; stderr:\n%s", snapID, resumed.String())
		}
	}
	cancel()
	<-done

	// A bad id: one reset line with "-" for its id and the reason, never
	// the bad id; then a snapshot.
	const bad = "not-an-id-of-this-server"
	out, errOut, _ = tailRun(t, []string{"-last-event-id", bad, room}, "snapshot ")
	resetLine := regexp.MustCompile(`(?m)^reset - (\{.*\})$`).FindStringSubmatch(out)
	if resetLine == nil {
		t.Fatalf("no `reset - <data>` line:\n%s", out)
	}
	var data struct{ Topic, Reason string }
	if err := json.Unmarshal([]byte(resetLine[1]), &data); err != nil || data.Topic != "rooms/told" || data.Reason != "invalid-id" {
		t.Errorf("reset data %s: want topic rooms/told, reason invalid-id (%v)", resetLine[1], err)
	}
	if strings.Contains(out, bad) {
		t.Errorf("tail printed the bad id on stdout:\n%s", out)
	}
	if !strings.Contains(errOut, "reset (invalid-id)") {
		t.Errorf("stderr does not tell the reset and its reason:\n%s", errOut)
	}

	// A 4xx: the server's error text, exit status 1.
	order := s.URL + "/api/orders/0123456789abcdef01234567/events"
	resp, err := http.Get(order)
	if err != nil {
		t.Fatal(err)
	}
	var body struct{ Error string }
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || body.Error == "" {
		t.Fatalf("unknown order: status %d, error %q; want 404 with an error text", resp.StatusCode, body.Error)
	}
	_, errOut, code := tailRun(t, []string{order}, "")
	if code != exitFailure || !strings.Contains(errOut, "404") || !strings.Contains(errOut, body.Error) {
		t.Errorf("tail of an unknown order: exit %d, stderr %q; want 1 and the server's error %q", code, errOut, body.Error)
	}
}

// TestStartupSaysWhereThingsAre: the server prints the demo page's URL and
// the store file's absolute path, and that file is where the data is.
func TestStartupSaysWhereThingsAre(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	file := filepath.Join(s.DataDir, "changecast.db")
	for _, want := range []string{"demo page: " + s.URL + "/", "data: " + file} {
		for deadline := time.Now().Add(20 * time.Second); !strings.Contains(s.logs.String(), want); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("start-up log lacks %q:\n%s", want, s.logs.String())
			}
		}
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("the file named does not exist: %v", err)
	}
}

// TestFeedLagIdleIsZero: on a server whose feed has applied every change,
// changecast_change_feed_lag_seconds is 0, however long ago the last
// change was.
func TestFeedLagIdleIsZero(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	w := watch(t, s.URL+"/api/rooms/lagged/events", "")
	w.WaitN(t, 1)
	postMessage(t, s.URL, "lagged", "one")
	w.WaitN(t, 2) // delivered: the feed applied it
	if lag := scrape(t, s.URL, "changecast_change_feed_lag_seconds"); lag != 0 {
		t.Errorf("changecast_change_feed_lag_seconds = %v on a caught-up server, want 0", lag)
	}
	w.Stop(t)
}

// TestEveryMetricDocumented: each changecast_ metric /metrics exposes is
// in docs/api.md's metric table.
func TestEveryMetricDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	s := newE2EServer(t, nil)
	w := watch(t, s.URL+"/api/rooms/documented/events", "")
	w.WaitN(t, 1)
	w.Stop(t)
	resp, err := http.Get(s.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	_, _ = io.Copy(&body, resp.Body)
	resp.Body.Close()
	names := regexp.MustCompile(`(?m)^# HELP (changecast_\w+)`).FindAllStringSubmatch(body.String(), -1)
	if len(names) < 10 {
		t.Fatalf("only %d changecast metrics scraped:\n%s", len(names), body.String())
	}
	for _, m := range names {
		if !strings.Contains(string(doc), "`"+m[1]) {
			t.Errorf("metric %s is not in docs/api.md", m[1])
		}
	}
}
