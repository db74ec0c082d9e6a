package e2e

import (
	"bytes"
	"errors"
	"fmt"
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

// Environment of the child that runs the server under a file size
// limit (see TestFullDiskStart).
const (
	fsizeLimitEnv = "CHANGECAST_TEST_FSIZE"
	fsizeExecEnv  = "CHANGECAST_TEST_EXEC"
)

// TestFullDiskStart starts the built binary with DATA_DIR on a full
// filesystem, with no room left and with a few pages left: each start
// either fails saying the disk is full (never a crash) or starts. Then
// space is freed and the server must start on the same directory, with
// no help, and serve writes. The filesystem is a small tmpfs where this
// process may mount one (as root); elsewhere the server runs under a file
// size limit (RLIMIT_FSIZE), which fails writes the same way.
func TestFullDiskStart(t *testing.T) {
	if limit := os.Getenv(fsizeLimitEnv); limit != "" {
		execWithFileLimit(limit)
		return
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	mounted := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m") == nil
	if mounted {
		t.Cleanup(func() {
			if err := syscall.Unmount(mnt, 0); err != nil {
				t.Errorf("unmount %s: %v", mnt, err)
			}
		})
	} else {
		t.Log("cannot mount a tmpfs here: the server runs under a file size limit instead")
	}
	for _, free := range []int64{0, 4 << 10, 8 << 10, 12 << 10, 16 << 10, 24 << 10, 32 << 10, 48 << 10} {
		t.Run(fmt.Sprintf("%d KiB free", free>>10), func(t *testing.T) {
			dataDir := filepath.Join(mnt, fmt.Sprintf("data-%d", free))
			if err := os.Mkdir(dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			port := freePort(t)
			var cmd *exec.Cmd
			want := "file too large"
			if mounted {
				filler := fill(t, mnt, free)
				defer os.Remove(filler)
				cmd = exec.Command(bin, "-dev")
				want = "no space left on device"
			} else {
				cmd = exec.Command(os.Args[0], "-test.run=^TestFullDiskStart$")
				cmd.Env = append(cmd.Env, fsizeLimitEnv+"="+strconv.FormatInt(free, 10), fsizeExecEnv+"="+bin)
			}
			cmd.Env = binaryEnv(append(cmd.Env, "PORT="+strconv.Itoa(port), "DATA_DIR="+dataDir)...)
			first := startOrFail(t, cmd, port)
			if first != "" {
				if !strings.Contains(first, want) {
					t.Errorf("the start on a full disk said %q, want %q", first, want)
				}
				for _, crash := range []string{"goroutine ", "fatal error", "panic", "SIGBUS", "SIGSEGV"} {
					if strings.Contains(first, crash) {
						t.Errorf("the start on a full disk crashed: %q", first)
					}
				}
			}
			left := int64(-1)
			if st, err := os.Stat(filepath.Join(dataDir, "changecast.db")); err == nil {
				left = st.Size()
			}
			t.Logf("first start: %q; store file left: %d bytes", lastLine(first), left)

			if mounted {
				os.Remove(filepath.Join(mnt, "filler"))
			}
			out := &lockedBuffer{}
			startBinaryWith(t, t, bin, port, dataDir, out)
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			var m store.Message
			if code, _ := doJSON(t, http.MethodPost, base+"/api/rooms/lobby/messages", map[string]string{"author": "a", "text": "after"}, nil, &m); code != http.StatusCreated {
				t.Fatalf("post after space was freed: status %d\n%s", code, out)
			}
			var page struct{ Messages []store.Message }
			if code, _ := doJSON(t, http.MethodGet, base+"/api/rooms/lobby/messages", nil, nil, &page); code != http.StatusOK || len(page.Messages) == 0 || page.Messages[len(page.Messages)-1].ID != m.ID {
				t.Fatalf("list after space was freed: status %d, %d messages", code, len(page.Messages))
			}
		})
	}
}

// fill fills the filesystem at dir but for free bytes with a file
// "filler" in it, and returns its path.
func fill(tb testing.TB, dir string, free int64) string {
	tb.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	for _, chunk := range []int{64 << 10, 4 << 10} {
		buf := bytes.Repeat([]byte{1}, chunk)
		for {
			if _, err = f.Write(buf); err != nil {
				break
			}
		}
		if !errors.Is(err, syscall.ENOSPC) {
			tb.Fatalf("fill %s: %v", dir, err)
		}
	}
	st, err := f.Stat()
	if err != nil {
		tb.Fatal(err)
	}
	if err := f.Truncate(st.Size() - free); err != nil {
		tb.Fatal(err)
	}
	return path
}

// startOrFail starts cmd, a server on port, and waits until it exits
// or answers /healthz. It returns its output if it exited, and "" if it
// started (it is then stopped with SIGTERM).
func startOrFail(tb testing.TB, cmd *exec.Cmd, port int) string {
	tb.Helper()
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-done:
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				tb.Errorf("exit code %d, want 1", code)
			}
			return out.String()
		default:
		}
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", port)); err == nil {
			resp.Body.Close()
			cmd.Process.Signal(syscall.SIGTERM)
			<-done
			return ""
		}
	}
	cmd.Process.Kill()
	<-done
	tb.Fatalf("the server neither started nor exited within 30s:\n%s", out)
	return ""
}

// lastLine returns the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// execWithFileLimit sets this process's file size limit to limit bytes
// and becomes the server named by fsizeExecEnv (with -dev).
func execWithFileLimit(limit string) {
	n, err := strconv.ParseUint(limit, 10, 64)
	if err == nil {
		err = syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: n})
	}
	if err == nil {
		bin := os.Getenv(fsizeExecEnv)
		err = syscall.Exec(bin, []string{bin, "-dev"}, os.Environ())
	}
	fmt.Fprintln(os.Stderr, "exec under a file size limit:", err)
	os.Exit(2)
}
