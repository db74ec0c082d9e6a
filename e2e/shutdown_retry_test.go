package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// lastRetryRE matches a body whose last line is a `retry:` and its blank line.
var lastRetryRE = regexp.MustCompile(`\nretry: (\d+)\n\n$`)

// TestShutdownSpreadsRetry opens streams, cancels run's context (what
// SIGTERM does) and checks that each stream's body ends with a `retry:`
// inside SHUTDOWN_RETRY_WINDOW, so that its client comes back after a
// delay of its own rather than with every other client at once.
func TestShutdownSpreadsRetry(t *testing.T) {
	const streams = 20
	const lo, hi = 2000, 3000 // ms
	s := newE2EServer(t, map[string]string{"SHUTDOWN_RETRY_WINDOW": fmt.Sprintf("%dms-%dms", lo, hi)})
	tr := &http.Transport{MaxIdleConnsPerHost: -1}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	bodies := make([]string, streams)
	errs := make([]error, streams)
	var opened, ended sync.WaitGroup
	for i := range streams {
		opened.Add(1)
		ended.Go(func() {
			live := false
			defer func() {
				if !live {
					opened.Done()
				}
			}()
			resp, err := client.Get(fmt.Sprintf("%s/api/rooms/room-%d/events", s.URL, i%5))
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			// Live once the snapshot has come.
			br := bufio.NewReader(resp.Body)
			var head strings.Builder
			for !strings.HasSuffix(head.String(), "event: snapshot\n") {
				l, err := br.ReadString('\n')
				head.WriteString(l)
				if err != nil {
					errs[i] = fmt.Errorf("before the snapshot: %q, %v", head.String(), err)
					return
				}
			}
			live = true
			opened.Done()
			rest, err := io.ReadAll(br)
			bodies[i], errs[i] = head.String()+string(rest), err
		})
	}
	opened.Wait()
	s.Stop(t)
	ended.Wait()

	distinct := map[int]bool{}
	for i, body := range bodies {
		if errs[i] != nil {
			t.Fatalf("stream %d did not end cleanly: %v", i, errs[i])
		}
		m := lastRetryRE.FindStringSubmatch(body)
		if m == nil {
			t.Fatalf("stream %d: body %q does not end with a retry line", i, body)
		}
		n, _ := strconv.Atoi(m[1])
		if n < lo || n > hi {
			t.Errorf("stream %d ends with retry %d; want it in [%d, %d]", i, n, lo, hi)
		}
		distinct[n] = true
	}
	// 20 uniform draws from 1,001 values are all alike with a
	// probability of 10^-57.
	if len(distinct) < 2 {
		t.Errorf("every stream got retry %v; want them spread over the window", distinct)
	}
}
