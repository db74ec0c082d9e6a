package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// runServer is changecast's server started in-process by run, on a real
// listener: for the tests of run itself (its goroutines, its shutdown).
// The end-to-end tests, in package e2e, run the built binary instead.
type runServer struct {
	URL    string
	cancel context.CancelFunc
	done   chan error
}

var runListenRE = regexp.MustCompile(`listening on http://(?:127\.0\.0\.1|0\.0\.0\.0):(\d+)`)

// startRun starts run with -dev and env on top of PORT=0 and a fresh
// DATA_DIR, and waits until it listens.
func startRun(tb testing.TB, env map[string]string) *runServer {
	tb.Helper()
	vars := map[string]string{"PORT": "0", "DATA_DIR": tb.TempDir(), "HEARTBEAT_INTERVAL": "1s"}
	for k, v := range env {
		vars[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	pr, pw := io.Pipe()
	s := &runServer{cancel: cancel, done: make(chan error, 1)}
	var logs strings.Builder
	var mu sync.Mutex
	go func() {
		err := run(ctx, []string{"-dev"}, func(k string) string { return vars[k] }, pw, io.Discard)
		pw.Close()
		s.done <- err
	}()
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if m := runListenRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urlc <- "http://127.0.0.1:" + m[1]:
				default:
				}
			}
		}
	}()
	select {
	case s.URL = <-urlc:
	case err := <-s.done:
		cancel()
		tb.Fatalf("run returned before listening: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		mu.Lock()
		defer mu.Unlock()
		tb.Fatalf("run did not listen within 30s\n%s", logs.String())
	}
	return s
}

// TestShutdownWithOpenStreams opens 100 streams, cancels run's context
// (what SIGTERM does) and checks that every stream ends cleanly, run
// returns within SHUTDOWN_TIMEOUT, and no goroutine is left behind.
func TestShutdownWithOpenStreams(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const streams = 100
	const timeout = 5 * time.Second
	s := startRun(t, map[string]string{"SHUTDOWN_TIMEOUT": timeout.String()})
	tr := &http.Transport{MaxIdleConnsPerHost: -1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	ends := make(chan error, streams)
	var opened sync.WaitGroup
	for i := range streams {
		opened.Add(1)
		go func() {
			resp, err := client.Get(fmt.Sprintf("%s/api/rooms/room-%d/events", s.URL, i%10))
			if err != nil {
				opened.Done()
				ends <- err
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			line, err := br.ReadString('\n')
			opened.Done()
			if err != nil || !strings.HasPrefix(line, "retry:") {
				ends <- fmt.Errorf("first line %q, %v; want retry:", line, err)
				return
			}
			_, err = io.Copy(io.Discard, br)
			ends <- err // nil on a clean end of the body
		}()
	}
	opened.Wait()

	start := time.Now()
	s.cancel()
	select {
	case err := <-s.done:
		close(s.done)
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(timeout + 5*time.Second):
		t.Fatalf("run did not return within SHUTDOWN_TIMEOUT=%s (+5s)", timeout)
	}
	if took := time.Since(start); took > timeout {
		t.Errorf("shutdown took %s, more than SHUTDOWN_TIMEOUT=%s", took, timeout)
	}
	for range streams {
		if err := <-ends; err != nil {
			t.Errorf("stream did not end cleanly: %v", err)
		}
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(tb testing.TB) int {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
