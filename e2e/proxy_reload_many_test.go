package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestProxyReloadManyStreams reloads nginx while many streams are open
// through it, with STREAM_MAX_AGE=1m, and messages posted all along. Each
// stream that ends reconnects through the reloaded nginx with its last
// id, as a browser does. The old worker must exit once changecast has
// ended the streams it carried, and every stream must see every message
// of its room once, in order. The reload's figures are logged: when the
// streams ended, when the old worker exited, the longest gap a client saw.
//
// 200 streams in CI; CHANGECAST_RELOAD_STREAMS sets how many (the
// figure in docs/deploy.md is from 2,000).
func TestProxyReloadManyStreams(t *testing.T) {
	t.Parallel()
	needProxy(t, proxyKinds[0])
	n := 200
	if v := os.Getenv("CHANGECAST_RELOAD_STREAMS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > 4000 {
			t.Fatalf("CHANGECAST_RELOAD_STREAMS=%q: want 1 to 4000", v)
		}
	}
	const maxAge, rooms = time.Minute, 20
	up := newE2EServer(t, map[string]string{
		"STREAM_MAX_AGE": maxAge.String(), "HEARTBEAT_INTERVAL": "15s", "STREAMS_PER_SUBJECT": "-1",
	})
	p := startNginxWith(t, 4*n+64, upstreamPort(t, up.URL))

	tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: n}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}
	ctx, cancel := context.WithCancel(context.Background())
	ss := make([]*reloadedStream, n)
	var wg sync.WaitGroup
	for i := range ss {
		ss[i] = &reloadedStream{room: fmt.Sprintf("many%d", i%rooms), open: make(chan struct{}), reconnected: make(chan struct{})}
		wg.Add(1)
		go func() { defer wg.Done(); ss[i].run(ctx, client, p.URL) }()
	}
	t.Cleanup(func() { cancel(); wg.Wait() })
	for _, s := range ss {
		select {
		case <-s.open:
		case <-time.After(30 * time.Second):
			t.Fatalf("a stream did not open through nginx within 30s\n%s", p.logs)
		}
	}

	// Messages go to the rooms round-robin, 5 a second, until the end.
	posted := make([][]string, rooms)
	var postedMu sync.Mutex
	var postErr error // read after postingDone
	stopPosting := make(chan struct{})
	postingDone := make(chan struct{})
	go func() {
		defer close(postingDone)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for k := 0; ; k++ {
			select {
			case <-stopPosting:
				return
			case <-tick.C:
			}
			r, text := k%rooms, fmt.Sprintf("m%d", k)
			if err := tryPost(up.URL, fmt.Sprintf("many%d", r), text); err != nil {
				postErr = err
				return
			}
			postedMu.Lock()
			posted[r] = append(posted[r], text)
			postedMu.Unlock()
		}
	}()

	time.Sleep(2 * time.Second)
	at := time.Now()
	oldGone := whenClosed(p.reload(t))
	select {
	case <-waitAll(ss, func(s *reloadedStream) <-chan struct{} { return s.reconnected }):
	case <-time.After(maxAge + 30*time.Second):
		t.Fatal("not every stream open across the reload ended and reconnected within STREAM_MAX_AGE")
	}
	done := make(chan time.Time, 1)
	go func() { done <- oldGone() }()
	var goneAt time.Time
	select {
	case goneAt = <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("nginx's old worker did not exit once its streams had ended\n%s", p.logs)
	}
	time.Sleep(2 * time.Second)
	close(stopPosting)
	<-postingDone
	if postErr != nil {
		t.Fatal(postErr)
	}

	// Every stream sees its room's last message, then everything is
	// compared.
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range ss {
		r, _ := strconv.Atoi(strings.TrimPrefix(s.room, "many"))
		want := posted[r]
		for !s.has(len(want)) {
			if time.Now().After(deadline) {
				t.Fatalf("stream of %s: got %d messages, want %d", s.room, len(s.texts()), len(want))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	cancel()
	wg.Wait()
	var ends []time.Duration
	var maxGap time.Duration
	for i, s := range ss {
		r, _ := strconv.Atoi(strings.TrimPrefix(s.room, "many"))
		if got := s.texts(); !slices.Equal(got, posted[r]) {
			t.Fatalf("stream %d of %s: got %v, want every message once, in order: %v", i, s.room, got, posted[r])
		}
		if s.broken != nil {
			t.Errorf("stream %d: %v", i, s.broken)
		}
		ends = append(ends, s.firstEnd.Sub(at))
		maxGap = max(maxGap, s.maxGap)
	}
	slices.Sort(ends)
	total := 0
	for _, m := range posted {
		total += len(m)
	}
	t.Logf("nginx reload with %d streams (STREAM_MAX_AGE=%v): streams ended %v to %v after the reload (median %v), the old worker exited %v after it; the longest gap a client saw was %v; %d messages, each seen once in order by every stream of its room",
		n, maxAge, ends[0].Round(time.Millisecond), ends[len(ends)-1].Round(time.Millisecond), ends[len(ends)/2].Round(time.Millisecond),
		goneAt.Sub(at).Round(time.Millisecond), maxGap.Round(time.Millisecond), total)
}

// reloadedStream reads one room's stream through a proxy, reconnecting
// with its last id whenever the stream ends.
type reloadedStream struct {
	room        string
	open        chan struct{} // closed when the first stream is open
	reconnected chan struct{} // closed when a second stream is open
	mu          sync.Mutex
	got         []string // message texts in arrival order
	firstEnd    time.Time
	maxGap      time.Duration
	broken      error // a stream that ended in an error, not cleanly
}

func (s *reloadedStream) run(ctx context.Context, client *http.Client, base string) {
	var last string
	var endedAt time.Time
	for conn := 0; ctx.Err() == nil; conn++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/rooms/"+s.room+"/events", nil)
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			if err == nil {
				resp.Body.Close()
			}
			time.Sleep(100 * time.Millisecond)
			conn--
			continue
		}
		s.mu.Lock()
		switch conn {
		case 0:
			close(s.open)
		case 1:
			close(s.reconnected)
		}
		if !endedAt.IsZero() {
			s.maxGap = max(s.maxGap, time.Since(endedAt))
		}
		s.mu.Unlock()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var id, name, data string
		for sc.Scan() {
			switch line := sc.Text(); {
			case line == "":
				if id != "" {
					last = id
				}
				if name == "message" {
					var text string
					if i := strings.Index(data, `"text":"`); i >= 0 {
						text, _, _ = strings.Cut(data[i+len(`"text":"`):], `"`)
					}
					s.mu.Lock()
					s.got = append(s.got, text)
					s.mu.Unlock()
				}
				id, name, data = "", "", ""
			case strings.HasPrefix(line, "id: "):
				id = line[4:]
			case strings.HasPrefix(line, "event: "):
				name = line[7:]
			case strings.HasPrefix(line, "data: "):
				data = line[6:]
			}
		}
		resp.Body.Close()
		endedAt = time.Now()
		s.mu.Lock()
		if s.firstEnd.IsZero() {
			s.firstEnd = endedAt
		}
		if err := sc.Err(); err != nil && ctx.Err() == nil && s.broken == nil {
			s.broken = fmt.Errorf("stream ended in an error: %w", err)
		}
		s.mu.Unlock()
	}
}

func (s *reloadedStream) texts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}

func (s *reloadedStream) has(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got) >= n
}

// waitAll returns a channel closed once ch(s) is closed for every s.
func waitAll(ss []*reloadedStream, ch func(*reloadedStream) <-chan struct{}) <-chan struct{} {
	all := make(chan struct{})
	go func() {
		defer close(all)
		for _, s := range ss {
			<-ch(s)
		}
	}()
	return all
}
