//go:build linux

package main

import (
	"bufio"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMeasureCountsEveryWrite(t *testing.T) {
	for _, c := range []config{
		{Rate: 400, Duration: 250 * time.Millisecond, Syncs: 1, Pages: 1},
		{Rate: 400, Duration: 250 * time.Millisecond, Syncs: 2, Pages: 10},
	} {
		c.Dir = t.TempDir()
		r, err := measure(c)
		if err != nil {
			t.Fatal(err)
		}
		if r.Arrived < 50 || r.Writes != uint64(r.Arrived) {
			t.Errorf("%+v: %d writes arrived, %d waits measured", c, r.Arrived, r.Writes)
		}
		if r.Commits < 1 || r.Commits > r.Arrived {
			t.Errorf("%+v: %d commits for %d writes", c, r.Commits, r.Arrived)
		}
		if !(0 <= r.P50 && r.P50 <= r.P99 && r.P99 <= r.P999 && r.P999 <= r.Max*1.04) {
			t.Errorf("%+v: quantiles out of order: %+v", c, r)
		}
		left, _ := filepath.Glob(filepath.Join(c.Dir, "*"))
		if len(left) != 0 {
			t.Errorf("%+v: left %v behind", c, left)
		}
	}
}

func TestMeasureRefuses(t *testing.T) {
	ok := config{Dir: t.TempDir(), Rate: 100, Duration: time.Millisecond, Syncs: 1, Pages: 1}
	for name, c := range map[string]config{
		"rate":  {Dir: ok.Dir, Rate: 0, Duration: ok.Duration, Syncs: 1, Pages: 1},
		"d":     {Dir: ok.Dir, Rate: 100, Syncs: 1, Pages: 1},
		"syncs": {Dir: ok.Dir, Rate: 100, Duration: ok.Duration, Syncs: 3, Pages: 1},
		"pages": {Dir: ok.Dir, Rate: 100, Duration: ok.Duration, Syncs: 1},
		"dir":   {Dir: filepath.Join(ok.Dir, "missing"), Rate: 100, Duration: ok.Duration, Syncs: 1, Pages: 1},
	} {
		if _, err := measure(c); err == nil {
			t.Errorf("%s: measured %+v", name, c)
		}
	}
	if _, err := os.Stat(ok.Dir); err != nil {
		t.Fatal(err)
	}
}

func TestServeCommitsBeforeFanOut(t *testing.T) {
	com, err := startCommitter(t.TempDir(), 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(newFanOut(com))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/rooms/a/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	for i := range 3 {
		body := fmt.Sprintf(`{"text":"m%d"}`, i)
		post, err := http.Post(srv.URL+"/api/rooms/a/messages", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		post.Body.Close()
		if post.StatusCode != http.StatusCreated {
			t.Fatalf("POST: %s", post.Status)
		}
		com.mu.Lock()
		waited := com.hist.Count()
		com.mu.Unlock()
		if waited != uint64(i+1) {
			t.Fatalf("answered after %d commits waited for, want %d", waited, i+1)
		}
		for {
			l, err := lines.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(l, "data: ") {
				if l != "data: "+body+"\n" {
					t.Fatalf("got %q, want %s", l, body)
				}
				break
			}
		}
	}
	// The first message went to the file's first page.
	page := make([]byte, pageSize)
	if _, err := com.f.ReadAt(page, 0); err != nil {
		t.Fatal(err)
	}
	if want := `{"text":"m0"}`; !strings.HasPrefix(string(page), want) {
		t.Errorf("first page starts %q, want %s", page[:20], want)
	}
	if err := com.stop(); err != nil {
		t.Fatal(err)
	}
}
