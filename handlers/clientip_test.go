package handlers

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestClientIP(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	for _, tc := range []struct {
		name, peer string
		header     map[string][]string
		trusted    []netip.Prefix
		want       string
	}{
		{"no proxies trusted: the peer, headers ignored", "203.0.113.9:5000", map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, nil, "203.0.113.9"},
		{"an untrusted peer's header is ignored", "203.0.113.9:5000", map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, trusted, "203.0.113.9"},
		{"a trusted proxy's X-Forwarded-For", "10.1.2.3:40000", map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, trusted, "198.51.100.1"},
		{"a chain: the rightmost untrusted hop", "10.1.2.3:40000", map[string][]string{"X-Forwarded-For": {"6.6.6.6, 198.51.100.1, 10.9.9.9"}}, trusted, "198.51.100.1"},
		{"the header in several lines", "10.1.2.3:40000", map[string][]string{"X-Forwarded-For": {"6.6.6.6", "198.51.100.1"}}, trusted, "198.51.100.1"},
		{"every hop trusted: the leftmost", "10.1.2.3:40000", map[string][]string{"X-Forwarded-For": {"10.0.0.7, 10.0.0.8"}}, trusted, "10.0.0.7"},
		{"garbage where the proxy wrote: the last good hop", "10.1.2.3:40000", map[string][]string{"X-Forwarded-For": {"198.51.100.1, not-an-ip"}}, trusted, "10.1.2.3"},
		{"a trusted proxy without the header: the peer", "10.1.2.3:40000", nil, trusted, "10.1.2.3"},
		// RFC 7239's examples.
		{"Forwarded for=", "10.1.2.3:40000", map[string][]string{"Forwarded": {`for=192.0.2.43`}}, trusted, "192.0.2.43"},
		{"Forwarded with an IPv6 address and port", "10.1.2.3:40000", map[string][]string{"Forwarded": {`For="[2001:db8:cafe::17]:4711"`}}, trusted, "2001:db8:cafe::17"},
		{"Forwarded with proto and by", "10.1.2.3:40000", map[string][]string{"Forwarded": {`for=192.0.2.60;proto=http;by=203.0.113.43`}}, trusted, "192.0.2.60"},
		{"Forwarded, two hops", "10.1.2.3:40000", map[string][]string{"Forwarded": {`for=192.0.2.43, for=198.51.100.17`}}, trusted, "198.51.100.17"},
		{"Forwarded wins over X-Forwarded-For", "10.1.2.3:40000", map[string][]string{"Forwarded": {`for=192.0.2.43`}, "X-Forwarded-For": {"198.51.100.1"}}, trusted, "192.0.2.43"},
		{"Forwarded for=unknown: the proxy", "10.1.2.3:40000", map[string][]string{"Forwarded": {`for=unknown`}}, trusted, "10.1.2.3"},
		{"an IPv6 peer, trusted", "[fd00::1]:443", map[string][]string{"X-Forwarded-For": {"2001:db8::5"}}, trusted, "2001:db8::5"},
		{"an IPv4-mapped peer", "[::ffff:10.1.2.3]:443", map[string][]string{"X-Forwarded-For": {"198.51.100.1"}}, trusted, "198.51.100.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			r.Header = http.Header(tc.header)
			if r.Header == nil {
				r.Header = http.Header{}
			}
			if got := clientIP(tc.trusted)(r); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// TestRequestLogClient: the request log records the client address: the
// one a trusted proxy forwarded, else the peer's.
func TestRequestLogClient(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		want    string
	}{
		{"proxy trusted", []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}, "client=198.51.100.7"},
		{"no proxy trusted", nil, "client=127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, dev, func(c *Config) { c.TrustedProxies = tc.trusted })
			e.do(t, req{method: "GET", path: "/healthz", header: map[string]string{"X-Forwarded-For": "198.51.100.7", "X-Request-ID": "ip-1"}})
			var line string
			for _, l := range strings.Split(e.logs.String(), "\n") {
				if strings.Contains(l, "request_id=ip-1") {
					line = l
				}
			}
			if !strings.Contains(line, tc.want) {
				t.Errorf("request line %q lacks %q", line, tc.want)
			}
		})
	}
}
