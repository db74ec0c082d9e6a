package loadgen

import (
	"bytes"
	"strings"
	"testing"
)

func TestRefusesOtherHosts(t *testing.T) {
	for _, u := range []string{"http://10.0.0.1:8080", "http://192.168.1.1", "http://[2001:db8::1]:80", "http://0.0.0.0:8080", "https://127.0.0.1", "ftp://127.0.0.1", "127.0.0.1:8080"} {
		var out bytes.Buffer
		err := Run(t.Context(), []string{"-url", u, "-duration", "1s"}, func(string) string { return "" }, &out, &out)
		if err == nil || !(strings.Contains(err.Error(), "loopback") || strings.Contains(err.Error(), "not an http")) {
			t.Errorf("bench -url %s: got %v; want a refusal", u, err)
		}
	}
	for _, u := range []string{"http://127.0.0.1:1", "http://127.9.8.7", "http://[::1]:8080", "http://localhost:8080/base"} {
		if _, err := loopbackOnly(u); err != nil {
			t.Errorf("loopbackOnly(%s): %v; want it accepted", u, err)
		}
	}
}
