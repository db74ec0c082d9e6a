package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"changecast/handlers"
)

// Credentials of the hostile-client tests' server.
const (
	hostileSecret       = "hostile-test-secret-of-at-least-32-bytes"
	hostileMetricsToken = "hostile-test-metrics-token"
)

// hostileWait bounds every wait of these tests for something the server
// should do at once or within a timeout of a few seconds: generous, so a
// slow machine does not fail them; far shorter than "never".
const hostileWait = 20 * time.Second

// TestHostileConnections starts the built binary (with JWT auth) and
// plays clients that try to hold its connections: bodies that never
// arrive, idle keep-alive connections, more connections than
// MAX_CONNECTIONS; and checks that a stream outlives every one of those
// timeouts.
func TestHostileConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the binary")
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		run  func(t *testing.T, s hostileServer)
	}{
		{
			// BODY_TIMEOUT is long: the answer must not wait for it.
			name: "refused request with an unsent body is answered at once and closed",
			env:  map[string]string{"BODY_TIMEOUT": "5m"},
			run: func(t *testing.T, s hostileServer) {
				c := s.dial(t)
				resp := slowBody(t, c, "")
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("status %d, want 401", resp.StatusCode)
				}
				wantClosed(t, c, resp)
			},
		},
		{
			name: "body that stops arriving is cut at BODY_TIMEOUT",
			env:  map[string]string{"BODY_TIMEOUT": "1s"},
			run: func(t *testing.T, s hostileServer) {
				c := s.dial(t)
				resp := slowBody(t, c, hostileToken(t))
				if resp.StatusCode != http.StatusRequestTimeout {
					t.Errorf("status %d, want 408", resp.StatusCode)
				}
				wantClosed(t, c, resp)
			},
		},
		{
			name: "idle keep-alive connection is closed at IDLE_TIMEOUT",
			env:  map[string]string{"IDLE_TIMEOUT": "1s"},
			run: func(t *testing.T, s hostileServer) {
				c := s.dial(t)
				c.SetDeadline(time.Now().Add(hostileWait))
				io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
				br := bufio.NewReader(c)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("no answer: %v", err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.Close {
					t.Fatal("answer closes the connection; want keep-alive")
				}
				if _, err := br.ReadByte(); !isClosed(err) {
					t.Errorf("idle connection still open (read: %v); want it closed", err)
				}
			},
		},
		{
			name: "stream outlives the body, idle and reserve timeouts",
			env:  map[string]string{"BODY_TIMEOUT": "1s", "IDLE_TIMEOUT": "1s", "MAX_CONNECTIONS": "50"},
			run: func(t *testing.T, s hostileServer) {
				tok := hostileToken(t)
				req, _ := http.NewRequest(http.MethodGet, s.base+"/api/rooms/lobby/events", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultTransport.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("stream status %d", resp.StatusCode)
				}
				lines := make(chan string)
				go func() {
					defer close(lines)
					sc := bufio.NewScanner(resp.Body)
					for sc.Scan() {
						lines <- sc.Text()
					}
				}()
				// HEARTBEAT_INTERVAL is 1 s: four pings are past every
				// timeout above (1 s, 1 s, the health reserve's probation, 2 s).
				timer := time.NewTimer(hostileWait)
				defer timer.Stop()
				for pings := 0; pings < 4; {
					select {
					case l, ok := <-lines:
						if !ok {
							t.Fatalf("stream ended after %d pings; want it open", pings)
						}
						if strings.HasPrefix(l, ":") {
							pings++
						}
					case <-timer.C:
						t.Fatalf("only %d pings within %s", pings, hostileWait)
					}
				}
				code, _ := doJSON(t, http.MethodPost, s.base+"/api/rooms/lobby/messages", map[string]string{"text": "still here"},
					http.Header{"Authorization": {"Bearer " + tok}}, nil)
				if code != http.StatusCreated {
					t.Fatalf("post message: status %d", code)
				}
				for {
					select {
					case l, ok := <-lines:
						if !ok {
							t.Fatal("stream ended before the message")
						}
						if strings.Contains(l, "still here") {
							resp.Body.Close()
							for range lines {
							}
							return
						}
					case <-timer.C:
						t.Fatalf("message not on the stream within %s", hostileWait)
					}
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, startHostile(t, tc.env))
		})
	}
}

// hostileServer is the built binary running for one case.
type hostileServer struct {
	base, addr string
	logs       *lockedBuffer
}

// startHostile runs the built binary with JWT auth, METRICS_TOKEN, a 1 s
// heartbeat and env, and waits until it answers /healthz.
func startHostile(t *testing.T, env map[string]string) hostileServer {
	t.Helper()
	bin, err := buildBinary()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cmd := exec.Command(bin)
	cmd.Env = binaryEnv("PORT="+strconv.Itoa(port), "DATA_DIR="+t.TempDir(), "HEARTBEAT_INTERVAL=1s",
		"JWT_SECRET="+hostileSecret, "METRICS_TOKEN="+hostileMetricsToken)
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	s := hostileServer{addr: fmt.Sprintf("127.0.0.1:%d", port), logs: &lockedBuffer{}}
	s.base = "http://" + s.addr
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("server log:\n%s", s.logs)
		}
	})
	s.poll(t, "/healthz", nil, func(code int, _ string) bool { return code == http.StatusOK })
	return s
}

// dial opens a raw connection to the server.
func (s hostileServer) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// poll asks for path, each time on a new connection, until ok accepts
// the answer or hostileWait passes (then the test fails). It returns the
// last status.
func (s hostileServer) poll(t *testing.T, path string, prepare func(*http.Request), ok func(code int, body string) bool) int {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	var last string
	code := 0
	for deadline := time.Now().Add(hostileWait); ; time.Sleep(50 * time.Millisecond) {
		req, _ := http.NewRequest(http.MethodGet, s.base+path, nil)
		if prepare != nil {
			prepare(req)
		}
		resp, err := client.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			code, last = resp.StatusCode, string(b)
			if ok(code, last) {
				return code
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: no acceptable answer within %s; last: %d %.500s", path, hostileWait, code, last)
		}
	}
}

// hostileToken returns a staff token for the test server.
func hostileToken(t *testing.T) string {
	t.Helper()
	tok, err := handlers.IssueToken([]byte(hostileSecret), "hostile", handlers.RoleStaff, []string{"*"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// slowBody sends an order whose Content-Length promises 100 bytes and
// whose body stops after one, with token (none if empty), and returns the
// answer, which must come within hostileWait.
func slowBody(t *testing.T, c net.Conn, token string) *http.Response {
	t.Helper()
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	c.SetDeadline(time.Now().Add(hostileWait))
	_, err := io.WriteString(c, "POST /api/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+auth+"Content-Length: 100\r\n\r\n{")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer while the body is unsent: %v", err)
	}
	return resp
}

// wantClosed checks that resp says the connection closes, and that it
// does once the answer is read.
func wantClosed(t *testing.T, c net.Conn, resp *http.Response) {
	t.Helper()
	if !resp.Close {
		t.Errorf("answer without Connection: close (headers %v)", resp.Header)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); !isClosed(err) {
		t.Errorf("connection still open after the answer (read: %v)", err)
	}
}

// isClosed reports whether a read error means the server closed the
// connection (not that the read timed out).
func isClosed(err error) bool {
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		return false
	}
	return true
}

// metricValue returns the value of an unlabelled metric in a Prometheus
// text exposition.
func metricValue(body, name string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
