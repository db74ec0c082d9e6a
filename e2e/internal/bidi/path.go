package bidi

import (
	"os"
	"os/exec"
	"testing"
)

// FirefoxForTest returns the Firefox a test drives (firefox-esr, else
// firefox, from PATH). Without one it skips the test, except under
// CI=true, where the Firefox tests must run and its absence fails them.
func FirefoxForTest(tb testing.TB) string {
	tb.Helper()
	for _, name := range []string{"firefox-esr", "firefox"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		tb.Fatal("Firefox is not installed, and CI=true: the Firefox tests must run in CI (apt-get install firefox-esr)")
	}
	tb.Skip("Firefox is not installed (apt-get install firefox-esr); skipping the Firefox test")
	return ""
}
