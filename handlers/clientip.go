package handlers

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientIP returns the extractor of a request's client address: the
// peer's, unless the peer is one of trusted (a proxy or a platform's
// router), in which case the address the proxies recorded, in the
// standard Forwarded header if there is one, else X-Forwarded-For. Of
// that list, the client is the rightmost address that is not itself a
// trusted proxy: a client can write anything to the left of what its
// first proxy appended, never to the right. Headers from an untrusted
// peer are ignored.
func clientIP(trusted []netip.Prefix) func(*http.Request) string {
	isTrusted := func(a netip.Addr) bool {
		a = a.Unmap()
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return func(r *http.Request) string {
		peer := peerAddr(r.RemoteAddr)
		if !peer.IsValid() {
			return r.RemoteAddr
		}
		if len(trusted) == 0 || !isTrusted(peer) {
			return peer.Unmap().String()
		}
		hops := forwardedFor(r.Header.Values("Forwarded"))
		if hops == nil {
			hops = xForwardedFor(r.Header.Values("X-Forwarded-For"))
		}
		client := peer
		for i := len(hops) - 1; i >= 0; i-- {
			a := hops[i]
			if !a.IsValid() {
				break // a hop the proxies did not write: trust nothing left of it
			}
			client = a
			if !isTrusted(a) {
				break
			}
		}
		return client.Unmap().String()
	}
}

// peerAddr parses a RemoteAddr ("ip:port").
func peerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr()
	}
	a, _ := netip.ParseAddr(remote)
	return a
}

// xForwardedFor returns the addresses of X-Forwarded-For headers, in
// order; an entry that is no address is the zero Addr. Nil when there is
// no such header.
func xForwardedFor(values []string) []netip.Addr {
	var out []netip.Addr
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			out = append(out, hostAddr(strings.TrimSpace(f)))
		}
	}
	return out
}

// forwardedFor returns the for= addresses of Forwarded headers (RFC
// 7239), one per element, in order; an element without a usable for= is
// the zero Addr (an obfuscated or "unknown" node). Nil when there is no
// such header.
func forwardedFor(values []string) []netip.Addr {
	var out []netip.Addr
	for _, v := range values {
		for _, elem := range strings.Split(v, ",") {
			var a netip.Addr
			for _, pair := range strings.Split(elem, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if ok && strings.EqualFold(k, "for") {
					a = hostAddr(strings.Trim(val, `"`))
				}
			}
			out = append(out, a)
		}
	}
	return out
}

// hostAddr parses an address as proxies write it: "ip", "ip:port",
// "[ipv6]" or "[ipv6]:port".
func hostAddr(s string) netip.Addr {
	if a, err := netip.ParseAddr(s); err == nil {
		return a
	}
	if host, _, err := net.SplitHostPort(s); err == nil {
		a, _ := netip.ParseAddr(host)
		return a
	}
	a, _ := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	return a
}
