package loadgen

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times:
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns a process's user+system CPU seconds.
func procCPU(pid int) (float64, error) {
	user, sys, err := procTimes(pid)
	return user + sys, err
}

// procTimes returns a process's user and system (kernel) CPU
// seconds.
func procTimes(pid int) (user, sys float64, err error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	// Fields after the ")" that closes the command name start with the
	// state (field 3); utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return 0, 0, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(raw[i+1:]))
	if len(f) < 13 {
		return 0, 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, 0, errors.New("malformed /proc stat")
	}
	return ut / clockTicks, st / clockTicks, nil
}

// procRSS returns a process's resident memory in KiB.
func procRSS(pid int) (int64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}

// selfCPU returns this process's CPU seconds (0 if unreadable).
func selfCPU() float64 {
	s, _ := procCPU(os.Getpid())
	return s
}
