//go:build unix

package bolt

import (
	"os"
	"syscall"
)

// lockFile takes the exclusive lock bbolt takes on its file, without
// waiting: it fails if another process has the store open. The lock goes
// with the file's Close.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}
