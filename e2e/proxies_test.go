package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The proxy tests run changecast behind Debian's nginx, HAProxy and Caddy
// with the configurations docs/deploy.md gives (read from its code
// blocks), each proxy an unprivileged process on a loopback port with its
// files in a temporary directory. Under CI=true a missing proxy fails the
// test; elsewhere it skips, saying so.

// proxyKind is one reverse proxy the tests run.
type proxyKind struct {
	name, bin string
	// start runs the proxy on a free port in front of 127.0.0.1:upstream
	// with the docs' configuration after edits (each old text must be in
	// it).
	start func(t *testing.T, upstream int, edits ...string) *runningProxy
}

// runningProxy is a proxy process the test started.
type runningProxy struct {
	URL  string
	logs *lockedBuffer
	// reload reloads the configuration as an operator would. The channel
	// it returns is closed when the process (or nginx worker) that served
	// before the reload has exited; nil when the proxy reloads in place
	// (Caddy).
	reload func(t *testing.T) <-chan struct{}
}

var proxyKinds = []proxyKind{
	{"nginx", "nginx", startNginx},
	{"haproxy", "haproxy", startHAProxy},
	{"caddy", "caddy", startCaddy},
}

// needProxy skips (or, under CI=true, fails) unless k's binary is installed.
func needProxy(t *testing.T, k proxyKind) {
	t.Helper()
	if _, err := exec.LookPath(k.bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI=true): %v", k.bin, err)
		}
		t.Skipf("%s is not installed (apt-get install %s); skipped outside CI", k.bin, k.bin)
	}
}

// proxyConfig returns the configuration block of docs/deploy.md fenced as
// lang (nginx, haproxy or caddy) with edits applied (pairs of old and new
// text; each old text must be there). The doc is the configs' one home.
func proxyConfig(t *testing.T, lang string, edits ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "deploy.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, conf, ok := strings.Cut(string(b), "\n```"+lang+"\n")
	if ok {
		conf, _, ok = strings.Cut(conf, "\n```\n")
	}
	if !ok {
		t.Fatalf("docs/deploy.md has no ```%s block", lang)
	}
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(conf, edits[i]) {
			t.Fatalf("the %s block of docs/deploy.md has no %q to replace", lang, edits[i])
		}
		conf = strings.ReplaceAll(conf, edits[i], edits[i+1])
	}
	return conf + "\n"
}

// upstreamPort is the port of a server's URL.
func upstreamPort(t *testing.T, base string) int {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startProcess runs a proxy command, its output into logs, kills it and
// its children when the test ends, and returns a channel closed when it has exited.
func startProcess(t *testing.T, logs *lockedBuffer, env []string, name string, args ...string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logs, logs
	// A process group of its own: the cleanup kills nginx's workers too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	return cmd, exited
}

// waitListening waits until something accepts on 127.0.0.1:port. It
// returns false if the proxy exited because the port was taken meanwhile
// (freePort's port went to another test's listener): the caller starts
// again on another port.
func waitListening(t *testing.T, port int, logs *lockedBuffer, exited <-chan struct{}) bool {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; {
		select {
		case <-exited:
			if strings.Contains(strings.ToLower(logs.String()), "address already in use") {
				t.Logf("port %d was taken; starting the proxy on another", port)
				return false
			}
			t.Fatalf("proxy exited before listening:\n%s", logs)
		default:
		}
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return true
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy not listening on %d within 20s: %v\n%s", port, err, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func startNginx(t *testing.T, upstream int, edits ...string) *runningProxy {
	t.Helper()
	return startNginxWith(t, 1024, upstream, edits...)
}

// startNginxWith is startNginx with workerConns as the worker's
// worker_connections (and twice that as its open-file limit).
func startNginxWith(t *testing.T, workerConns, upstream int, edits ...string) *runningProxy {
	t.Helper()
	dir, port := t.TempDir(), freePort(t)
	// Workers may run as nobody when the test runs as root.
	os.Chmod(dir, 0o755)
	site := proxyConfig(t, "nginx", append([]string{
		"listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", port),
		"server 127.0.0.1:8080;", fmt.Sprintf("server 127.0.0.1:%d;", upstream),
	}, edits...)...)
	if err := os.WriteFile(filepath.Join(dir, "changecast.conf"), []byte(site), 0o644); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log notice;
worker_rlimit_nofile %[2]d;
events { worker_connections %[3]d; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	include %[1]s/changecast.conf;
}
`, dir, 2*workerConns, workerConns)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log")}
	logs := &lockedBuffer{}
	cmd, exited := startProcess(t, logs, nil, "nginx", args...)
	if !waitListening(t, port, logs, exited) {
		return startNginxWith(t, workerConns, upstream, edits...)
	}
	return &runningProxy{
		URL:  fmt.Sprintf("http://127.0.0.1:%d", port),
		logs: logs,
		reload: func(t *testing.T) <-chan struct{} {
			t.Helper()
			old := childPIDs(t, cmd.Process.Pid)
			if len(old) == 0 {
				t.Fatal("nginx has no worker")
			}
			if out, err := exec.Command("nginx", append(args, "-s", "reload")...).CombinedOutput(); err != nil {
				t.Fatalf("nginx -s reload: %v\n%s", err, out)
			}
			return pidsGone(old)
		},
	}
}

// childPIDs lists the children of pid.
func childPIDs(t *testing.T, pid int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatal(err)
		}
		pids = append(pids, n)
	}
	return pids
}

// pidsGone returns a channel closed once none of pids is a live process
// (nginx reaps its workers, so an exited one disappears).
func pidsGone(pids []int) <-chan struct{} {
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		for {
			alive := false
			for _, p := range pids {
				if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); err == nil && !strings.Contains(string(b), ") Z ") {
					alive = true
				}
			}
			if !alive {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	return gone
}

func startHAProxy(t *testing.T, upstream int, edits ...string) *runningProxy {
	t.Helper()
	dir, port := t.TempDir(), freePort(t)
	conf := proxyConfig(t, "haproxy", append([]string{
		"bind :80", fmt.Sprintf("bind 127.0.0.1:%d", port),
		"server app1 127.0.0.1:8080", fmt.Sprintf("server app1 127.0.0.1:%d", upstream),
	}, edits...)...)
	file := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	cmd, exited := startProcess(t, logs, nil, "haproxy", "-db", "-f", file)
	if !waitListening(t, port, logs, exited) {
		return startHAProxy(t, upstream, edits...)
	}
	return &runningProxy{
		URL:  fmt.Sprintf("http://127.0.0.1:%d", port),
		logs: logs,
		reload: func(t *testing.T) <-chan struct{} {
			t.Helper()
			// The new process takes over the port and tells the old one
			// (-sf) to stop listening and finish its connections.
			oldExited, stopped := exited, strings.Count(logs.String(), "Proxy web stopped")
			cmd, exited = startProcess(t, logs, nil, "haproxy", "-db", "-f", file, "-sf", strconv.Itoa(cmd.Process.Pid))
			// The old process says so when it has stopped listening.
			for deadline := time.Now().Add(10 * time.Second); strings.Count(logs.String(), "Proxy web stopped") == stopped; {
				if time.Now().After(deadline) {
					t.Fatalf("the old HAProxy did not stop listening within 10s:\n%s", logs)
				}
				time.Sleep(10 * time.Millisecond)
			}
			return oldExited
		},
	}
}

func startCaddy(t *testing.T, upstream int, edits ...string) *runningProxy {
	t.Helper()
	dir, port, admin := t.TempDir(), freePort(t), freePort(t)
	site := proxyConfig(t, "caddy", append([]string{
		"example.com {", fmt.Sprintf("http://127.0.0.1:%d {", port),
		"reverse_proxy 127.0.0.1:8080", fmt.Sprintf("reverse_proxy 127.0.0.1:%d", upstream),
	}, edits...)...)
	// The admin endpoint on a port of its own (parallel Caddys), no TLS
	// for a loopback address.
	global := fmt.Sprintf("{\n\tadmin 127.0.0.1:%d\n}\n\n", admin)
	file := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(file, []byte(global+site), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + dir, "XDG_DATA_HOME=" + dir, "XDG_CONFIG_HOME=" + dir}
	logs := &lockedBuffer{}
	_, exited := startProcess(t, logs, env, "caddy", "run", "--config", file, "--adapter", "caddyfile")
	if !waitListening(t, port, logs, exited) {
		return startCaddy(t, upstream, edits...)
	}
	return &runningProxy{
		URL:  fmt.Sprintf("http://127.0.0.1:%d", port),
		logs: logs,
		reload: func(t *testing.T) <-chan struct{} {
			t.Helper()
			cmd := exec.Command("caddy", "reload", "--force", "--config", file, "--adapter", "caddyfile", "--address", fmt.Sprintf("127.0.0.1:%d", admin))
			cmd.Env = append(os.Environ(), env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("caddy reload: %v\n%s", err, out)
			}
			return nil
		},
	}
}

// timedEvent is one SSE event and when it was read.
type timedEvent struct {
	at             time.Time
	id, name, data string
}

// proxiedStream is a stream read line by line, without a client library in
// between: events, comments and the stream's end.
type proxiedStream struct {
	resp     *http.Response
	events   chan timedEvent
	comments chan string
	ended    chan struct{}
	err      error     // how the body ended (nil: cleanly), read after ended
	endedAt  time.Time // when, read after ended
}

// openProxiedStream opens url with header through client, checks for a 200
// and reads it in the background until the test ends.
func openProxiedStream(t *testing.T, client *http.Client, url string, header http.Header) *proxiedStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		cancel()
		resp.Body.Close()
		t.Fatalf("GET %s: status %d", url, resp.StatusCode)
	}
	s := &proxiedStream{resp: resp, events: make(chan timedEvent, 1000), comments: make(chan string, 1000), ended: make(chan struct{})}
	go func() {
		defer close(s.ended)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev timedEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ev.at = time.Now()
					s.events <- ev
				}
				ev = timedEvent{}
			case strings.HasPrefix(line, ":"):
				s.comments <- line
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
		s.err, s.endedAt = sc.Err(), time.Now()
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-s.ended
	})
	return s
}

// next returns the next event that is not presence, failing after 20 s
// (a hang, not a speed limit) or if the stream ends.
func (s *proxiedStream) next(t *testing.T) timedEvent {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev := <-s.events:
			if ev.name == "presence" {
				continue
			}
			return ev
		case <-s.ended:
			t.Fatal("the stream ended")
		case <-timeout:
			t.Fatal("no event within 20s")
		}
	}
}

// plainClient never asks for compression on its own; keep-alive, one
// connection per stream.
func plainClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// clientFrom is a client whose connections come from the loopback
// address ip, so that a proxy forwards an address that is not its own.
func clientFrom(t *testing.T, ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestProxyEventDelay opens a stream through each proxy (asking for gzip)
// and one straight to changecast, posts messages one at a time and
// measures when each arrives on both. The proxied stream must come
// uncompressed with the stream headers, every message once and in order;
// the delays are logged (the bound of 2 s catches an event held until the
// next write or heartbeat, not a slow machine).
func TestProxyEventDelay(t *testing.T) {
	t.Parallel()
	for _, k := range proxyKinds {
		t.Run(k.name, func(t *testing.T) {
			needProxy(t, k)
			up := newE2EServer(t, map[string]string{"HEARTBEAT_INTERVAL": "15s"})
			p := k.start(t, upstreamPort(t, up.URL))
			client := plainClient(t)
			room := "delay-" + k.name
			via := openProxiedStream(t, client, p.URL+"/api/rooms/"+room+"/events", http.Header{"Accept-Encoding": {"gzip"}})
			if ce := via.resp.Header.Get("Content-Encoding"); ce != "" {
				t.Errorf("%s: stream came with Content-Encoding %q; want none (no-transform)", k.name, ce)
			}
			if cc := via.resp.Header.Get("Cache-Control"); cc != "no-cache, no-transform" {
				t.Errorf("%s: Cache-Control %q", k.name, cc)
			}
			direct := openProxiedStream(t, client, up.URL+"/api/rooms/"+room+"/events", nil)
			if ev := via.next(t); ev.name != "snapshot" {
				t.Fatalf("first event %s, want snapshot", ev.name)
			}
			direct.next(t)
			const n = 20
			var viaD, directD []time.Duration
			prev := ""
			for i := range n {
				sent := time.Now()
				postMessage(t, up.URL, room, fmt.Sprint("d", i))
				ev := via.next(t)
				if ev.name != "message" || !strings.Contains(ev.data, fmt.Sprintf(`"text":"d%d"`, i)) || ev.id <= prev {
					t.Fatalf("through %s: got %s %s %s after %s; want message d%d", k.name, ev.name, ev.id, ev.data, prev, i)
				}
				prev = ev.id
				viaD = append(viaD, ev.at.Sub(sent))
				directD = append(directD, direct.next(t).at.Sub(sent))
				if d := viaD[i]; d > 2*time.Second {
					t.Errorf("through %s: message %d came %v after the POST; held back", k.name, i, d)
				}
			}
			slices.Sort(viaD)
			slices.Sort(directD)
			t.Logf("%s: POST to event, %d messages: through the proxy median %v max %v; straight from changecast median %v max %v",
				k.name, n, viaD[n/2].Round(10*time.Microsecond), viaD[n-1].Round(10*time.Microsecond),
				directD[n/2].Round(10*time.Microsecond), directD[n-1].Round(10*time.Microsecond))
		})
	}
}

// TestProxyClientIP: with TRUSTED_PROXIES=127.0.0.1, the request log
// names the address the client connected to the proxy from (127.0.0.2),
// which only the proxy's X-Forwarded-For carries.
func TestProxyClientIP(t *testing.T) {
	t.Parallel()
	for _, k := range proxyKinds {
		t.Run(k.name, func(t *testing.T) {
			needProxy(t, k)
			up := newE2EServer(t, map[string]string{"TRUSTED_PROXIES": "127.0.0.1"})
			p := k.start(t, upstreamPort(t, up.URL))
			path := "/api/rooms/ip-" + k.name + "/messages"
			resp, err := clientFrom(t, "127.0.0.2").Get(p.URL + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("GET %s through %s: %d", path, k.name, resp.StatusCode)
			}
			waitLogLine(t, up.logs, "path="+path, "client=127.0.0.2")
		})
	}
}

// waitLogLine waits for a log line holding every one of parts.
func waitLogLine(t *testing.T, logs *lockedBuffer, parts ...string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		for _, l := range strings.Split(logs.String(), "\n") {
			ok := true
			for _, p := range parts {
				ok = ok && strings.Contains(l, p)
			}
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q:\n%s", parts, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestProxyIdleTimeout: a proxy that cuts a response idle for 3 s (less
// than the default heartbeat of 15 s) keeps a stream open for 8 s when
// HEARTBEAT_INTERVAL is lowered to 1 s, as docs/deploy.md says to do; a
// message then still comes on the same response. Caddy sets no such
// timeout.
func TestProxyIdleTimeout(t *testing.T) {
	t.Parallel()
	type open struct {
		name string
		up   *e2eServer
		s    *proxiedStream
	}
	var opened []open
	for _, k := range proxyKinds {
		var edits []string
		switch k.name {
		case "nginx":
			edits = []string{"proxy_read_timeout 1h;", "proxy_read_timeout 3s;"}
		case "haproxy":
			edits = []string{"timeout client 1h", "timeout client 3s", "timeout server 1h", "timeout server 3s", "timeout tunnel 1h", "timeout tunnel 3s"}
		default:
			continue
		}
		needProxy(t, k)
		up := newE2EServer(t, map[string]string{"HEARTBEAT_INTERVAL": "1s"})
		p := k.start(t, upstreamPort(t, up.URL), edits...)
		s := openProxiedStream(t, plainClient(t), p.URL+"/api/rooms/idle/events", nil)
		s.next(t)
		opened = append(opened, open{k.name, up, s})
	}
	time.Sleep(8 * time.Second)
	for _, o := range opened {
		select {
		case <-o.s.ended:
			t.Errorf("%s cut the stream with a 3 s idle timeout and HEARTBEAT_INTERVAL=1s", o.name)
			continue
		default:
		}
		if n := len(o.s.comments); n < 3 {
			t.Errorf("%s: %d heartbeats in 8 s, want at least 3", o.name, n)
		}
		postMessage(t, o.up.URL, "idle", "still here")
		if ev := o.s.next(t); ev.name != "message" {
			t.Errorf("%s: got %s, want the message", o.name, ev.name)
		}
	}
}

// TestProxyResumeAfterSIGKILL follows a stream through each proxy with the
// client module's follower, kills changecast with SIGKILL, restarts it on
// the same port and DATA_DIR (the proxy answers 502/503 meanwhile), and
// checks that the follower, resuming with Last-Event-ID through the
// proxy, has every message exactly once and in order.
func TestProxyResumeAfterSIGKILL(t *testing.T) {
	t.Parallel()
	bin := mustBinary(t)
	for _, k := range proxyKinds {
		t.Run(k.name, func(t *testing.T) {
			needProxy(t, k)
			port, dataDir := freePort(t), t.TempDir()
			base := fmt.Sprintf("http://127.0.0.1:%d", port)
			out := &lockedBuffer{}
			cmd := startBinaryWith(t, t, bin, port, dataDir, out)
			p := k.start(t, port)
			w := watch(t, p.URL+"/api/rooms/kill/events", "")
			w.WaitN(t, 1)
			for i := range 5 {
				postMessage(t, base, "kill", fmt.Sprint("k", i))
			}
			w.WaitN(t, 6)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			time.Sleep(300 * time.Millisecond) // the follower meets the proxy's error page
			startBinaryWith(t, t, bin, port, dataDir, out)
			for i := 5; i < 10; i++ {
				postMessage(t, base, "kill", fmt.Sprint("k", i))
			}
			w.WaitN(t, 11)
			time.Sleep(200 * time.Millisecond) // a duplicate would come now
			evs := w.Events()
			checkOrdered(t, evs)
			if len(evs) != 11 || evs[0].Name != "snapshot" {
				t.Fatalf("through %s: %d events, want the snapshot and 10 messages:%s", k.name, len(evs), describe(evs))
			}
			for i, ev := range evs[1:] {
				if ev.Name != "message" || payload(t, ev).Message.Text != fmt.Sprint("k", i) {
					t.Fatalf("through %s: event %d is %s %s, want message k%d", k.name, i+1, ev.Name, ev.Data, i)
				}
			}
		})
	}
}

// TestProxyReload reloads each proxy while a stream is open through it,
// with STREAM_MAX_AGE=1m (the smallest allowed). nginx's old worker and
// HAProxy's old process keep serving the stream (a message posted after
// the reload still comes on it); changecast ends it cleanly within the
// minute, and the old process exits within the minute and a grace (HAProxy
// also waits for the client's idle connection: timeout http-keep-alive).
// With STREAM_MAX_AGE=0 neither ever happens while the client stays.
// Caddy reloads in place and ends the stream at once (its client resumes
// from its last id); that time is logged. The three proxies reload at
// once.
func TestProxyReload(t *testing.T) {
	t.Parallel()
	const maxAge = time.Minute
	type reloading struct {
		name    string
		s       *proxiedStream
		at      time.Time
		oldGone <-chan struct{}
		logs    *lockedBuffer
		goneAt  func() time.Time
	}
	var rs []reloading
	for _, k := range proxyKinds {
		needProxy(t, k)
		up := newE2EServer(t, map[string]string{"STREAM_MAX_AGE": maxAge.String(), "HEARTBEAT_INTERVAL": "15s"})
		p := k.start(t, upstreamPort(t, up.URL))
		s := openProxiedStream(t, plainClient(t), p.URL+"/api/rooms/reload/events", nil)
		s.next(t)
		at := time.Now()
		gone := p.reload(t)
		if gone != nil {
			// The old process still carries the stream's events.
			postMessage(t, up.URL, "reload", "after reload")
			if ev := s.next(t); ev.name != "message" {
				t.Fatalf("%s: got %s after the reload, want the message", k.name, ev.name)
			}
		}
		// A new stream goes through the reloaded proxy.
		openProxiedStream(t, plainClient(t), p.URL+"/api/rooms/reload/events", nil).next(t)
		rs = append(rs, reloading{k.name, s, at, gone, p.logs, whenClosed(gone)})
	}
	// The old process may also wait for the client's connection, idle
	// once the stream has ended, up to HAProxy's timeout http-keep-alive.
	limit := time.After(maxAge + 20*time.Second)
	for _, r := range rs {
		select {
		case <-r.s.ended:
		case <-limit:
			t.Fatalf("%s: the stream open across the reload did not end within STREAM_MAX_AGE", r.name)
		}
		ended := r.s.endedAt.Sub(r.at).Round(time.Millisecond)
		if r.oldGone == nil {
			t.Logf("%s: reloaded in place; the stream open across the reload ended %v after it (%v)", r.name, ended, r.s.err)
			continue
		}
		if r.s.err != nil {
			t.Errorf("%s: the stream open across the reload broke: %v", r.name, r.s.err)
		}
		select {
		case <-r.oldGone:
		case <-limit:
			out, _ := exec.Command("ps", "-ef").CombinedOutput()
			t.Fatalf("%s: the process serving before the reload did not exit within STREAM_MAX_AGE\n%s\n%s", r.name, r.logs, out)
		}
		t.Logf("%s: the stream ended %v after the reload, the old process exited %v after it", r.name, ended, r.goneAt().Sub(r.at).Round(time.Millisecond))
	}
}

// whenClosed returns a function that, once c is closed, tells when it was.
func whenClosed(c <-chan struct{}) func() time.Time {
	done, at := make(chan struct{}), time.Time{}
	go func() {
		if c != nil {
			<-c
		}
		at = time.Now()
		close(done)
	}()
	return func() time.Time { <-done; return at }
}

// TestProxyHerokuRouter puts HAProxy where Heroku's router is: 30 s for
// the first byte and for each later one (timeout server), 55 s idle
// towards the client, TRUSTED_PROXIES=* as docs/deploy.md says for
// Heroku, and changecast's default heartbeat. A stream stays open past
// 30 s and still carries a message; the log names the client.
func TestProxyHerokuRouter(t *testing.T) {
	t.Parallel()
	k := proxyKinds[1]
	needProxy(t, k)
	up := newE2EServer(t, map[string]string{"HEARTBEAT_INTERVAL": "15s", "TRUSTED_PROXIES": "*"})
	p := k.start(t, upstreamPort(t, up.URL),
		"timeout server 1h", "timeout server 30s",
		"timeout client 1h", "timeout client 55s",
		"timeout tunnel 1h", "timeout tunnel 55s")
	start := time.Now()
	s := openProxiedStream(t, clientFrom(t, "127.0.0.2"), p.URL+"/api/rooms/heroku/events", nil)
	first := time.Since(start)
	s.next(t)
	time.Sleep(35 * time.Second)
	select {
	case <-s.ended:
		t.Fatal("the router stand-in cut the stream within 35 s with the default heartbeat")
	default:
	}
	postMessage(t, up.URL, "heroku", "after 35 s")
	if ev := s.next(t); ev.name != "message" {
		t.Fatalf("got %s, want the message", ev.name)
	}
	t.Logf("headers after %v; %d heartbeats in 35 s", first.Round(time.Millisecond), len(s.comments))
	resp, err := clientFrom(t, "127.0.0.2").Get(p.URL + "/api/rooms/heroku/messages")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitLogLine(t, up.logs, "path=/api/rooms/heroku/messages", "client=127.0.0.2")
}
