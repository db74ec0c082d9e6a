// Package bidi drives a headless Firefox over WebDriver BiDi, the W3C
// protocol Firefox's built-in remote agent speaks, with no geckodriver: it
// starts `firefox --headless --remote-debugging-port 0` on a fresh profile,
// connects a WebSocket to the agent's /session endpoint and sends the few
// commands the browser tests need (open a tab, navigate, evaluate a script)
// while collecting what the pages log.
//
// It is a test tool, not a general client: one session, one Firefox, the
// commands spelled out as methods.
package bidi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// prefs quiet a fresh profile: no first-run pages, update checks, telemetry,
// or background requests to Mozilla's servers that would log errors in a
// machine without Internet access. The remote agent also applies its own
// recommended automation preferences when it starts.
var prefs = map[string]any{
	"remote.active-protocols":                              1, // WebDriver BiDi only
	"browser.shell.checkDefaultBrowser":                    false,
	"browser.startup.homepage_override.mstone":             "ignore",
	"browser.startup.page":                                 0,
	"browser.aboutwelcome.enabled":                         false,
	"browser.newtabpage.enabled":                           false,
	"browser.tabs.warnOnClose":                             false,
	"startup.homepage_welcome_url":                         "about:blank",
	"datareporting.policy.dataSubmissionEnabled":           false,
	"datareporting.healthreport.uploadEnabled":             false,
	"toolkit.telemetry.reportingpolicy.firstRun":           false,
	"toolkit.telemetry.enabled":                            false,
	"app.update.disabledForTesting":                        true,
	"app.update.auto":                                      false,
	"extensions.update.enabled":                            false,
	"app.normandy.enabled":                                 false,
	"messaging-system.rsexperimentloader.enabled":          false,
	"services.settings.server":                             "data:,",
	"network.captive-portal-service.enabled":               false,
	"network.connectivity-service.enabled":                 false,
	"browser.safebrowsing.malware.enabled":                 false,
	"browser.safebrowsing.phishing.enabled":                false,
	"browser.safebrowsing.downloads.enabled":               false,
	"browser.safebrowsing.update.enabled":                  false,
	"browser.region.network.url":                           "",
	"browser.search.update":                                false,
	"extensions.getAddons.cache.enabled":                   false,
	"extensions.blocklist.enabled":                         false,
	"dom.ipc.reportProcessHangs":                           false,
	"browser.contentblocking.introCount":                   99,
	"privacy.trackingprotection.enabled":                   false,
	"network.dns.disablePrefetch":                          true,
	"network.prefetch-next":                                false,
	"browser.ping-centre.telemetry":                        false,
	"browser.newtabpage.activity-stream.feeds.telemetry":   false,
	"browser.newtabpage.activity-stream.telemetry":         false,
	"browser.urlbar.suggest.searches":                      false,
	"browser.sessionstore.resume_from_crash":               false,
	"toolkit.startup.max_resumed_crashes":                  -1,
	"browser.download.panel.shown":                         true,
	"security.notification_enable_delay":                   0,
	"browser.tabs.remote.separatePrivilegedContentProcess": false,
}

// startTimeout bounds how long Firefox may take to start its remote agent;
// a cold start on a loaded 2-core machine takes a few seconds.
const startTimeout = 60 * time.Second

// closeTimeout bounds how long Firefox may take to exit after browser.close
// before it is killed.
const closeTimeout = 15 * time.Second

// maxMessage bounds one BiDi message; evaluation results of the tests are
// small, but a page's state summary can be a few hundred kilobytes.
const maxMessage = 64 << 20

var listeningRE = regexp.MustCompile(`WebDriver BiDi listening on (ws://\S+)`)

// Options say which Firefox to start and how.
type Options struct {
	// Path is the Firefox executable, such as /usr/bin/firefox-esr.
	Path string
	// Args are extra command-line arguments.
	Args []string
	// Prefs are extra preferences written to the profile's user.js; they
	// override the package's defaults.
	Prefs map[string]any
}

// LogEntry is one log.entryAdded event: a console API call or an uncaught
// JavaScript error in a page.
type LogEntry struct {
	// Level is "debug", "info", "warn" or "error".
	Level string `json:"level"`
	// Type is "console" (a console API call) or "javascript" (an error).
	Type string `json:"type"`
	// Method is the console method called, such as "error".
	Method string `json:"method"`
	// Text is the message.
	Text string `json:"text"`
	// Context is the browsing context (tab) it came from.
	Context string `json:"-"`
}

// String formats the entry for a test failure.
func (e LogEntry) String() string {
	s := e.Type + " " + e.Level
	if e.Method != "" {
		s += " (console." + e.Method + ")"
	}
	return s + ": " + e.Text
}

// Browser is a running Firefox with one BiDi session. Its methods are safe
// for concurrent use.
type Browser struct {
	cmd     *exec.Cmd
	profile string
	stderr  *tailBuffer
	conn    *websocket.Conn
	readErr chan error    // the reader's end; closed once it returns
	exited  chan struct{} // closed once Firefox has exited and been waited for

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan response
	logs    []LogEntry
	closed  bool

	closeOnce sync.Once
	closeErr  error
}

type response struct {
	Type    string          `json:"type"` // "success", "error" or "event"
	ID      *int64          `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
	Method  string          `json:"method"`
	Params  json.RawMessage `json:"params"`
}

// Start starts Firefox headless on a fresh temporary profile, connects to
// its remote agent, starts a session and subscribes to log entries. The
// caller must Close the Browser, which also removes the profile. ctx bounds
// the start only.
func Start(ctx context.Context, opt Options) (b *Browser, err error) {
	profile, err := os.MkdirTemp("", "bidi-firefox-profile-")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && b == nil {
			os.RemoveAll(profile)
		}
	}()
	if err := writePrefs(filepath.Join(profile, "user.js"), opt.Prefs); err != nil {
		return nil, err
	}
	args := append([]string{"--headless", "--no-remote", "--remote-debugging-port", "0", "--profile", profile}, opt.Args...)
	args = append(args, "about:blank")
	cmd := exec.Command(opt.Path, args...)
	cmd.Env = append(os.Environ(), "MOZ_CRASHREPORTER_DISABLE=1", "MOZ_CRASHREPORTER_SHUTDOWN=1")
	// Its own process group, so that Close can kill the content processes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	tail := &tailBuffer{found: make(chan string, 1)}
	cmd.Stdout = tail
	cmd.Stderr = tail
	// Content processes inherit the output pipe; do not wait for them
	// forever once Firefox itself has exited.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", opt.Path, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	kill := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}

	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var wsURL string
	select {
	case wsURL = <-tail.found:
	case <-exited:
		kill()
		return nil, fmt.Errorf("firefox exited before its remote agent listened (%v):\n%s", waitErr, tail)
	case <-ctx.Done():
		kill()
		return nil, fmt.Errorf("firefox remote agent did not listen: %w\n%s", ctx.Err(), tail)
	}
	conn, _, err := websocket.Dial(ctx, wsURL+"/session", nil)
	if err != nil {
		kill()
		return nil, fmt.Errorf("connect to %s/session: %w\n%s", wsURL, err, tail)
	}
	conn.SetReadLimit(maxMessage)
	b = &Browser{
		cmd:     cmd,
		profile: profile,
		stderr:  tail,
		conn:    conn,
		readErr: make(chan error, 1),
		pending: map[int64]chan response{},
		exited:  exited,
	}
	go b.read()

	if _, err := b.Call(ctx, "session.new", map[string]any{
		"capabilities": map[string]any{"alwaysMatch": map[string]any{"acceptInsecureCerts": true}},
	}); err != nil {
		b.Close()
		return nil, err
	}
	if _, err := b.Call(ctx, "session.subscribe", map[string]any{"events": []string{"log.entryAdded"}}); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func writePrefs(path string, extra map[string]any) error {
	all := map[string]any{}
	for k, v := range prefs {
		all[k] = v
	}
	for k, v := range extra {
		all[k] = v
	}
	var buf bytes.Buffer
	for k, v := range all {
		kj, _ := json.Marshal(k)
		vj, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("pref %s: %w", k, err)
		}
		fmt.Fprintf(&buf, "user_pref(%s, %s);\n", kj, vj)
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// read delivers responses to their callers and records log events until
// the connection ends.
func (b *Browser) read() {
	var err error
	defer func() {
		b.mu.Lock()
		b.closed = true
		for id, ch := range b.pending {
			close(ch)
			delete(b.pending, id)
		}
		b.mu.Unlock()
		b.readErr <- err
		close(b.readErr)
	}()
	for {
		var data []byte
		_, data, err = b.conn.Read(context.Background())
		if err != nil {
			return
		}
		var r response
		if jerr := json.Unmarshal(data, &r); jerr != nil {
			continue
		}
		if r.Type == "event" {
			if r.Method == "log.entryAdded" {
				var e struct {
					LogEntry
					Source struct {
						Context string `json:"context"`
					} `json:"source"`
				}
				if json.Unmarshal(r.Params, &e) == nil {
					e.LogEntry.Context = e.Source.Context
					b.mu.Lock()
					b.logs = append(b.logs, e.LogEntry)
					b.mu.Unlock()
				}
			}
			continue
		}
		if r.ID == nil {
			continue
		}
		b.mu.Lock()
		ch := b.pending[*r.ID]
		delete(b.pending, *r.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// Error is an error answer to a BiDi command.
type Error struct {
	// Method is the command sent.
	Method string
	// Code is the BiDi error code, such as "no such frame".
	Code string
	// Message is the browser's explanation.
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("bidi %s: %s: %s", e.Method, e.Code, e.Message)
}

// ErrClosed is returned by commands sent after the connection to the
// browser has ended.
var ErrClosed = errors.New("bidi: connection to the browser closed")

// Call sends a command and returns its result. It returns an *Error for an
// error answer, ErrClosed once the connection has ended, or ctx's error.
func (b *Browser) Call(ctx context.Context, method string, params any) (json.RawMessage, error) {
	if params == nil {
		params = struct{}{}
	}
	ch := make(chan response, 1)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.nextID++
	id := b.nextID
	b.pending[id] = ch
	b.mu.Unlock()
	msg, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return nil, err
	}
	drop := func() {
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
	}
	if err := b.conn.Write(ctx, websocket.MessageText, msg); err != nil {
		drop()
		return nil, fmt.Errorf("bidi %s: %w", method, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return nil, fmt.Errorf("bidi %s: %w", method, ErrClosed)
		}
		if r.Type == "error" {
			return nil, &Error{Method: method, Code: r.Error, Message: r.Message}
		}
		return r.Result, nil
	case <-ctx.Done():
		drop()
		return nil, fmt.Errorf("bidi %s: %w", method, ctx.Err())
	}
}

// Logs returns the log entries recorded so far, from every tab, and
// forgets them.
func (b *Browser) Logs() []LogEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.logs
	b.logs = nil
	return l
}

// Output returns the last lines Firefox wrote to its stdout and stderr, for
// a failure message.
func (b *Browser) Output() string { return b.stderr.String() }

// Close ends the session, asks Firefox to close, kills its process group
// if it has not exited within a bound, waits for it, and removes the
// profile. It returns an error if Firefox had to be killed or the profile
// could not be removed; later calls return the same.
func (b *Browser) Close() error {
	b.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
		defer cancel()
		// browser.close ends the session and closes every window; the
		// answer may or may not arrive before the connection drops.
		b.Call(ctx, "browser.close", nil)
		var errs []error
		select {
		case <-b.exited:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("firefox did not exit within %v of browser.close; killed", closeTimeout))
		}
		// Kill anything left in the group (content processes), even after
		// a clean exit, and wait for Firefox itself.
		syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.exited
		if err := waitGroupGone(b.cmd.Process.Pid, closeTimeout); err != nil {
			errs = append(errs, err)
		}
		b.conn.CloseNow()
		<-b.readErr
		if err := os.RemoveAll(b.profile); err != nil {
			errs = append(errs, err)
		}
		b.closeErr = errors.Join(errs...)
	})
	return b.closeErr
}

// waitGroupGone waits until no process of group pgid is left (content
// processes killed with their group are reaped by init, not by us).
func waitGroupGone(pgid int, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for {
		if err := syscall.Kill(-pgid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of firefox's group %d still there %v after it was killed", pgid, bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Pid returns the process id of Firefox, which is also its process group.
func (b *Browser) Pid() int { return b.cmd.Process.Pid }

// tailBuffer keeps the last lines of Firefox's output, reports the remote
// agent's address once it appears, and records the exit.
type tailBuffer struct {
	mu      sync.Mutex
	partial []byte
	lines   []string
	found   chan string
	sent    bool
}

// maxTail is how many lines of output are kept for failure messages.
const maxTail = 60

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := bytes.IndexByte(t.partial, '\n')
		if i < 0 {
			break
		}
		line := string(t.partial[:i])
		t.partial = t.partial[i+1:]
		if !t.sent {
			if m := listeningRE.FindStringSubmatch(line); m != nil {
				t.sent = true
				t.found <- m[1]
			}
		}
		t.lines = append(t.lines, line)
		if len(t.lines) > maxTail {
			t.lines = t.lines[len(t.lines)-maxTail:]
		}
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n") + string(t.partial)
}

var _ io.Writer = (*tailBuffer)(nil)
