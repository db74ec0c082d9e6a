//go:build linux

package main

import (
	"os"
	"path/filepath"
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
