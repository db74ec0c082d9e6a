package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// syncedWrites is how many sequential acknowledged writes
// TestAcknowledgedWritesAreSynced checks.
const syncedWrites = 20

// TestAcknowledgedWritesAreSynced runs the built binary under strace and
// makes sequential writes, each waiting for its 201. A write may be
// acknowledged only once it is on disk, so between the request's arrival
// (the read that returns "POST ...") and its acknowledgement (the write
// of "HTTP/1.1 201" to the socket) an fdatasync or fsync of the database
// file must have returned. Each write arrives after the previous one was
// acknowledged, so no two can share a sync. A killed process keeps its
// page cache, so only the syscalls tell a synced write from one that is
// not.
//
// strace prints a thread's syscall exit before letting the thread go on,
// so a sync that returned before the acknowledgement was written is
// printed before it, whatever thread made it.
func TestAcknowledgedWritesAreSynced(t *testing.T) {
	straceBin, err := exec.LookPath("strace")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("strace is not installed, and CI is set: the durability test must run in CI (%v)", err)
		}
		t.Skipf("strace is not installed: acknowledged writes are not checked for an fsync (%v)", err)
	}
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port, dataDir := freePort(t), t.TempDir()
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	traceFile := filepath.Join(t.TempDir(), "strace.out")
	var straceErr bytes.Buffer
	cmd := exec.Command(straceBin, "-f", "-s", "32",
		"-e", "trace=openat,fdatasync,fsync,sync_file_range,read,write",
		"-o", traceFile, bin, "-dev")
	cmd.Env = binaryEnv("PORT="+strconv.Itoa(port), "DATA_DIR="+dataDir)
	cmd.Stderr = &straceErr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start strace: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	serverPID := 0
	t.Cleanup(func() {
		// Killing strace alone would leave the server running.
		if serverPID != 0 {
			_ = syscall.Kill(serverPID, syscall.SIGKILL)
		}
		_ = cmd.Process.Kill()
		<-waited
	})
	waitHealthy(t, base, waited, &straceErr)
	serverPID = tracedPID(t, traceFile)

	for i := range syncedWrites {
		if i%2 == 0 {
			postMessage(t, base, "durable", fmt.Sprint("m", i))
		} else {
			createOrder(t, base, fmt.Sprint("c", i))
		}
	}

	// Stop the server; strace ends with it and has written everything.
	if err := syscall.Kill(serverPID, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM the server (pid %d): %v", serverPID, err)
	}
	select {
	case <-waited:
		waited <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("server under strace did not stop within 30s of SIGTERM")
	}

	f, err := os.Open(traceFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := parseTrace(t, f, "/"+dbFileName)
	if len(tr.acks) != syncedWrites {
		t.Fatalf("saw %d acknowledgements (HTTP/1.1 201 written), want %d", len(tr.acks), syncedWrites)
	}
	if tr.dbFD < 0 {
		t.Fatalf("the trace shows no open of %s", dbFileName)
	}
	total := 0
	for k, ack := range tr.acks {
		arrived := -1 // the last request to arrive before the acknowledgement
		for _, p := range tr.posts {
			if p < ack {
				arrived = p
			}
		}
		if arrived < 0 || (k > 0 && arrived < tr.acks[k-1]) {
			t.Fatalf("acknowledgement %d (trace line %d) follows no request read since the previous one", k, ack+1)
		}
		n := 0
		for _, s := range tr.syncs {
			if s > arrived && s < ack {
				n++
			}
		}
		if n == 0 {
			t.Errorf("write %d was acknowledged with no fdatasync or fsync of %s (fd %d) returning between its arrival (trace line %d) and its acknowledgement (line %d)", k, dbFileName, tr.dbFD, arrived+1, ack+1)
		}
		total += n
	}
	if total < syncedWrites {
		t.Errorf("%d sequential acknowledged writes, %d syncs of the database file between their arrivals and acknowledgements; want at least one each", syncedWrites, total)
	}
	t.Logf("%d acknowledged writes, %d syncs of fd %d between arrivals and acknowledgements", syncedWrites, total, tr.dbFD)
}

// dbFileName is the embedded store's file in DATA_DIR (see store/bolt).
const dbFileName = "changecast.db"

// waitHealthy polls base/healthz until it answers 200, failing the test
// if the process ends first or after 60 s.
func waitHealthy(tb testing.TB, base string, waited chan error, stderr *bytes.Buffer) {
	tb.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-waited:
			waited <- err
			tb.Fatalf("server under strace exited before answering /healthz: %v\n%s", err, stderr.String())
		default:
		}
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("server under strace did not answer /healthz within 60s: %v", err)
		}
	}
}

// tracedPID returns the pid strace started: with -f every line begins
// with the pid of its thread, and the first is the main thread's.
func tracedPID(tb testing.TB, traceFile string) int {
	tb.Helper()
	f, err := os.Open(traceFile)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil {
		tb.Fatalf("read the first line of the trace: %v", err)
	}
	pid, err := strconv.Atoi(strings.Fields(line)[0])
	if err != nil {
		tb.Fatalf("first trace line %q does not start with a pid: %v", line, err)
	}
	return pid
}

// returnedRE matches a call that returned: name, arguments, result.
var returnedRE = regexp.MustCompile(`^([a-z_0-9]+)\((.*)\)\s+=\s+(\S+)`)

// trace is what parseTrace finds in strace -f output, as line numbers.
type trace struct {
	dbFD  int   // the fd of the database file, -1 if never opened
	posts []int // lines where a read returned the start of a POST request
	acks  []int // lines where a write of "HTTP/1.1 201" to a socket starts
	syncs []int // lines where an fdatasync, fsync or sync_file_range of dbFD returned 0
}

// parseTrace reads strace -f output (lines "PID call(args) = ret", or a
// call split over "PID call(args <unfinished ...>" and
// "PID <... call resumed>rest) = ret"). The database file is the last
// file opened whose path ends in dbSuffix before the first
// acknowledgement.
func parseTrace(tb testing.TB, f *os.File, dbSuffix string) trace {
	tb.Helper()
	tr := trace{dbFD: -1}
	pending := map[string]string{} // pid → start of an unfinished call
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 0; sc.Scan(); n++ {
		pid, rest, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		rest = strings.TrimLeft(rest, " ")
		var call string // the whole call once it has returned, else ""
		switch {
		case strings.HasSuffix(rest, " <unfinished ...>"):
			start := strings.TrimSuffix(rest, " <unfinished ...>")
			pending[pid] = start
			if isAck(start) {
				tr.acks = append(tr.acks, n)
			}
		case strings.HasPrefix(rest, "<... "):
			_, tail, ok := strings.Cut(rest, " resumed>")
			start, had := pending[pid]
			if !ok || !had {
				continue
			}
			delete(pending, pid)
			call = start + tail
		default:
			call = rest
			if isAck(call) {
				tr.acks = append(tr.acks, n)
			}
		}
		if call == "" {
			continue
		}
		m := returnedRE.FindStringSubmatch(call)
		if m == nil {
			continue
		}
		name, args, ret := m[1], m[2], m[3]
		switch name {
		case "read":
			// Go's server may read a request's first byte alone (its
			// background read of an idle connection), then the rest.
			_, data, _ := strings.Cut(args, ", ")
			if got, err := strconv.Atoi(ret); err == nil && got > 0 && (strings.HasPrefix(data, `"P", `) || strings.HasPrefix(data, `"POST `)) {
				tr.posts = append(tr.posts, n)
			}
		case "openat":
			// bbolt's own descriptor is the one opened read-write; the
			// store's writing ahead of the pages opens it write-only.
			if fd, err := strconv.Atoi(ret); err == nil && fd >= 0 && len(tr.acks) == 0 &&
				strings.Contains(args, dbSuffix+`"`) && strings.Contains(args, "O_RDWR") {
				tr.dbFD = fd
			}
		case "fdatasync", "fsync", "sync_file_range":
			first, _, _ := strings.Cut(args, ",")
			if fd, err := strconv.Atoi(strings.TrimSpace(first)); err == nil && fd == tr.dbFD && ret == "0" {
				tr.syncs = append(tr.syncs, n)
			}
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("read the trace: %v", err)
	}
	return tr
}

// isAck reports whether a call (or its start) writes the status line of
// a 201 response.
func isAck(call string) bool {
	return strings.HasPrefix(call, "write(") && strings.Contains(call, `"HTTP/1.1 201 `)
}
