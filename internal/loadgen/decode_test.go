package loadgen

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

// TestDecoder feeds one chunked event stream to the decoder in
// pieces of every size and checks the events are the same each time.
func TestDecoder(t *testing.T) {
	body := "retry: 5\r\n\r\nid: 1\nevent: snapshot\ndata: {}\n\n: ping\n\n" +
		"id: 2\r\nevent: message\r\ndata: a\r\ndata: b\r\n\r\n" + "data: " + strings.Repeat("z", 700) + "\n\n"
	var raw []byte
	for rest := body; len(rest) > 0; {
		n := min(len(rest), 37)
		raw = fmt.Appendf(raw, "%x;ext=1\r\n%s\r\n", n, rest[:n])
		rest = rest[n:]
	}
	raw = append(raw, "0\r\n\r\n"...)
	b := &bencher{}
	for size := 1; size <= len(raw); size += 1 + size/8 {
		s := &stream{}
		s.resetDecoder(true)
		var got []string
		h := func(s *stream, ev *event) bool {
			got = append(got, fmt.Sprintf("%s|%s|%.10s|%d", ev.id, ev.name, ev.data, len(ev.data)))
			return true
		}
		var err error
		for rest := raw; len(rest) > 0 && err == nil; {
			n := min(size, len(rest))
			err = b.feed(s, h, rest[:n])
			rest = rest[n:]
		}
		want := "1|snapshot|{}|2,2|message|a\nb|3,||zzzzzzzzzz|700"
		if strings.Join(got, ",") != want || err != io.EOF || s.retry != 5*time.Millisecond || string(s.lastID) != "2" {
			t.Fatalf("pieces of %d: got %q, %v, retry %v, last id %q; want %q, EOF, 5ms, 2", size, got, err, s.retry, s.lastID, want)
		}
	}
	s := &stream{}
	s.resetDecoder(true)
	if err := b.feed(s, nil, []byte("zz\r\n")); err == nil || err == io.EOF {
		t.Errorf("bad chunk size: got %v, want an error", err)
	}
}

// BenchmarkFeed decodes a chunked stream as the server writes it (one
// chunk per event of about 300 bytes, a heartbeat now and then), read
// 4 KiB at a time as a goroutine reader does.
func BenchmarkFeed(b *testing.B) {
	var raw []byte
	for i := range 1000 {
		ev := fmt.Appendf(nil, "id: 0011-%08d\nevent: message\ndata: {\"topic\":\"rooms/bench-1\",\"op\":\"insert\",\"message\":{\"id\":\"6543aa%06d\",\"room\":\"bench-1\",\"author\":\"bench\",\"text\":\"bench 1732520000123456789 %d r0a1b2c3d%s\",\"createdAt\":\"2025-11-25T08:00:00Z\"}}\n\n",
			i, i, i, strings.Repeat("x", 100))
		if i%50 == 0 {
			ev = append(ev, ": ping\n\n"...)
		}
		raw = fmt.Appendf(raw, "%x\r\n%s\r\n", len(ev), ev)
	}
	bb := &bencher{}
	s := &stream{}
	h := func(*stream, *event) bool { return true }
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		s.resetDecoder(true)
		s.lastID = s.lastID[:0]
		for rest := raw; len(rest) > 0; {
			k := min(4<<10, len(rest))
			if err := bb.feed(s, h, rest[:k]); err != nil {
				b.Fatal(err)
			}
			rest = rest[k:]
		}
	}
}
