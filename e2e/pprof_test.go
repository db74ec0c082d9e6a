package e2e

import (
	"net/http"
	"strconv"
	"testing"
)

// TestPprofAddrEndToEnd: with PPROF_ADDR set, the profiler answers on
// that loopback address.
func TestPprofAddrEndToEnd(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	s := newE2EServer(t, map[string]string{"PPROF_ADDR": "127.0.0.1:" + strconv.Itoa(port)})
	_ = s
	resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("pprof heap: status %d", resp.StatusCode)
	}
}
