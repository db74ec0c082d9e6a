package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// binDir holds the binary built by buildBinary; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinary builds cmd/changecast once per test binary: with -race when
// the tests are built with -race, and without version control stamping
// (TestVersionOfBuiltBinary builds its own).
var buildBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "changecast-bin-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "changecast")
	args := []string{"build", "-buildvcs=false", "-o", bin}
	if raceBuild {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, "changecast/cmd/changecast")...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// mustBinary is buildBinary failing tb on an error.
func mustBinary(tb testing.TB) string {
	tb.Helper()
	bin, err := buildBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}

// binaryEnv is the environment of a process under test: PATH, HOME and
// TMPDIR of the tests' own, GORACE, then vars ("NAME=value"). Nothing
// else is inherited (MONGODB_URI, say, only when a test passes it).
// GORACE starts with atexit_sleep_ms=0: a binary built with -race
// otherwise sleeps a second before it exits, on every stop of every
// server (races are reported when they happen, not at exit; the caller's
// own GORACE options follow and win).
func binaryEnv(vars ...string) []string {
	var env []string
	for _, k := range []string{"PATH", "HOME", "TMPDIR"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	env = append(env, strings.TrimSpace("GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE")))
	return append(env, vars...)
}

// envList turns a map into "NAME=value" entries.
func envList(m map[string]string) []string {
	var l []string
	for k, v := range m {
		l = append(l, k+"="+v)
	}
	return l
}

// runBinary runs the binary with args and env (on top of binaryEnv) until
// it exits, its output into stdout and stderr. When ctx ends it is sent
// SIGINT (Ctrl-C), and killed if it has not exited 10 s later. The error
// is nil for an exit status of 0.
func runBinary(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	bin, err := buildBinary()
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = binaryEnv(envList(env)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			cmd.Process.Signal(os.Interrupt)
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
			}
		case <-exited:
		}
	}()
	err = cmd.Wait()
	close(exited)
	return err
}

// exitFailure is the binary's exit status for a failure (2 is a usage
// error).
const exitFailure = 1

// exitCode is the exit status runBinary's error carries (0 for nil).
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// startBinary runs the built binary with -dev on port and dataDir and
// waits until it answers /healthz.
func startBinary(tb testing.TB, bin string, port int, dataDir string) *exec.Cmd {
	tb.Helper()
	return startBinaryWith(tb, tb, bin, port, dataDir, io.Discard)
}

// startBinaryWith runs the built binary with -dev on port and dataDir and
// env added, its output into out, and waits until it answers /healthz.
// The process is killed when owner's test ends. If out can print itself
// (a lockedBuffer), a failure to start shows what the server said.
func startBinaryWith(tb, owner testing.TB, bin string, port int, dataDir string, out io.Writer, env ...string) *exec.Cmd {
	tb.Helper()
	return startBinaryArgs(tb, owner, bin, []string{"-dev"}, port, dataDir, out, env...)
}

// startBinaryArgs is startBinaryWith with args instead of -dev.
func startBinaryArgs(tb, owner testing.TB, bin string, args []string, port int, dataDir string, out io.Writer, env ...string) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = binaryEnv(append([]string{"PORT=" + strconv.Itoa(port), "DATA_DIR=" + dataDir, "HEARTBEAT_INTERVAL=1s"}, env...)...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	owner.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			said := ""
			if s, ok := out.(fmt.Stringer); ok {
				said = "\n" + s.String()
			}
			tb.Fatalf("binary did not answer /healthz within 30s: %v%s", err, said)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
