package stream

import (
	"changecast/protocol"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAppendEvent(t *testing.T) {
	for _, tc := range []struct {
		id, name, data string
		want           string
	}{
		{"1", "order", `{"a":1}`, "id: 1\nevent: order\ndata: {\"a\":1}\n\n"},
		{"", "", "", "data: \n\n"},
		{"", "", "YHOO\n+2\n10", "data: YHOO\ndata: +2\ndata: 10\n\n"},
		{"", "", "a\r\nb\rc\nd", "data: a\ndata: b\ndata: c\ndata: d\n\n"},
		{"", "", "trailing\n", "data: trailing\ndata: \n\n"},
		{"x", "", " leading space", "id: x\ndata:  leading space\n\n"},
		{"id with spaces", "e", "\r", "id: id with spaces\nevent: e\ndata: \ndata: \n\n"},
	} {
		got, err := AppendEvent(nil, tc.id, tc.name, []byte(tc.data))
		if err != nil || string(got) != tc.want {
			t.Errorf("AppendEvent(%q, %q, %q) = %q, %v; want %q", tc.id, tc.name, tc.data, got, err, tc.want)
		}
	}
	for _, bad := range [][2]string{{"a\nb", "x"}, {"a\rb", "x"}, {"a\x00", "x"}, {"1", "ev\n"}, {"1", "ev\r"}, {"1", "\x00"}} {
		got, err := AppendEvent([]byte("keep"), bad[0], bad[1], []byte("d"))
		if !errors.Is(err, ErrBadField) || string(got) != "keep" {
			t.Errorf("AppendEvent(%q, %q) = %q, %v; want dst unchanged and ErrBadField", bad[0], bad[1], got, err)
		}
	}
	if got := string(AppendComment(nil, "ping")); got != ": ping\n\n" {
		t.Errorf("AppendComment = %q", got)
	}
	for text, want := range map[string]string{"a\nb": ": a\n: b\n\n", "a\r\nb\rc": ": a\n: b\n: c\n\n", "": ": \n\n"} {
		if got := string(AppendComment(nil, text)); got != want {
			t.Errorf("AppendComment(%q) = %q, want %q", text, got, want)
		}
	}
	if got := string(AppendRetry(nil, -time.Second)); got != "retry: 0\n\n" {
		t.Errorf("AppendRetry(-1s) = %q", got)
	}
	var b strings.Builder
	if err := Encode(&b, Event{ID: "7", Topic: "rooms/a", Name: "message", Data: []byte("hi")}); err != nil || b.String() != "id: 7\nevent: message\ndata: hi\n\n" {
		t.Errorf("Encode = %q, %v", b.String(), err)
	}
	if err := Encode(&b, Event{ID: "7\n", Data: []byte("hi")}); !errors.Is(err, ErrBadField) {
		t.Errorf("Encode with a bad id = %v, want ErrBadField", err)
	}
	if got := string(AppendRetry(nil, 1500*time.Millisecond)); got != "retry: 1500\n\n" {
		t.Errorf("AppendRetry = %q", got)
	}
}

// TestParserSpecExamples checks the test parser itself against the
// examples of the WHATWG event-stream section, so the fuzz test's oracle
// is right.
func TestParserSpecExamples(t *testing.T) {
	for _, tc := range []struct {
		stream string
		want   []parsedEvent
	}{
		{"data: YHOO\ndata: +2\ndata: 10\n\n", []parsedEvent{{"", "message", "YHOO\n+2\n10"}}},
		{": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n",
			[]parsedEvent{{"1", "message", "first event"}, {"", "message", "second event"}, {"", "message", " third event"}}},
		{"data\n\ndata\ndata\n\ndata:", []parsedEvent{{"", "message", ""}, {"", "message", "\n"}}},
		{"data:test\n\ndata: test\n\n", []parsedEvent{{"", "message", "test"}, {"", "message", "test"}}},
		{"event: add\r\ndata: 73857293\r\rid: a\x00b\ndata: x\n\n", []parsedEvent{{"", "add", "73857293"}, {"", "message", "x"}}},
		{"\uFEFFdata: bom\n\n", []parsedEvent{{"", "message", "bom"}}},
	} {
		got := parseAll(tc.stream)
		if len(got) != len(tc.want) {
			t.Errorf("parse %q: got %d events %q, want %q", tc.stream, len(got), got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("parse %q: event %d = %q, want %q", tc.stream, i, got[i], tc.want[i])
			}
		}
	}
}

// FuzzAppendEvent: any event is either rejected (id or name holding CR,
// LF or NUL) or encodes to text that parses back to the same event, data
// line breaks normalized to LF.
func FuzzAppendEvent(f *testing.F) {
	f.Add("0011-00000001", "order", []byte(`{"topic":"orders/1"}`))
	f.Add("", "", []byte(""))
	f.Add("a", "b", []byte("x\r\ny\rz\n"))
	f.Add("é", "événement", []byte("\n\n\r\r"))
	f.Add("id\x00", "n", []byte("d"))
	f.Fuzz(func(t *testing.T, id, name string, data []byte) {
		wire, err := AppendEvent(nil, id, name, data)
		bad := strings.ContainsAny(id, "\r\n\x00") || strings.ContainsAny(name, "\r\n\x00")
		if bad {
			if !errors.Is(err, ErrBadField) {
				t.Fatalf("AppendEvent(%q, %q) = %v; want ErrBadField", id, name, err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		// A stream as Serve writes it: retry, a comment of arbitrary text
		// (which must not leak a field), then the event.
		stream := string(AppendRetry(nil, 1500*time.Millisecond)) + string(AppendComment(nil, string(data))) + string(wire)
		p, evs := parseStream(stream)
		if len(evs) != 1 || p.retry != "1500" {
			t.Fatalf("%q parses to %d events and retry %q, want 1 and 1500", stream, len(evs), p.retry)
		}
		wantName := protocol.EventName(name)
		if wantName == "" {
			wantName = "message"
		}
		wantData := strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n")
		got := evs[0]
		if got.ID != id || got.Name != wantName || got.Data != wantData {
			t.Fatalf("%q parsed to %q; want id %q name %q data %q", wire, got, id, wantName, wantData)
		}
	})
}
