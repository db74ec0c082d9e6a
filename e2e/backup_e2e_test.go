package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"changecast/handlers"
	"changecast/internal/sseclient"
	"changecast/protocol"
	"changecast/store"
)

// backupSecret signs the tokens of the backup tests' servers.
const backupSecret = "backup-test-secret-0123456789abcdef"

// startAuthBinary runs the built binary with auth on (JWT_SECRET =
// backupSecret, no write bounds) on port and dataDir, and waits until it
// answers /healthz. It is killed when the test ends.
func startAuthBinary(tb testing.TB, bin string, port int, dataDir string, logs *lockedBuffer) *exec.Cmd {
	tb.Helper()
	cmd := exec.Command(bin)
	cmd.Env = binaryEnv("PORT="+strconv.Itoa(port), "DATA_DIR="+dataDir, "JWT_SECRET="+backupSecret,
		"WRITES_PER_SECOND=-1", "HEARTBEAT_INTERVAL=1s")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-waited
	})
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		select {
		case err := <-waited:
			waited <- err
			tb.Fatalf("server exited before answering /healthz: %v\n%s", err, logs)
		default:
		}
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return cmd
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("server did not answer /healthz within 30s\n%s", logs)
		}
	}
}

// issue returns a token signed with backupSecret.
func issue(tb testing.TB, sub, role string) string {
	tb.Helper()
	tok, err := handlers.IssueToken([]byte(backupSecret), sub, role, []string{"*"}, time.Hour, time.Now())
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// runCLI runs the built binary with args and env added and returns its
// exit status, stdout and stderr.
func runCLI(tb testing.TB, bin string, env []string, args ...string) (int, string, string) {
	tb.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = binaryEnv(env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		tb.Fatalf("run %s: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// postAs posts a message to room with tok and returns it, or an error.
func postAs(base, tok, room, text string) (store.Message, error) {
	body, _ := json.Marshal(map[string]string{"text": text})
	req, _ := http.NewRequest(http.MethodPost, base+"/api/rooms/"+room+"/messages", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return store.Message{}, err
	}
	defer resp.Body.Close()
	var m store.Message
	if resp.StatusCode != http.StatusCreated {
		return m, fmt.Errorf("post: %s", resp.Status)
	}
	return m, json.NewDecoder(resp.Body).Decode(&m)
}

// checkHeadRE finds the head position in check's report.
var checkHeadRE = regexp.MustCompile(`\(head ([0-9a-f]{8}-[0-9a-f]{16})\)`)

// TestBackupRestore runs the built binary with auth on, writes to it
// from several writers, and while they write takes a backup with
// `changecast backup` and a staff token from $CHANGECAST_TOKEN. `changecast
// check` must accept the copy and count what it holds; a second server
// started on the copy must hold every write acknowledged before the
// backup began, and a stream resumed there with an id seen on the first
// server before the backup must get exactly the copy's later changes.
func TestBackupRestore(t *testing.T) {
	t.Parallel()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	staff := issue(t, "ops", handlers.RoleStaff)
	logsA := &lockedBuffer{}
	portA := freePort(t)
	baseA := fmt.Sprintf("http://127.0.0.1:%d", portA)
	startAuthBinary(t, bin, portA, t.TempDir(), logsA)
	const room = "backup"
	events := watch(t, baseA+"/api/rooms/"+room+"/events?access_token="+staff, "")
	events.WaitFor(t, "the snapshot", func(evs []sseclient.Event) bool { return len(evs) > 0 })

	// Writers: messages (some larger than a page) and orders, each
	// remembered once acknowledged.
	var (
		mu       sync.Mutex
		messages = map[string]string{} // id → text
		orders   = map[string]store.Order{}
		acked    atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w := range 3 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				text := fmt.Sprintf("w%d-%d %s", w, i, strings.Repeat("\U0001F600", (i*397)%store.MaxTextLen))
				m, err := postAs(baseA, staff, room, text)
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				var o store.Order
				code, _ := doJSON(t, "POST", baseA+"/api/orders", map[string]any{"customer": fmt.Sprintf("c%d", w),
					"items": []store.Item{{SKU: strings.Repeat("s", store.MaxNameLen), Qty: i%store.MaxQty + 1}}},
					http.Header{"Authorization": {"Bearer " + staff}}, &o)
				if code != http.StatusCreated {
					t.Errorf("writer %d: create order: %d", w, code)
					return
				}
				mu.Lock()
				messages[m.ID], orders[o.ID] = m.Text, o
				mu.Unlock()
				acked.Add(2)
			}
		})
	}
	for acked.Load() < 60 {
		time.Sleep(10 * time.Millisecond)
	}
	// What is acknowledged now must be in the copy; what the stream has
	// delivered now is the client's resume point.
	mu.Lock()
	before := map[string]string{}
	for id, text := range messages {
		before[id] = text
	}
	ordersBefore := map[string]store.Order{}
	for id, o := range orders {
		ordersBefore[id] = o
	}
	mu.Unlock()
	seen := events.Events()
	lastID := seen[len(seen)-1].ID

	file := filepath.Join(t.TempDir(), "changecast.db")
	// A customer's token, or none, gets nothing.
	for _, env := range [][]string{{"CHANGECAST_TOKEN=" + issue(t, "c0", handlers.RoleCustomer)}, {"CHANGECAST_TOKEN="}} {
		code, _, errOut := runCLI(t, bin, env, "backup", "-url", baseA, "-o", file)
		if _, err := os.Stat(file); code != 1 || !strings.Contains(errOut, "staff token") || !os.IsNotExist(err) {
			t.Errorf("backup with %s: exit %d, file %v, stderr:\n%s\nwant exit 1 naming a staff token, and no file", env, code, err, errOut)
		}
	}
	code, out, errOut := runCLI(t, bin, []string{"CHANGECAST_TOKEN=" + staff}, "backup", "-url", baseA, "-o", file)
	if code != 0 {
		t.Fatalf("backup: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	atBackup := acked.Load()
	for acked.Load() < atBackup+30 {
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if _, err := os.Stat(file + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("backup left %s.tmp behind", file)
	}

	code, report, errOut := runCLI(t, bin, nil, "check", file)
	if code != 0 || !strings.HasSuffix(report, "ok\n") {
		t.Fatalf("check of the copy: exit %d\nstdout:\n%s\nstderr:\n%s", code, report, errOut)
	}
	m := regexp.MustCompile(`orders: (\d+) \(\d+ active\)\n  messages: (\d+)\n`).FindStringSubmatch(report)
	head := checkHeadRE.FindStringSubmatch(report)
	if m == nil || head == nil {
		t.Fatalf("check's report does not count orders and messages or give the head:\n%s", report)
	}
	nOrders, _ := strconv.Atoi(m[1])
	nMessages, _ := strconv.Atoi(m[2])
	if nOrders < len(ordersBefore) || nMessages < len(before) || nOrders > len(orders) || nMessages > len(messages) {
		t.Errorf("check counts %d orders and %d messages; %d and %d were acknowledged before the backup, %d and %d in all",
			nOrders, nMessages, len(ordersBefore), len(before), len(orders), len(messages))
	}

	// A second server on the copy.
	dirB := t.TempDir()
	if err := os.Rename(file, filepath.Join(dirB, dbFileName)); err != nil {
		t.Fatal(err)
	}
	portB := freePort(t)
	baseB := fmt.Sprintf("http://127.0.0.1:%d", portB)
	startAuthBinary(t, bin, portB, dirB, &lockedBuffer{})
	auth := http.Header{"Authorization": {"Bearer " + staff}}
	for id, want := range ordersBefore {
		var got store.Order
		if code, _ := doJSON(t, "GET", baseB+"/api/orders/"+id, nil, auth, &got); code != http.StatusOK ||
			got.Customer != want.Customer || !slices.Equal(got.Items, want.Items) {
			t.Errorf("order %s on the restored server: %d %+v, want %+v", id, code, got, want)
		}
	}
	restored := map[string]string{}
	for beforeID := ""; ; {
		var page struct{ Messages []store.Message }
		url := baseB + "/api/rooms/" + room + "/messages?limit=200"
		if beforeID != "" {
			url += "&before=" + beforeID
		}
		if code, _ := doJSON(t, "GET", url, nil, auth, &page); code != http.StatusOK {
			t.Fatalf("list messages on the restored server: %d", code)
		}
		for _, m := range page.Messages {
			restored[m.ID] = m.Text
		}
		if len(page.Messages) < 200 {
			break
		}
		beforeID = page.Messages[0].ID
	}
	for id, text := range before {
		if restored[id] != text {
			t.Errorf("message %s, acknowledged before the backup, is not on the restored server", id)
		}
	}
	if len(restored) != nMessages {
		t.Errorf("the restored server holds %d messages, check counted %d", len(restored), nMessages)
	}

	// The first server's events up to the copy's head, after lastID: what
	// a client resuming from lastID on the copy must get, id for id.
	all := events.WaitFor(t, "the first server's events up to the copy's head", func(evs []sseclient.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].ID >= head[1]
	})
	var want []string
	for _, ev := range all {
		if ev.Name == "message" && ev.ID > lastID && ev.ID <= head[1] {
			want = append(want, ev.ID+" "+payload(t, ev).Message.ID)
		}
	}
	if len(want) == 0 {
		t.Fatalf("no change between the resume point %s and the copy's head %s: the test proves nothing", lastID, head[1])
	}
	resumed := watch(t, baseB+"/api/rooms/"+room+"/events?access_token="+staff, lastID)
	sentinel, err := postAs(baseB, staff, room, "after the restore")
	if err != nil {
		t.Fatal(err)
	}
	got := resumed.WaitFor(t, "the restored server's changes", func(evs []sseclient.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Name == "message" && payload(t, evs[len(evs)-1]).Message.ID == sentinel.ID
	})
	var gotIDs []string
	for _, ev := range got[:len(got)-1] {
		if ev.Name != "message" {
			t.Fatalf("resumed stream on the restored server: %s event, want only the changes after %s", ev.Name, lastID)
		}
		gotIDs = append(gotIDs, ev.ID+" "+payload(t, ev).Message.ID)
	}
	if !slices.Equal(gotIDs, want) {
		t.Errorf("resumed on the restored server from %s: got %d changes, want %d (the first server's up to %s)\n got %v\nwant %v",
			lastID, len(gotIDs), len(want), head[1], gotIDs, want)
	}
	if last := got[len(got)-1].ID; last <= head[1] {
		t.Errorf("the first write on the restored server has id %s, not after the copy's head %s", last, head[1])
	}
	// A client that saw a change the first server made after the copy
	// holds an id the restored server moved past: it is reset (history
	// lost) and gets a snapshot, even after the restored server wrote on,
	// rather than resuming over the restored server's own changes.
	var lostID string
	for _, ev := range events.Events() {
		if ev.Name == "message" && ev.ID > head[1] {
			lostID = ev.ID
		}
	}
	if lostID == "" {
		t.Fatalf("the first server's stream shows no change after the copy's head %s: the test proves nothing", head[1])
	}
	if _, err := postAs(baseB, staff, room, "after the restore, again"); err != nil {
		t.Fatal(err)
	}
	lost := watch(t, baseB+"/api/rooms/"+room+"/events?access_token="+staff, lostID)
	evs := lost.WaitFor(t, "a reset and a snapshot", func(evs []sseclient.Event) bool { return len(evs) >= 2 })
	if evs[0].Name != "reset" || payload(t, evs[0]).Reason != string(protocol.ResetHistoryLost) || evs[1].Name != "snapshot" {
		t.Errorf("resumed on the restored server from %s, made after the copy: %s; want a history-lost reset, then a snapshot", lostID, describe(evs))
	}
	t.Logf("%d writes acknowledged before the backup, %d in all; the copy holds %d orders and %d messages; a client resumed with %d changes",
		len(before)+len(ordersBefore), len(messages)+len(orders), nOrders, nMessages, len(gotIDs))
}

// TestBackupRefusesBadCopies serves `changecast backup` copies that are
// not whole: fewer bytes than the trailer says, a cut connection, and a
// whole answer whose file is not a sound store. Each time backup must
// exit 1 and leave neither FILE nor FILE.tmp; a good copy replaces FILE.
func TestBackupRefusesBadCopies(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	b := writeWhileDown(t, src, "lobby", "one", "two")
	if len(b) != 2 {
		t.Fatal("setup: no messages")
	}
	good, err := os.ReadFile(filepath.Join(src, dbFileName))
	if err != nil {
		t.Fatal(err)
	}
	serve := func(body []byte, size string, cut bool) *httptest.Server {
		return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/api/backup" || r.Header.Get("Authorization") != "Bearer tok" {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Trailer", handlers.HeaderBackupSize)
			w.Write(body)
			if cut {
				panic(http.ErrAbortHandler)
			}
			w.Header().Set(handlers.HeaderBackupSize, size)
		}))
	}
	for _, tt := range []struct {
		name  string
		srv   *httptest.Server
		want  string
		whole bool
	}{
		{"short of its trailer", serve(good[:len(good)-4096], strconv.Itoa(len(good)), false), "the server sent", false},
		{"cut connection", serve(good[:len(good)/2], "", true), "broke off", false},
		{"not a store", serve(bytes.Repeat([]byte("x"), 8192), "8192", false), "damaged", false},
		{"whole", serve(good, strconv.Itoa(len(good)), false), "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer tt.srv.Close()
			out := filepath.Join(t.TempDir(), "copy.db")
			if err := os.WriteFile(out, []byte("the previous copy"), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr strings.Builder
			code := exitCode(runBinary(t.Context(), []string{"backup", "-url", tt.srv.URL, "-o", out}, map[string]string{"CHANGECAST_TOKEN": "tok"}, &stdout, &stderr))
			_, tmpErr := os.Stat(out + ".tmp")
			data, _ := os.ReadFile(out)
			switch {
			case tt.whole && (code != 0 || !strings.Contains(stdout.String(), "messages: 2") || !strings.Contains(stdout.String(), "a backup copy")):
				t.Errorf("exit %d, %d bytes in FILE, stdout %q, stderr %q; want 0 and the copy", code, len(data), stdout.String(), stderr.String())
			case !tt.whole && (code != 1 || !strings.Contains(stderr.String(), tt.want) || string(data) != "the previous copy"):
				t.Errorf("exit %d, stderr %q, FILE %.20q; want 1 saying %q and FILE untouched", code, stderr.String(), data, tt.want)
			}
			if !os.IsNotExist(tmpErr) {
				t.Errorf("%s.tmp left behind", out)
			}
		})
	}
}
