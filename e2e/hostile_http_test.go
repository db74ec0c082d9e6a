package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"changecast/handlers"
)

// TestHostileHTTP runs the server as on a public URL (no -dev, JWT_SECRET
// and METRICS_TOKEN set, plus one without METRICS_TOKEN) and tries what a
// hostile or careless client would: made-up methods and paths, tokens in
// odd query shapes, huge queries, a scrape of /metrics, HEAD requests.
func TestHostileHTTP(t *testing.T) {
	t.Parallel()
	secret := strings.Repeat("k", 40)
	const metricsToken = "scrape-me-0123456789abcdef"
	s := startE2E(t, map[string]string{"JWT_SECRET": secret, "METRICS_TOKEN": metricsToken}, nil)
	off := startE2E(t, map[string]string{"JWT_SECRET": secret}, nil)
	tok, err := handlers.IssueToken([]byte(secret), "alice", handlers.RoleCustomer, []string{"lobby"}, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	scraper := http.Header{"Authorization": {"Bearer " + metricsToken}}

	for _, tc := range []struct {
		name string
		run  func(t *testing.T)
	}{
		{"20,000 made-up methods and paths leave /metrics bounded", func(t *testing.T) {
			const n = 20_000
			reqs := make([]string, 0, n+5)
			for i := range n {
				reqs = append(reqs, fmt.Sprintf("M%05d /nowhere/%d HTTP/1.1\r\nHost: x\r\n\r\n", i, i))
			}
			for i := range 5 { // long methods, up to net/http's header bound
				reqs = append(reqs, fmt.Sprintf("%s%d /api/x%d HTTP/1.1\r\nHost: x\r\n\r\n", strings.Repeat("X", 500<<10), i, i))
			}
			pipeline(t, s.URL, reqs)
			body := get(t, s.URL+"/metrics", scraper, http.StatusOK)
			series := regexp.MustCompile(`(?m)^changecast_http_request(s_total|_duration_seconds_count)\{.*$`).FindAllString(body, -1)
			// One series per (route, method, status) the API can give: a
			// few dozen, not one per method or path sent.
			if len(series) > 60 {
				t.Errorf("got %d request series after %d made-up methods, want a few dozen:\n%.3000s", len(series), n, strings.Join(series, "\n"))
			}
			var other float64
			for _, l := range series {
				if strings.HasPrefix(l, "changecast_http_requests_total{") && strings.Contains(l, `method="other"`) {
					var v float64
					fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v)
					other += v
				}
			}
			if other != n+5 {
				t.Errorf("requests counted with method=\"other\": %v, want %d", other, n+5)
			}
			if len(body) > 1<<20 {
				t.Errorf("/metrics is %d bytes, want well under 1 MiB", len(body))
			}
		}},
		{"a query token never reaches the log, whatever its shape", func(t *testing.T) {
			long := strings.Repeat("q", 500<<10)
			shapes := []string{
				"access_token=" + tok,
				"x=1;access_token=" + tok,
				"a=1&access_token%3d" + tok,
				"a=1&access_token%253d" + tok,
				"access%5Ftoken=" + tok,
				"ACCESS_TOKEN=" + tok,
				"a=1;b=2&access_token=" + tok + ";x=1",
				"topic=rooms/lobby&" + tok + "=1",
				"lastEventId=" + long,
				"filler=" + long,
			}
			for i, q := range shapes {
				for _, path := range []string{"/api/rooms/lobby/messages", "/nowhere"} {
					req, _ := http.NewRequest("GET", s.URL+path+"?"+q, nil)
					req.Header.Set("X-Request-ID", fmt.Sprintf("shape-%d%s", i, path))
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			lines := waitLogLines(t, s, "shape-", 2*len(shapes))
			logs := s.logs.String()
			if sig := tok[strings.LastIndexByte(tok, '.')+1:]; strings.Contains(logs, sig) {
				t.Errorf("the token's signature is in the log")
			}
			for _, l := range lines {
				if len(l) > 8<<10 {
					t.Errorf("a request line of %d bytes, want at most a few KiB: %.200s", len(l), l)
				}
			}
		}},
		{"/metrics needs METRICS_TOKEN outside -dev", func(t *testing.T) {
			get(t, off.URL+"/metrics", nil, http.StatusNotFound)
			get(t, off.URL+"/metrics", scraper, http.StatusNotFound)
			get(t, s.URL+"/metrics", nil, http.StatusUnauthorized)
			get(t, s.URL+"/metrics", http.Header{"Authorization": {"Bearer " + metricsToken + "x"}}, http.StatusUnauthorized)
			get(t, s.URL+"/metrics", http.Header{"Authorization": {"Bearer " + tok}}, http.StatusUnauthorized)
			if body := get(t, s.URL+"/metrics", scraper, http.StatusOK); !strings.Contains(body, "changecast_streams_open") {
				t.Errorf("/metrics with the token: no metrics in %.200q", body)
			}
			if n := strings.Count(off.logs.String(), "set METRICS_TOKEN"); n != 1 {
				t.Errorf("the server without METRICS_TOKEN says how to turn /metrics on %d times, want once", n)
			}
			if n := strings.Count(s.logs.String(), "set METRICS_TOKEN"); n != 0 {
				t.Errorf("the server with METRICS_TOKEN says /metrics is off %d times, want never", n)
			}
			if strings.Contains(s.logs.String(), metricsToken) {
				t.Error("METRICS_TOKEN is in the log")
			}
		}},
		{"HEAD answers like GET without a body", func(t *testing.T) {
			for _, tc := range []struct {
				path        string
				header      http.Header
				status      int
				contentType string
			}{
				{"/api/rooms/lobby/messages", http.Header{"Authorization": {"Bearer " + tok}}, 200, "application/json"},
				{"/api/rooms/lobby/messages", nil, 401, "application/json"},
				{"/api/rooms/lobby/events", http.Header{"Authorization": {"Bearer " + tok}}, 200, "text/event-stream"},
				{"/api/events?topic=rooms/lobby", http.Header{"Authorization": {"Bearer " + tok}}, 200, "text/event-stream"},
				{"/api/orders/0123456789abcdef01234567", http.Header{"Authorization": {"Bearer " + tok}}, 404, "application/json"},
				{"/metrics", scraper, 200, "text/plain"},
				{"/metrics", nil, 401, "application/json"},
			} {
				req, _ := http.NewRequest("HEAD", s.URL+tc.path, nil)
				for k, v := range tc.header {
					req.Header[k] = v
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatalf("HEAD %s: %v", tc.path, err)
				}
				resp.Body.Close()
				if resp.StatusCode != tc.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.contentType) {
					t.Errorf("HEAD %s: got %d %q, want %d %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status, tc.contentType)
				}
			}
		}},
		{"over 10,000 query parameters says so", func(t *testing.T) {
			q := "topic=rooms/lobby" + strings.Repeat("&topic=rooms/lobby", 10_000)
			req, _ := http.NewRequest("GET", s.URL+"/api/events?"+q, nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			var body struct{ Error string }
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			jsonUnmarshal(raw, &body)
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body.Error, "too many query parameters") {
				t.Errorf("got %d %q, want 400 too many query parameters", resp.StatusCode, body.Error)
			}
		}},
	} {
		t.Run(tc.name, tc.run)
	}
}

// pipeline sends the raw requests over a few keep-alive connections to
// base, each connection's requests written while its answers are read,
// and waits for every answer.
func pipeline(tb testing.TB, base string, reqs []string) {
	tb.Helper()
	const conns = 4
	addr := strings.TrimPrefix(base, "http://")
	errc := make(chan error, conns)
	for c := range conns {
		var mine []string
		for i := c; i < len(reqs); i += conns {
			mine = append(mine, reqs[i])
		}
		go func() { errc <- sendAll(addr, mine) }()
	}
	for range conns {
		if err := <-errc; err != nil {
			tb.Fatal(err)
		}
	}
}

// sendAll writes reqs on one connection to addr and reads an answer to each.
func sendAll(addr string, reqs []string) error {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Minute)) // bounds a hang only
	werr := make(chan error, 1)
	go func() {
		w := bufio.NewWriter(conn)
		for _, r := range reqs {
			if _, err := w.WriteString(r); err != nil {
				werr <- err
				return
			}
		}
		werr <- w.Flush()
	}()
	rd := bufio.NewReader(conn)
	for i := range reqs {
		resp, err := http.ReadResponse(rd, nil)
		if err != nil {
			return fmt.Errorf("answer %d of %d: %w", i, len(reqs), err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			return fmt.Errorf("answer %d of %d (status %d) closed the connection", i, len(reqs), resp.StatusCode)
		}
	}
	return <-werr
}

// get makes a GET to url with header, fails unless it answers want, and
// returns the body.
func get(tb testing.TB, url string, header http.Header, want int) string {
	tb.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != want {
		tb.Fatalf("GET %s: got %d %.200s, want %d", url, resp.StatusCode, body, want)
	}
	return string(body)
}

// waitLogLines waits until n request lines whose request_id starts with
// prefix are in the server's log, and returns them.
func waitLogLines(tb testing.TB, s *e2eServer, prefix string, n int) []string {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second) // bounds a hang only
	for {
		var lines []string
		for _, l := range strings.Split(s.logs.String(), "\n") {
			if strings.Contains(l, `"request_id":"`+prefix) {
				lines = append(lines, l)
			}
		}
		if len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			tb.Fatalf("got %d request lines for %s*, want %d", len(lines), prefix, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
