//go:build unix

package connlimit

import (
	"syscall"
	"testing"
)

// TestRaiseFileLimit: the soft limit in use is reported, and is the hard
// limit after the call.
func TestRaiseFileLimit(t *testing.T) {
	got, err := RaiseFileLimit()
	if err != nil {
		t.Fatal(err)
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if got != uint64(lim.Cur) || lim.Cur != lim.Max {
		t.Errorf("RaiseFileLimit() = %d; limit now %d (hard %d), want both equal", got, lim.Cur, lim.Max)
	}
}
