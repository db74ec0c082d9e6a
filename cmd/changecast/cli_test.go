package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"changecast/store"
	"changecast/store/bolt"
)

// cliEnv returns a getenv over kv (name, value, ...).
func cliEnv(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

var testSecret = strings.Repeat("k", 32)

// TestCLI runs the command line as main does (runMain) and checks the exit
// status and what it prints, as the issue and the README describe them.
func TestCLI(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := strconv.Itoa(busy.Addr().(*net.TCPAddr).Port)

	// Every environment variable, with its default, is in the help.
	var envLines []string
	for _, ev := range envVars {
		def := ev.def
		if def == "" {
			def = "unset"
		}
		envLines = append(envLines, ev.name+`\s+`+regexp.QuoteMeta(def)+`\s+\S`)
	}
	helpOut := []string{
		"changecast token", "changecast tail", "changecast bench", "changecast backup", "changecast check", "changecast help", "changecast version",
		"run the server (the default command)",
		"-dev", "-sub", "-rooms", "-ttl", "-last-event-id", "-token", "-conns", // server, token, tail, bench flags
		"CHANGECAST_TOKEN",
	}

	for _, tc := range []struct {
		name       string
		args       []string
		env        func(string) string
		code       int
		stdout     []string // substrings of stdout
		stdoutRE   []string // regular expressions stdout matches
		stderr     []string // substrings of stderr
		noStderr   []string // substrings stderr must not hold
		onceStderr string   // a substring stderr holds exactly once
	}{
		{name: "help", args: []string{"help"}, code: 0, stdout: helpOut, stdoutRE: envLines, noStderr: []string{"changecast:"}},
		{name: "-h", args: []string{"-h"}, code: 0, stdout: helpOut, stdoutRE: envLines, noStderr: []string{"changecast:"}},
		{name: "--help", args: []string{"--help"}, code: 0, stdout: helpOut, stdoutRE: envLines},
		{name: "-dev -h", args: []string{"-dev", "-h"}, code: 0, stdout: helpOut},
		{name: "help token", args: []string{"help", "token"}, code: 0, stdout: []string{"usage: changecast token", "-rooms", "JWT_SECRET"}},
		{name: "token -h", args: []string{"token", "-h"}, code: 0, stdout: []string{"usage: changecast token", "-sub", "-ttl"}},
		{name: "tail -h documents the output", args: []string{"tail", "-h"}, code: 0, stdout: []string{"usage: changecast tail", "<event> <id> <data>", "CHANGECAST_TOKEN"}},
		{name: "version", args: []string{"version"}, code: 0, stdoutRE: []string{`^changecast \S+ \((commit [0-9a-f]+|unknown revision)`}},
		{name: "-version", args: []string{"-version"}, code: 0, stdoutRE: []string{`^changecast \S+ \((commit [0-9a-f]+|unknown revision)`}},
		{name: "unknown command", args: []string{"serve2"}, code: 2, stderr: []string{`unknown command "serve2"`, "run 'changecast -h' for usage"}},
		{name: "token bad duration", args: []string{"token", "-sub", "a", "-ttl", "5x"}, env: cliEnv("JWT_SECRET", testSecret), code: 2,
			stderr: []string{`"5x" for flag -ttl: not a duration`, "such as 90m", "run 'changecast token -h' for usage"}, noStderr: []string{"-sub string", "Usage"}, onceStderr: "5x"},
		{name: "token negative duration", args: []string{"token", "-sub", "a", "-ttl", "-1s"}, env: cliEnv("JWT_SECRET", testSecret), code: 2,
			stderr: []string{`"-1s" for flag -ttl: not positive`}, onceStderr: "-1s"},
		{name: "token unknown flag", args: []string{"token", "-bogus"}, env: cliEnv("JWT_SECRET", testSecret), code: 2,
			stderr: []string{"-bogus", "run 'changecast token -h' for usage"}, noStderr: []string{"-sub string"}, onceStderr: "bogus"},
		{name: "token extra argument", args: []string{"token", "-sub", "a", "-rooms", "lobby", "extra"}, env: cliEnv("JWT_SECRET", testSecret), code: 2,
			stderr: []string{`unexpected argument "extra"`, "run 'changecast token -h' for usage"}, onceStderr: "extra"},
		{name: "bench unknown flag", args: []string{"bench", "-bogus"}, code: 2,
			stderr: []string{"-bogus", "run 'changecast bench -h' for usage"}, noStderr: []string{"-conns int"}, onceStderr: "bogus"},
		{name: "bench extra argument", args: []string{"bench", "extra"}, code: 2,
			stderr: []string{`unexpected argument "extra"`, "run 'changecast bench -h' for usage"}, onceStderr: "extra"},
		{name: "bench -h", args: []string{"bench", "-h"}, code: 0, stdout: []string{"usage: changecast bench", "-conns", "-mode"}, noStderr: []string{"changecast:"}},
		{name: "backup -h", args: []string{"backup", "-h"}, code: 0, stdout: []string{"usage: changecast backup", "-url", "-o", "CHANGECAST_TOKEN", "mongodump"}},
		{name: "help check", args: []string{"help", "check"}, code: 0, stdout: []string{"usage: changecast check FILE", "Exit status 0"}},
		{name: "backup unknown flag", args: []string{"backup", "-bogus"}, code: 2,
			stderr: []string{"-bogus", "run 'changecast backup -h' for usage"}, onceStderr: "bogus"},
		{name: "backup without -o", args: []string{"backup", "-url", "http://127.0.0.1:1"}, code: 2,
			stderr: []string{"-url and -o are required", "run 'changecast backup -h' for usage"}},
		{name: "backup bad url", args: []string{"backup", "-url", "ftp://x", "-o", filepath.Join(dir, "b.db")}, code: 2,
			stderr: []string{`-url "ftp://x" is not an http(s) URL`}},
		{name: "backup refused", args: []string{"backup", "-url", "http://127.0.0.1:" + strconv.Itoa(freePort(t)), "-o", filepath.Join(dir, "b.db")}, code: 1,
			stderr: []string{"changecast: backup:"}},
		{name: "check without file", args: []string{"check"}, code: 2,
			stderr: []string{"check needs exactly one FILE", "run 'changecast check -h' for usage"}},
		{name: "check missing file", args: []string{"check", filepath.Join(dir, "none.db")}, code: 1,
			stderr: []string{"none.db does not exist"}},
		{name: "check not a store", args: []string{"check", file}, code: 1,
			stderr: []string{file, "damaged"}},
		{name: "token without rooms warns", args: []string{"token", "-sub", "a"}, env: cliEnv("JWT_SECRET", testSecret), code: 0,
			stdoutRE: []string{`^[\w-]+\.[\w-]+\.[\w-]+\n$`}, stderr: []string{"warning: no -rooms", "no room"}},
		{name: "token with rooms", args: []string{"token", "-sub", "a", "-rooms", "lobby"}, env: cliEnv("JWT_SECRET", testSecret), code: 0,
			stdoutRE: []string{`^[\w-]+\.[\w-]+\.[\w-]+\n$`}, noStderr: []string{"warning"}},
		{name: "token short secret", args: []string{"token", "-sub", "a", "-rooms", "lobby"}, env: cliEnv("JWT_SECRET", "short"), code: 1,
			stderr: []string{"JWT_SECRET is too short (at least 32 bytes)"}, noStderr: []string{"must be set"}},
		{name: "token no secret", args: []string{"token", "-sub", "a", "-rooms", "lobby"}, env: cliEnv(), code: 1, stderr: []string{"JWT_SECRET must be set"}},
		{name: "port in use", args: []string{"-dev"}, env: cliEnv("PORT", busyPort, "DATA_DIR", dir), code: 1,
			stderr: []string{"port " + busyPort + " is in use: set PORT to another port"}},
		{name: "DATA_DIR is a file", args: []string{"-dev"}, env: cliEnv("PORT", "0", "DATA_DIR", file), code: 1,
			stderr: []string{"is a file, not a directory", file}},
		{name: "several bad settings", args: []string{"-dev"}, env: cliEnv("PORT", "http", "HEARTBEAT_INTERVAL", "90s", "RETAIN_CHANGES", "10", "DATA_DIR", file), code: 1,
			stderr: []string{"changecast: PORT=\"http\"", "changecast: HEARTBEAT_INTERVAL=\"90s\"", "changecast: RETAIN_CHANGES=\"10\"", "changecast: DATA_DIR="}},
		{name: "bad setting and no secret", args: nil, env: cliEnv("PORT", "http", "JWT_SECRET", ""), code: 1,
			stderr: []string{"changecast: PORT=\"http\"", "changecast: JWT_SECRET is required"}},
		{name: "server short secret", args: nil, env: cliEnv("PORT", "0", "DATA_DIR", dir, "JWT_SECRET", "short"), code: 1,
			stderr: []string{"JWT_SECRET is too short"}, noStderr: []string{"JWT_SECRET is required", "short\""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := tc.env
			if env == nil {
				env = cliEnv()
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			var stdout, stderr strings.Builder
			code := runMain(ctx, tc.args, env, &stdout, &stderr)
			out, errOut := stdout.String(), stderr.String()
			if code != tc.code {
				t.Errorf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, out, errOut)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(out, s) {
					t.Errorf("stdout lacks %q:\n%s", s, out)
				}
			}
			for _, re := range tc.stdoutRE {
				if !regexp.MustCompile(`(?m)` + re).MatchString(out) {
					t.Errorf("stdout does not match %s:\n%s", re, out)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(errOut, s) {
					t.Errorf("stderr lacks %q:\n%s", s, errOut)
				}
			}
			for _, s := range tc.noStderr {
				if strings.Contains(errOut, s) {
					t.Errorf("stderr holds %q:\n%s", s, errOut)
				}
			}
			if tc.onceStderr != "" && strings.Count(errOut, tc.onceStderr) != 1 {
				t.Errorf("stderr holds %q %d times, want once:\n%s", tc.onceStderr, strings.Count(errOut, tc.onceStderr), errOut)
			}
		})
	}
}

// TestDescribeVersion: the version line names the commit from the build
// info (with +dirty for a modified tree), honours -X main.version, and
// says "unknown revision" without VCS information.
func TestDescribeVersion(t *testing.T) {
	info := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.0.0-20260101120000-0123456789ab"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef"}, {Key: "vcs.time", Value: "2026-01-01T12:00:00Z"}, {Key: "vcs.modified", Value: "true"}}}
	for _, tc := range []struct {
		override string
		info     *debug.BuildInfo
		want     []string
	}{
		{"", info, []string{"changecast v0.0.0-20260101120000-0123456789ab ", "commit 0123456789abcdef+dirty", "2026-01-01T12:00:00Z", "go1.26.0"}},
		{"1.2.3", info, []string{"changecast 1.2.3 ", "commit 0123456789abcdef+dirty"}},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, []string{"changecast dev ", "unknown revision"}},
		{"abc", nil, []string{"changecast abc ", "unknown revision"}},
	} {
		got := describeVersion(tc.override, tc.info, tc.info != nil)
		for _, w := range tc.want {
			if !strings.Contains(got, w) {
				t.Errorf("describeVersion(%q) = %q, want it to hold %q", tc.override, got, w)
			}
		}
	}
	clean := *info
	clean.Settings = clean.Settings[:2]
	if got := describeVersion("", &clean, true); strings.Contains(got, "dirty") {
		t.Errorf("a clean tree: %q says dirty", got)
	}
}

// TestVersionOfBuiltBinary builds the command from a git clone of this
// checkout's HEAD and checks that `version` names that commit, and that
// -ldflags -X main.version still sets the version shown.
func TestVersionOfBuiltBinary(t *testing.T) {
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
		ldflags string
		want    []string
	}{
		{"", []string{"commit " + rev}},
		{"-X main.version=v9.9.9", []string{"changecast v9.9.9 ", "commit " + rev}},
	} {
		build := exec.Command("go", "build", "-buildvcs=true", "-ldflags", tc.ldflags, "-o", bin, "./cmd/changecast")
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
			if strings.Contains(string(out), "dirty") {
				t.Errorf("%s from a clean clone says dirty: %q", args[0], out)
			}
		}
	}
}

// tailRun runs `changecast tail` through runMain until its stdout holds
// want or it exits; it returns stdout, stderr and the exit status (-1 if
// it was still running and was stopped).
func tailRun(t *testing.T, args []string, want string) (string, string, int) {
	t.Helper()
	var out, errOut lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- runMain(ctx, append([]string{"tail"}, args...), cliEnv(), &out, &errOut) }()
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
		done <- runMain(ctx, []string{"tail", "-last-event-id", snapID, room}, cliEnv(), &rout, &resumed)
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
	if got := dataLocation(config{DataDir: "./data"}); !filepath.IsAbs(got) || !strings.HasSuffix(got, filepath.Join("data", "changecast.db")) {
		t.Errorf("dataLocation(./data) = %q, want an absolute path to data/changecast.db", got)
	}
	if got := dataLocation(config{MongoURI: "mongodb://x", MongoDatabase: "shop"}); got != "MongoDB database shop" {
		t.Errorf("dataLocation(MongoDB) = %q", got)
	}
}

// TestFeedLagIdleIsZero: on a server whose feed has applied every change,
// changecast_change_feed_lag_seconds is 0, however long ago the last
// change was.
func TestFeedLagIdleIsZero(t *testing.T) {
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

// TestFeedLag: behind the head, the lag is the age of the oldest change
// not applied; at the head it is 0.
func TestFeedLag(t *testing.T) {
	b, err := bolt.Open(t.TempDir(), bolt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := t.Context()
	before, err := b.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.PostMessage(ctx, "r", "a", "one"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.PostMessage(ctx, "r", "a", "two"); err != nil {
		t.Fatal(err)
	}
	head, _ := b.Head(ctx)
	var first store.Change
	if err := b.CatchUp(ctx, []string{"rooms/r"}, before, head, func(c store.Change) error {
		if first.Pos == "" {
			first = c
		}
		return nil
	}); err != nil || first.Time.IsZero() {
		t.Fatalf("catch-up: %v, first change %+v", err, first)
	}
	now := first.Time.Add(42 * time.Second)
	if lag, ok := feedLag(ctx, b, before, now); !ok || lag != 42 {
		t.Errorf("two changes behind: lag %v (ok %v), want 42 (now minus the oldest change not applied)", lag, ok)
	}
	if lag, ok := feedLag(ctx, b, head, now); !ok || lag != 0 {
		t.Errorf("at the head: lag %v (ok %v), want 0", lag, ok)
	}
	if _, ok := feedLag(ctx, b, "", now); ok {
		t.Error("before the feed starts: a lag was reported")
	}
}

// TestEveryMetricDocumented: each changecast_ metric /metrics exposes is
// in docs/api.md's metric table.
func TestEveryMetricDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/api.md")
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
