package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"changecast/internal/sseclient"
)

// e2eServer is the built binary running on a real listener.
type e2eServer struct {
	URL     string
	DataDir string
	// cancel sends the process SIGTERM, as a platform does to stop it.
	cancel func()
	// done receives the process's exit: nil for a status of 0.
	done chan error
	logs *lockedBuffer
	proc *os.Process
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var listenRE = regexp.MustCompile(`listening on http://(?:127\.0\.0\.1|0\.0\.0\.0):(\d+)`)

// newE2EServer runs the binary with -dev (plus args) and env on top of
// PORT=0 and a fresh DATA_DIR, waits until it listens, and stops it at
// cleanup, failing the test if it exits with a non-zero status.
func newE2EServer(tb testing.TB, env map[string]string, args ...string) *e2eServer {
	tb.Helper()
	return startE2E(tb, env, append([]string{"-dev"}, args...))
}

// startE2E is newE2EServer with exactly args (no -dev unless given). The
// process's environment is binaryEnv plus the variables: nothing else of
// the tests' own environment reaches it.
func startE2E(tb testing.TB, env map[string]string, args []string) *e2eServer {
	tb.Helper()
	bin := mustBinary(tb)
	vars := map[string]string{"PORT": "0", "DATA_DIR": tb.TempDir(), "HEARTBEAT_INTERVAL": "1s"}
	for k, v := range env {
		vars[k] = v
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = binaryEnv(envList(vars)...)
	pr, pw := io.Pipe()
	s := &e2eServer{DataDir: vars["DATA_DIR"], done: make(chan error, 1), logs: &lockedBuffer{}}
	cmd.Stdout, cmd.Stderr = pw, s.logs
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s.proc = cmd.Process
	s.cancel = func() { s.proc.Signal(syscall.SIGTERM) }
	go func() {
		err := cmd.Wait()
		pw.Close()
		s.done <- err
	}()
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			s.logs.Write(append(sc.Bytes(), '\n'))
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urlc <- "http://127.0.0.1:" + m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, pr)
	}()
	tb.Cleanup(func() { s.Stop(tb) })
	select {
	case s.URL = <-urlc:
	case err := <-s.done:
		s.done <- err
		tb.Fatalf("the server exited before listening: %v\n%s", err, s.logs)
	case <-time.After(30 * time.Second):
		tb.Fatalf("server did not listen within 30s\n%s", s.logs)
	}
	return s
}

// Stop sends SIGTERM and waits for the process to exit, failing the test
// on a non-zero status; after 30 s it kills the process. It may be called
// more than once.
func (s *e2eServer) Stop(tb testing.TB) {
	tb.Helper()
	s.cancel()
	select {
	case err, ok := <-s.done:
		if ok && err != nil {
			tb.Errorf("server: %v\n%s", err, s.logs)
		}
		if ok {
			close(s.done)
		}
	case <-time.After(30 * time.Second):
		tb.Errorf("server did not exit 30s after SIGTERM; killed\n%s", s.logs)
		s.proc.Kill()
		<-s.done
		close(s.done)
	}
}

// doJSON sends a request with a JSON body (nil for none) and decodes the
// JSON answer into out (nil to skip). It returns the status and headers.
func doJSON(tb testing.TB, method, url string, body any, header http.Header, out any) (int, http.Header) {
	tb.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			tb.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		tb.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: read body: %v", method, url, err)
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			tb.Fatalf("%s %s: decode %q: %v", method, url, raw, err)
		}
	}
	return resp.StatusCode, resp.Header
}

// collector follows a stream in the background and keeps every event.
type collector struct {
	mu     sync.Mutex
	events []sseclient.Event
	more   chan struct{}
	cancel context.CancelFunc
	done   chan error
}

// watch follows url (resuming after lastID if non-empty) until the test
// ends or Stop is called. It keeps every event but presence (beside the
// log: the presence tests look at it with watchPresence).
func watch(tb testing.TB, url, lastID string) *collector {
	tb.Helper()
	return watchWhere(tb, url, lastID, func(ev sseclient.Event) bool { return ev.Name != "presence" })
}

// watchWhere is watch keeping only the events keep accepts.
func watchWhere(tb testing.TB, url, lastID string, keep func(sseclient.Event) bool) *collector {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{more: make(chan struct{}, 1), cancel: cancel, done: make(chan error, 1)}
	go func() {
		c.done <- sseclient.Follow(ctx, sseclient.Options{URL: url, LastEventID: lastID}, func(ev sseclient.Event) error {
			if !keep(ev) {
				return nil
			}
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
			select {
			case c.more <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	tb.Cleanup(func() { c.Stop(tb) })
	return c
}

// Stop ends the follower and waits for it.
func (c *collector) Stop(tb testing.TB) {
	tb.Helper()
	c.cancel()
	if err, ok := <-c.done; ok {
		close(c.done)
		if err != nil {
			tb.Errorf("follow: %v", err)
		}
	}
}

// Events returns a copy of the events so far.
func (c *collector) Events() []sseclient.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sseclient.Event(nil), c.events...)
}

// WaitFor waits until ok holds for the events so far, failing after a
// generous timeout (this bounds a hang; it does not measure speed).
func (c *collector) WaitFor(tb testing.TB, what string, ok func([]sseclient.Event) bool) []sseclient.Event {
	tb.Helper()
	deadline := time.After(20 * time.Second)
	for {
		evs := c.Events()
		if ok(evs) {
			return evs
		}
		select {
		case <-c.more:
		case <-deadline:
			tb.Fatalf("timed out waiting for %s; have %d events: %s", what, len(evs), describe(evs))
		}
	}
}

// WaitN waits for at least n events.
func (c *collector) WaitN(tb testing.TB, n int) []sseclient.Event {
	tb.Helper()
	return c.WaitFor(tb, strconv.Itoa(n)+" events", func(evs []sseclient.Event) bool { return len(evs) >= n })
}

func describe(evs []sseclient.Event) string {
	var b strings.Builder
	for i, ev := range evs {
		if i == 20 && len(evs) > 40 {
			fmt.Fprintf(&b, "\n  ... %d more", len(evs)-40)
		}
		if i >= 20 && i < len(evs)-20 {
			continue
		}
		data := string(ev.Data)
		if len(data) > 120 {
			data = data[:120] + "..."
		}
		b.WriteString("\n  " + ev.Name + " " + ev.ID + " " + data)
	}
	return b.String()
}

// nextPort is the last port freePort handed out. The ports come from
// below the kernel's ephemeral range (32768 and up on Linux), so an
// outgoing connection of another test never takes one between freePort
// and the process that listens on it, and each is handed out once per
// run.
var nextPort atomic.Int32

func init() { nextPort.Store(int32(20000 + rand.IntN(6000))) }

// freePort returns a loopback port that was free a moment ago and that
// no other test of this run was given.
func freePort(tb testing.TB) int {
	tb.Helper()
	for range 1000 {
		p := int(nextPort.Add(1))
		if p >= 32768 {
			nextPort.Store(20000)
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		return p
	}
	tb.Fatal("no free port below the ephemeral range")
	return 0
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
