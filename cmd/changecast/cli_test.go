package main

import (
	"context"
	"net"
	"os"
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
		{name: "version", args: []string{"version"}, code: 0, stdoutRE: []string{`^changecast \S+ \((commit [0-9a-f]+|go[0-9.]+)`}},
		{name: "-version", args: []string{"-version"}, code: 0, stdoutRE: []string{`^changecast \S+ \((commit [0-9a-f]+|go[0-9.]+)`}},
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
// without VCS information (a Heroku build: -X main.version=<commit>) says
// what it knows, not what it misses.
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
		{"", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}}, []string{"changecast dev (go1.26.0)"}},
		{"abc1234", &debug.BuildInfo{GoVersion: "go1.26.0"}, []string{"changecast abc1234 (go1.26.0)"}},
		{"abc", nil, []string{"changecast abc ("}},
	} {
		got := describeVersion(tc.override, tc.info, tc.info != nil)
		if strings.Contains(got, "unknown") {
			t.Errorf("describeVersion(%q) = %q: it should say what it knows, not what it misses", tc.override, got)
		}
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

// TestDataLocation: the start-up line names the store file by its
// absolute path, or the MongoDB database.
func TestDataLocation(t *testing.T) {
	if got := dataLocation(config{DataDir: "./data"}); !filepath.IsAbs(got) || !strings.HasSuffix(got, filepath.Join("data", "changecast.db")) {
		t.Errorf("dataLocation(./data) = %q, want an absolute path to data/changecast.db", got)
	}
	if got := dataLocation(config{MongoURI: "mongodb://x", MongoDatabase: "shop"}); got != "MongoDB database shop" {
		t.Errorf("dataLocation(MongoDB) = %q", got)
	}
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
