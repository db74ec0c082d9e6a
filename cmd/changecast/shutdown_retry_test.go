package main

import (
	"strings"
	"testing"
	"time"
)

// TestShutdownRetryWindowConfig: SHUTDOWN_RETRY_WINDOW is MIN-MAX,
// defaults to 1s-5s, and a malformed window is refused at start.
func TestShutdownRetryWindowConfig(t *testing.T) {
	for _, tc := range []struct {
		value  string
		lo, hi time.Duration
	}{
		{"", time.Second, 5 * time.Second},
		{"500ms-2s", 500 * time.Millisecond, 2 * time.Second},
		{" 3s - 3s ", 3 * time.Second, 3 * time.Second},
	} {
		c, err := loadConfig(func(k string) string {
			if k == "SHUTDOWN_RETRY_WINDOW" {
				return tc.value
			}
			return ""
		})
		if err != nil || c.ShutdownRetry != [2]time.Duration{tc.lo, tc.hi} {
			t.Errorf("SHUTDOWN_RETRY_WINDOW=%q: %v, %v; want [%v %v]", tc.value, c.ShutdownRetry, err, tc.lo, tc.hi)
		}
	}
	for _, v := range []string{"5s-1s", "2s", "0s-1s", "1s-10m", "a-b", "-1s-2s", "1s-5s-6s"} {
		_, err := loadConfig(func(k string) string {
			if k == "SHUTDOWN_RETRY_WINDOW" {
				return v
			}
			return ""
		})
		if err == nil || !strings.Contains(err.Error(), "SHUTDOWN_RETRY_WINDOW") {
			t.Errorf("SHUTDOWN_RETRY_WINDOW=%q: error %v; want one naming the variable", v, err)
		}
	}
}
