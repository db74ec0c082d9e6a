package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"changecast/internal/connlimit"
)

// flooder holds n connections to addr that never finish a request,
// reopening each as soon as the server closes it, until stopped. Half
// stay silent; the other half send a request header a line at a time,
// one line every 200 ms, and never its end (slowloris).
type flooder struct {
	dials  atomic.Int64
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// floodTrickle is how often a trickling flood connection sends the next
// line of its never-ending header.
const floodTrickle = 200 * time.Millisecond

// flood starts a flooder of n connections; it stops at cleanup.
func flood(t *testing.T, addr string, n int) *flooder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &flooder{cancel: cancel}
	for i := range n {
		trickle := i%2 == 1
		f.wg.Go(func() {
			for ctx.Err() == nil {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				f.dials.Add(1)
				stop := context.AfterFunc(ctx, func() { c.Close() })
				holdConn(c, trickle)
				stop()
				c.Close()
			}
		})
	}
	t.Cleanup(f.stop)
	return f
}

// holdConn holds c until the server closes it, silent or trickling
// header lines.
func holdConn(c net.Conn, trickle bool) {
	if !trickle {
		c.Read(make([]byte, 1))
		return
	}
	if _, err := io.WriteString(c, "GET /api/orders HTTP/1.1\r\nHost: x\r\n"); err != nil {
		return
	}
	for {
		c.SetReadDeadline(time.Now().Add(floodTrickle))
		_, err := c.Read(make([]byte, 1))
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			return
		}
		if _, err := io.WriteString(c, "X-Slow: 1\r\n"); err != nil {
			return
		}
	}
}

// stop closes the flooder's connections and waits for its goroutines.
func (f *flooder) stop() {
	f.cancel()
	f.wg.Wait()
}

// waitFull waits until the server has closed at least one of the n
// flood connections (so every place was held), failing after hostileWait.
func (f *flooder) waitFull(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(hostileWait); f.dials.Load() <= int64(n); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server closed none of %d flood connections within %s", n, hostileWait)
		}
	}
}

// callResult is one honest request's outcome.
type callResult struct {
	code int
	err  error
	took time.Duration
}

// honestCalls makes n requests for path, each on a new connection, one
// after the other, with header auth if token is set.
func honestCalls(base, path, token string, n int) []callResult {
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: hostileWait}
	out := make([]callResult, 0, n)
	for range n {
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		start := time.Now()
		resp, err := client.Do(req)
		r := callResult{err: err}
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			r.code = resp.StatusCode
		}
		r.took = time.Since(start)
		out = append(out, r)
	}
	return out
}

// honestTraffic makes n health checks and, at the same time, n
// authenticated GET /api/orders, each on a new connection.
func honestTraffic(base, token string, n int) (health, api []callResult) {
	var wg sync.WaitGroup
	wg.Go(func() { health = honestCalls(base, "/healthz", "", n) })
	wg.Go(func() { api = honestCalls(base, "/api/orders", token, n) })
	wg.Wait()
	return health, api
}

// checkCalls fails the test for every result that is not want, and logs
// the slowest and median times.
func checkCalls(t *testing.T, what string, rs []callResult, want int) {
	t.Helper()
	var took []time.Duration
	for i, r := range rs {
		if r.err != nil || r.code != want {
			t.Errorf("%s #%d: %d %v, want %d", what, i, r.code, r.err, want)
		}
		took = append(took, r.took)
	}
	slices.Sort(took)
	t.Logf("%s: %d calls, median %s, slowest %s", what, len(rs), took[len(took)/2].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
}

// TestIdleFlood: with MAX_CONNECTIONS=50, a client holding 66
// connections that never finish a request (past the cap and the health
// reserve; half silent, half trickling a header) and reopening each as
// soon as it is closed keeps out neither /healthz nor authenticated API
// calls, and never ends a stream opened before the flood. Every call
// must succeed: a connection that has not sent a whole request header
// loses its place to a newcomer once connlimit.Grace (1 s) has passed;
// an honest request is in its socket before the server accepts it and
// is read at once; and each second the flood's connections of the
// second before lose their places, so an honest call waits in the
// backlog about a second at most — far within the client's 20 s timeout.
func TestIdleFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the binary")
	}
	const held = 50 + connlimit.HealthReserve + 8
	s := startHostile(t, map[string]string{"MAX_CONNECTIONS": "50"})
	tok := hostileToken(t)
	lines := openStream(t, s.base+"/api/rooms/flood/events", tok)

	f := flood(t, s.addr, held)
	f.waitFull(t, held)

	const calls = 20
	health, api := honestTraffic(s.base, tok, calls)
	checkCalls(t, "GET /healthz", health, http.StatusOK)
	checkCalls(t, "GET /api/orders", api, http.StatusOK)

	code, _ := doJSON(t, http.MethodPost, s.base+"/api/rooms/flood/messages", map[string]string{"text": "through the flood"},
		http.Header{"Authorization": {"Bearer " + tok}}, nil)
	if code != http.StatusCreated {
		t.Fatalf("post message during the flood: status %d", code)
	}
	waitLine(t, lines, "through the flood")
	metrics := honestMetrics(t, s)
	f.stop()
	if n, ok := metricValue(metrics, "changecast_connections_evicted_total"); !ok || n < 1 {
		t.Errorf("changecast_connections_evicted_total = %v (found %v), want at least 1", n, ok)
	}
	t.Logf("flood: %d connections opened", f.dials.Load())
}

// TestFloodReserve: with every ordinary place serving a stream, a flood
// of connections that never finish a request does not keep health checks out of the reserve:
// every /healthz answers 200, and an API call 503 with Retry-After.
func TestFloodReserve(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts the binary")
	}
	const max, held = 2, connlimit.HealthReserve + 12
	s := startHostile(t, map[string]string{"MAX_CONNECTIONS": fmt.Sprint(max)})
	tok := hostileToken(t)
	for range max {
		openStream(t, s.base+"/api/rooms/reserve/events", tok)
	}
	f := flood(t, s.addr, held)
	f.waitFull(t, held)

	const calls = 5
	health, api := honestTraffic(s.base, tok, calls)
	checkCalls(t, "GET /healthz", health, http.StatusOK)
	checkCalls(t, "GET /api/orders", api, http.StatusServiceUnavailable)
}

// openStream opens an authenticated stream and returns its lines; it
// closes at cleanup.
func openStream(t *testing.T, url, token string) <-chan string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Transport{}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("stream status %d", resp.StatusCode)
	}
	lines := make(chan string, 256)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // heartbeats nobody reads
			}
		}
	}()
	t.Cleanup(func() {
		resp.Body.Close()
		<-done
	})
	return lines
}

// waitLine waits for a line containing want, failing after hostileWait
// or if the stream ends first.
func waitLine(t *testing.T, lines <-chan string, want string) {
	t.Helper()
	timer := time.NewTimer(hostileWait)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended before %q", want)
			}
			if strings.Contains(l, want) {
				return
			}
		case <-timer.C:
			t.Fatalf("%q not on the stream within %s", want, hostileWait)
		}
	}
}

// honestMetrics reads /metrics once, with the metrics token.
func honestMetrics(t *testing.T, s hostileServer) string {
	t.Helper()
	var body string
	s.poll(t, "/metrics", func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+hostileMetricsToken) },
		func(code int, b string) bool { body = b; return code == http.StatusOK })
	return body
}
