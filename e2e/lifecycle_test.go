package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"changecast/internal/sseclient"
	"changecast/store"
)

// TestRestartAfterSIGKILL kills the server with SIGKILL while writers are
// busy and a client watches, restarts it on the same DATA_DIR, and checks
// that every acknowledged write is there and that the client, resuming
// from an id it saw before the kill, gets every later event exactly once.
func TestRestartAfterSIGKILL(t *testing.T) {
	t.Parallel()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port, dataDir := freePort(t), t.TempDir()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd := startBinary(t, bin, port, dataDir)

	w := watch(t, base+"/api/rooms/durable/events", "")
	w.WaitN(t, 1) // snapshot

	// Writers post until the kill; every 201 is an acknowledged write.
	var (
		mu    sync.Mutex
		acked = map[string]string{} // message id → text
	)
	ctx, stop := context.WithCancel(context.Background())
	var writers sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	for g := range 8 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for i := 0; ctx.Err() == nil; i++ {
				text := fmt.Sprintf("w%d-%d", g, i)
				req, _ := http.NewRequest("POST", base+"/api/rooms/durable/messages", strings.NewReader(`{"text":"`+text+`","author":"w"}`))
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					return // the server is gone
				}
				var m store.Message
				err = decodeJSON(resp, &m)
				if resp.StatusCode == http.StatusCreated && err == nil {
					mu.Lock()
					acked[m.ID] = text
					mu.Unlock()
				}
			}
		}()
	}
	// Kill right after a batch of acknowledgements, mid-stream.
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 300 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	stop()
	writers.Wait()
	w.Stop(t)
	before := w.Events()
	if len(before) < 2 {
		t.Fatalf("watcher saw %d events before the kill; want some messages", len(before))
	}
	// Resume from an id seen well before the kill, not only the last one.
	resumeAt := len(before) / 2
	lastID := before[resumeAt].ID

	startBinary(t, bin, port, dataDir)

	// Every acknowledged write survived.
	var page struct{ Messages []store.Message }
	have := map[string]bool{}
	for cursor := ""; ; {
		u := base + "/api/rooms/durable/messages?limit=200"
		if cursor != "" {
			u += "&before=" + cursor
		}
		if st, _ := doJSON(t, "GET", u, nil, nil, &page); st != http.StatusOK {
			t.Fatalf("list messages: status %d", st)
		}
		for _, m := range page.Messages {
			have[m.ID] = true
		}
		if len(page.Messages) < 200 {
			break
		}
		cursor = page.Messages[0].ID
	}
	for id, text := range acked {
		if !have[id] {
			t.Errorf("acknowledged message %s (%q) is missing after SIGKILL and restart", id, text)
		}
	}

	// The resumed client gets every message after its id exactly once.
	r := watch(t, base+"/api/rooms/durable/events", lastID)
	m := postMessage(t, base, "durable", "after restart")
	evs := r.WaitFor(t, "the post-restart message", func(evs []sseclient.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Name == "message" && payload(t, evs[len(evs)-1]).Message.ID == m.ID
	})
	checkOrdered(t, evs)
	seen := map[string]int{}
	for _, ev := range before[:resumeAt+1] {
		if ev.Name == "message" {
			seen[payload(t, ev).Message.ID]++
		}
	}
	for _, ev := range evs {
		if ev.Name != "message" {
			t.Fatalf("resumed stream carried %s %s; want only messages", ev.Name, ev.Data)
		}
		seen[payload(t, ev).Message.ID]++
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("message %s delivered %d times, want once", id, n)
		}
	}
	for id := range have {
		if seen[id] != 1 {
			t.Errorf("stored message %s never delivered to the resuming client", id)
		}
	}
	t.Logf("%d writes acknowledged before SIGKILL, %d stored, %d delivered across the restart", len(acked), len(have), len(seen))
}

func decodeJSON(resp *http.Response, v any) error {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return errors.New("empty body")
	}
	return jsonUnmarshal(b, v)
}

// TestSIGTERMBinary starts the built binary with PORT set, opens streams,
// sends SIGTERM, and checks that every stream ends cleanly and the process
// exits 0 within SHUTDOWN_TIMEOUT.
func TestSIGTERMBinary(t *testing.T) {
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 4 * time.Second
	port := freePort(t)
	cmd := exec.Command(bin, "-dev")
	var logs lockedBuffer
	cmd.Env = binaryEnv("PORT="+strconv.Itoa(port), "DATA_DIR="+t.TempDir(), "SHUTDOWN_TIMEOUT="+timeout.String())
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(base + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready within 30s\n%s", logs.String())
		}
	}

	const streams = 20
	ends := make(chan error, streams)
	var opened sync.WaitGroup
	for i := range streams {
		opened.Add(1)
		go func() {
			u := fmt.Sprintf("%s/api/rooms/term-%d/events", base, i%3)
			if i%2 == 1 {
				u = fmt.Sprintf("%s/api/events?topic=rooms/term-%d&topic=rooms/other", base, i%3)
			}
			resp, err := http.Get(u)
			if err != nil {
				opened.Done()
				ends <- err
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			_, err = br.ReadString('\n')
			opened.Done()
			if err != nil {
				ends <- err
				return
			}
			_, err = io.Copy(io.Discard, br)
			ends <- err
		}()
	}
	opened.Wait()
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; want status 0\n%s", err, logs.String())
		}
	case <-time.After(timeout + 10*time.Second):
		t.Fatalf("still running %s after SIGTERM\n%s", timeout+10*time.Second, logs.String())
	}
	if took := time.Since(start); took > timeout {
		t.Errorf("exit took %s after SIGTERM, more than SHUTDOWN_TIMEOUT=%s", took, timeout)
	}
	for range streams {
		if err := <-ends; err != nil {
			t.Errorf("stream did not end cleanly: %v", err)
		}
	}
}
