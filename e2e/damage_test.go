package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"changecast/store"
)

// TestDamagedStoreFile damages the store file of a stopped server in the
// ways a torn disk or a bad copy does and starts the built binary on it:
// each time it must exit 1 with one message naming the file and saying
// what to do, never a Go crash (a signal, a panic, a goroutine dump).
func TestDamagedStoreFile(t *testing.T) {
	t.Parallel()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	// A store with a few hundred changes, left by a clean stop.
	dataDir := t.TempDir()
	port := freePort(t)
	cmd := startBinary(t, bin, port, dataDir)
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 300 {
		body := fmt.Sprintf(`{"author":"a","text":"%s"}`, strings.Repeat("x", 50+i%100))
		resp, err := client.Post(fmt.Sprintf("http://127.0.0.1:%d/api/rooms/room-%d/messages", port, i%5), "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("post: %s", resp.Status)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("clean stop: %v", err)
	}
	clean, err := os.ReadFile(filepath.Join(dataDir, "changecast.db"))
	if err != nil {
		t.Fatal(err)
	}
	page := binary.LittleEndian.Uint32(clean[16+8:]) // the meta's page size
	used := int(binary.LittleEndian.Uint64(clean[16+40:])) * int(page)

	tests := []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"last page in use cut off", func(b []byte) []byte { return b[:used-int(page)] }},
		{"cut in half", func(b []byte) []byte { return b[:len(b)/2] }},
		{"200 random bytes flipped outside the meta pages", func(b []byte) []byte {
			r := rand.New(rand.NewPCG(11, 3))
			for range 200 {
				b[2*int(page)+r.IntN(used-2*int(page))] ^= byte(1 + r.IntN(255))
			}
			return b
		}},
		{"metas rewritten with valid checksums, their root at a page of messages", func(b []byte) []byte {
			ps := int(page)
			for id := used/ps - 1; id >= 2; id-- {
				p := b[id*ps : (id+1)*ps]
				if binary.LittleEndian.Uint64(p) != uint64(id) || binary.LittleEndian.Uint16(p[8:]) != 0x02 || !bytes.Contains(p, []byte("room-")) {
					continue // not a leaf page holding messages
				}
				for _, at := range []int{16, ps + 16} {
					m := b[at : at+64]
					binary.LittleEndian.PutUint64(m[16:], uint64(id)) // the root
					h := fnv.New64a()
					h.Write(m[:56])
					binary.LittleEndian.PutUint64(m[56:], h.Sum64())
				}
				return b
			}
			panic("no leaf page of messages")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "changecast.db")
			if err := os.WriteFile(path, tt.damage(bytes.Clone(clean)), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stderr := runDamaged(t, bin, dir)
			if code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			for _, want := range []string{path, "damaged", "`changecast backup`", "`changecast check " + path + "`", "keep this file"} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not say %q", want)
				}
			}
			for _, crash := range []string{"goroutine ", "fatal error", "panic", "SIGBUS", "SIGSEGV"} {
				if strings.Contains(stderr, crash) {
					t.Errorf("stderr has %q", crash)
				}
			}
			if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, tt.damage(bytes.Clone(clean))) {
				t.Errorf("the damaged file was changed or removed (%v)", err)
			}
			if t.Failed() {
				t.Logf("stderr:\n%.4000s", stderr)
			}
		})
	}
}

// runDamaged runs the binary with -dev on dataDir and returns its exit
// code and stderr; it fails the test if the binary is still running after
// 30 s (it started despite the damage).
func runDamaged(t *testing.T, bin, dataDir string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, "-dev")
	cmd.Env = binaryEnv("PORT="+strconv.Itoa(freePort(t)), "DATA_DIR="+dataDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode(), stderr.String()
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the binary is still running on a damaged store after 30s; stderr:\n%.4000s", stderr.String())
		return 0, ""
	}
}

// TestLongestMessageSurvivesRestart: messages of the longest text the
// API accepts (larger than a page of the store file) are posted through
// HTTP, the server stops on SIGTERM and starts again on the same data
// directory, and serves them as written.
func TestLongestMessageSurvivesRestart(t *testing.T) {
	t.Parallel()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	port := freePort(t)
	out := &lockedBuffer{}
	cmd := startBinaryWith(t, t, bin, port, dataDir, out)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	texts := []string{
		strings.Repeat("x", store.MaxTextLen),
		strings.Repeat("é", 3000),
		strings.Repeat("😀", store.MaxTextLen),
	}
	var posted []store.Message
	for _, text := range texts {
		var m store.Message
		if code, _ := doJSON(t, http.MethodPost, base+"/api/rooms/lobby/messages", map[string]string{"author": "alice", "text": text}, nil, &m); code != http.StatusCreated {
			t.Fatalf("post a message of %d bytes: status %d", len(text), code)
		}
		posted = append(posted, m)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("clean stop: %v\n%s", err, out)
	}

	out = &lockedBuffer{}
	startBinaryWith(t, t, bin, port, dataDir, out)
	var page struct{ Messages []store.Message }
	if code, _ := doJSON(t, http.MethodGet, base+"/api/rooms/lobby/messages", nil, nil, &page); code != http.StatusOK {
		t.Fatalf("list messages after restart: status %d\n%s", code, out)
	}
	if len(page.Messages) != len(posted) {
		t.Fatalf("got %d messages after restart, want %d", len(page.Messages), len(posted))
	}
	for i, m := range page.Messages {
		if m.ID != posted[i].ID || m.Text != posted[i].Text {
			t.Errorf("message %d after restart: id %s, %d bytes; want id %s, %d bytes", i, m.ID, len(m.Text), posted[i].ID, len(posted[i].Text))
		}
	}
}
