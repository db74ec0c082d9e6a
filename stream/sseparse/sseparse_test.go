package sseparse

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// got is what a stream decodes to: its events, retry values and comments
// in order, one string each.
func decode(t *testing.T, pieces ...string) ([]string, error) {
	t.Helper()
	var out []string
	d := Decoder{
		OnEvent: func(ev *Event) bool {
			out = append(out, fmt.Sprintf("id=%q/%v name=%q data=%q", ev.ID, ev.HasID, ev.Name, ev.Data))
			return true
		},
		OnRetry:   func(r time.Duration) { out = append(out, "retry="+r.String()) },
		OnComment: func(c []byte) { out = append(out, fmt.Sprintf("comment=%q", c)) },
	}
	for _, p := range pieces {
		if err := d.Feed([]byte(p)); err != nil {
			return out, err
		}
	}
	return out, nil
}

// decodeCases are streams and what they decode to; the spec's examples
// first.
var decodeCases = []struct {
	name, stream string
	want         []string
}{
	{"spec: data lines joined", "data: YHOO\ndata: +2\ndata: 10\n\n",
		[]string{`id=""/false name="" data="YHOO\n+2\n10"`}},
	{"spec: ids carry over, a bare id clears", ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
		[]string{`comment=" test stream"`, `id="1"/true name="" data="first event"`, `id=""/true name="" data="second event"`, `id=""/false name="" data=" third event"`}},
	{"spec: empty data, and an unfinished event dropped", "data\n\ndata\ndata\n\ndata:",
		[]string{`id=""/false name="" data=""`, `id=""/false name="" data="\n"`}},
	{"spec: one space after the colon is dropped", "data:test\n\ndata: test\n\n",
		[]string{`id=""/false name="" data="test"`, `id=""/false name="" data="test"`}},
	{"CRLF, lone CR and LF line ends", "event: add\r\ndata: 73857293\r\rdata: a\n\n",
		[]string{`id=""/false name="add" data="73857293"`, `id=""/false name="" data="a"`}},
	{"CR CR is two line ends", "data: x\r\rdata: y\r\n\r\n",
		[]string{`id=""/false name="" data="x"`, `id=""/false name="" data="y"`}},
	{"an id holding NUL is ignored", "id: 7\n\nid: a\x00b\ndata: x\n\n",
		[]string{`id="7"/false name="" data="x"`}},
	{"an id-only block sets the id for later events", "id: 5\n\nevent: e\ndata: d\n\n",
		[]string{`id="5"/false name="e" data="d"`}},
	{"the event name does not carry over", "event: a\n\ndata: 1\n\n",
		[]string{`id=""/false name="" data="1"`}},
	{"retry: digits only", "retry: 1500\n\nretry: 15x\nretry: -1\nretry: +2\nretry:\nretry: 99999999999999999999\nretry: 0\n\n",
		[]string{"retry=1.5s", "retry=0s"}},
	{"unknown fields, and field names are case-sensitive", "Data: x\nfoo: bar\nid : 3\ndata: y\n\n",
		[]string{`id=""/false name="" data="y"`}},
	{"a colon in the value stays", "data: a: b\n\n",
		[]string{`id=""/false name="" data="a: b"`}},
	{"only one leading space is dropped", "event:  two\ndata:\tx\n\n",
		[]string{`id=""/false name=" two" data="\tx"`}},
	{"a byte order mark at the start is ignored", "\uFEFFdata: bom\n\n",
		[]string{`id=""/false name="" data="bom"`}},
	{"a second byte order mark is not", "\uFEFF\uFEFFdata: bom\n\ndata: ok\n\n",
		[]string{`id=""/false name="" data="ok"`}},
	{"a broken byte order mark starts the first line", "\xEF\xBBdata: x\n\ndata: y\n\n",
		[]string{`id=""/false name="" data="y"`}},
	{"comments: a heartbeat, an empty one", ": ping\n:\n\n",
		[]string{`comment=" ping"`, `comment=""`}},
	{"an unfinished line at the end is dropped", "data: x\n\ndata: y\n\ndata: z",
		[]string{`id=""/false name="" data="x"`, `id=""/false name="" data="y"`}},
	{"an event without its blank line is dropped", "id: 9\ndata: x\n",
		nil},
}

// TestDecode decodes each stream whole, then cut in pieces of every
// size, and as a reader handing out one byte at a time.
func TestDecode(t *testing.T) {
	for _, tc := range decodeCases {
		t.Run(tc.name, func(t *testing.T) {
			for size := 1; size <= len(tc.stream); size++ {
				var pieces []string
				for rest := tc.stream; len(rest) > 0; {
					n := min(size, len(rest))
					pieces, rest = append(pieces, rest[:n]), rest[n:]
				}
				got, err := decode(t, pieces...)
				if err != nil || strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
					t.Fatalf("pieces of %d: got %v\n%s\nwant\n%s", size, err, strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
				}
			}
			var got []string
			d := Decoder{OnEvent: func(ev *Event) bool { got = append(got, string(ev.Data)); return true }}
			if err := d.Decode(iotest.OneByteReader(strings.NewReader(tc.stream))); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if n := countEvents(tc.want); len(got) != n {
				t.Errorf("Decode: got %d events, want %d", len(got), n)
			}
		})
	}
}

func countEvents(want []string) int {
	n := 0
	for _, w := range want {
		if strings.HasPrefix(w, "id=") {
			n++
		}
	}
	return n
}

// TestCRLFSplit: a CR at the end of one piece and the LF at the start of
// the next are one line end, not two (which would dispatch early).
func TestCRLFSplit(t *testing.T) {
	got, err := decode(t, "data: a\r", "\ndata: b\r", "\n\r", "\n")
	want := `id=""/false name="" data="a\nb"`
	if err != nil || len(got) != 1 || got[0] != want {
		t.Fatalf("got %q, %v; want [%s]", got, err, want)
	}
	// An empty piece in between changes nothing.
	got, err = decode(t, "data: a\r", "", "\ndata: b\r", "", "\n\r", "\n")
	if err != nil || len(got) != 1 || got[0] != want {
		t.Fatalf("with empty pieces: got %q, %v; want [%s]", got, err, want)
	}
}

// TestLastEventID: the last event ID is what the latest blank line
// committed; a partial event's id does not count, and Reset clears it.
func TestLastEventID(t *testing.T) {
	var d Decoder
	for _, step := range []struct{ feed, want string }{
		{"id: 1\ndata: x\n\n", "1"},
		{"id: 2\n\n", "2"},
		{"id: 3\ndata: y\n", "2"},
		{"\n", "3"},
		{"id\n\n", ""},
	} {
		if err := d.Feed([]byte(step.feed)); err != nil {
			t.Fatal(err)
		}
		if got := string(d.LastEventID()); got != step.want {
			t.Fatalf("after %q: last event ID %q, want %q", step.feed, got, step.want)
		}
	}
	d.Feed([]byte("id: 4\n\ndata: half"))
	d.Reset()
	var evs []string
	d.OnEvent = func(ev *Event) bool { evs = append(evs, string(ev.ID)+"|"+string(ev.Data)); return true }
	d.Feed([]byte("data: new\n\n"))
	if len(d.LastEventID()) != 0 || strings.Join(evs, ",") != "|new" {
		t.Fatalf("after Reset: last event ID %q, events %q; want none and [|new]", d.LastEventID(), evs)
	}
}

// TestStop: a handler returning false stops the decoding at once.
func TestStop(t *testing.T) {
	var names []string
	d := Decoder{OnEvent: func(ev *Event) bool {
		names = append(names, string(ev.Name))
		return string(ev.Name) != "stop"
	}}
	err := d.Feed([]byte("event: a\ndata: 1\n\nevent: stop\ndata: 2\n\nevent: c\ndata: 3\n\n"))
	if !errors.Is(err, ErrStopped) || strings.Join(names, ",") != "a,stop" {
		t.Fatalf("got %v, events %q; want ErrStopped after a,stop", err, names)
	}
	d.Reset()
	if err := d.Decode(strings.NewReader("event: stop\ndata: x\n\n")); !errors.Is(err, ErrStopped) {
		t.Fatalf("Decode: got %v, want ErrStopped", err)
	}
}

// TestMaxLine: a line past MaxLine is refused, whole or in pieces; one at
// the bound is taken.
func TestMaxLine(t *testing.T) {
	var data []string
	d := Decoder{MaxLine: 10, OnEvent: func(ev *Event) bool { data = append(data, string(ev.Data)); return true }}
	if err := d.Feed([]byte("data: 1234\n\n")); err != nil || len(data) != 1 {
		t.Fatalf("a line of 10: got %v, %q", err, data)
	}
	if err := d.Feed([]byte("data: 12345\n\n")); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("a line of 11: got %v, want ErrLineTooLong", err)
	}
	d.Reset()
	d.Feed([]byte("data: 12"))
	if err := d.Feed([]byte("345")); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("a line of 11 in pieces: got %v, want ErrLineTooLong", err)
	}
}

// TestDecodeReadError: Decode returns a read error other than EOF.
func TestDecodeReadError(t *testing.T) {
	boom := errors.New("boom")
	var d Decoder
	if err := d.Decode(iotest.ErrReader(boom)); !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
}

// wire is a stream as the server writes it: events of about 300 bytes,
// a heartbeat now and then.
func wire(n int) []byte {
	var b []byte
	for i := range n {
		b = fmt.Appendf(b, "id: 0011-%08d\nevent: message\ndata: {\"topic\":\"rooms/bench-1\",\"op\":\"insert\",\"message\":{\"id\":\"6543aa%06d\",\"room\":\"bench-1\",\"author\":\"bench\",\"text\":\"bench 1732520000123456789 %d r0a1b2c3d%s\",\"createdAt\":\"2025-11-25T08:00:00Z\"}}\n\n",
			i, i, i, strings.Repeat("x", 100))
		if i%50 == 0 {
			b = append(b, ": ping\n\n"...)
		}
	}
	return b
}

// TestNoAllocation: once its buffers have grown, the decoder allocates
// nothing per line or event, whether events lie whole in a piece or are
// cut across pieces.
func TestNoAllocation(t *testing.T) {
	stream := wire(200)
	var n int
	d := Decoder{OnEvent: func(*Event) bool { n++; return true }, OnRetry: func(time.Duration) {}}
	for _, size := range []int{len(stream), 4 << 10, 97} {
		feed := func() {
			for rest := stream; len(rest) > 0; {
				k := min(size, len(rest))
				if err := d.Feed(rest[:k]); err != nil {
					t.Fatal(err)
				}
				rest = rest[k:]
			}
		}
		feed()
		if got := testing.AllocsPerRun(20, feed); got != 0 {
			t.Errorf("pieces of %d: %v allocations per run of %d events, want 0", size, got, 200)
		}
	}
	if n == 0 {
		t.Fatal("no events")
	}
}

// BenchmarkFeed decodes a server-like stream read 4 KiB at a time (a
// stream reader's buffer in the load generator).
func BenchmarkFeed(b *testing.B) {
	stream := wire(1000)
	d := Decoder{OnEvent: func(*Event) bool { return true }}
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		for rest := stream; len(rest) > 0; {
			k := min(4<<10, len(rest))
			if err := d.Feed(rest[:k]); err != nil {
				b.Fatal(err)
			}
			rest = rest[k:]
		}
	}
}
