//go:build unix

package connlimit

import "syscall"

// RaiseFileLimit raises the soft limit on open files (RLIMIT_NOFILE) to
// the hard limit and returns the soft limit in use. Go already raises it
// at start (to the hard limit minus one, since Go 1.19); this takes the
// last one and learns the figure. A limit that cannot be read is 0, with
// the error; a limit that cannot be raised is returned as it is, with the
// error. It changes the whole process: call it once, at start.
func RaiseFileLimit() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur < lim.Max {
		want := lim
		want.Cur = want.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			// macOS refuses an unlimited hard limit; keep what Go set.
			return uint64(lim.Cur), err
		}
		lim = want
	}
	return uint64(lim.Cur), nil
}
