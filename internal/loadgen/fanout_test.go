package loadgen

import (
	"strings"
	"testing"
	"time"

	"changecast/internal/latency"
)

func TestText(t *testing.T) {
	text := appendText(nil, 1732520000123456789, 42, "a1b2c3d4", 10)
	data := []byte(`{"topic":"rooms/bench-0","op":"insert","message":{"id":"6543aa","room":"bench-0","author":"bench","text":"` + string(text) + `","createdAt":"x"}}`)
	sent, seq, ok := parseText(data, "a1b2c3d4")
	if !ok || sent != 1732520000123456789 || seq != 42 {
		t.Errorf("parseText: got %d, %d, %v; want 1732520000123456789, 42, true", sent, seq, ok)
	}
	for _, bad := range []string{
		strings.Replace(string(data), "a1b2c3d4", "ffffffff", 1),
		strings.Replace(string(data), "bench 1732", "bench x1732", 1),
		`{"message":{"text":"hello"}}`,
	} {
		if _, _, ok := parseText([]byte(bad), "a1b2c3d4"); ok {
			t.Errorf("parseText(%s) accepted", bad)
		}
	}
	if got, _ := messageID(data); string(got) != "6543aa" {
		t.Errorf("messageID = %q, want 6543aa", got)
	}
	if got := testing.AllocsPerRun(100, func() { parseText(data, "a1b2c3d4") }); got != 0 {
		t.Errorf("parseText allocates %v times, want 0", got)
	}
}

// TestFanoutEvent checks the fan-out handler counts each write once
// and flags doubles and strangers.
func TestFanoutEvent(t *testing.T) {
	f := &fanoutRun{run: "00ff00ff", perRoom: []int64{1, 1, 1}}
	s := &stream{roomIdx: 1, hist: new(latency.Hist)}
	msg := func(seq int64) *event {
		text := appendText(nil, time.Now().UnixNano(), seq, f.run, 0)
		return &event{name: []byte("message"), data: []byte(`{"message":{"text":"` + string(text) + `"}}`)}
	}
	for _, seq := range []int64{1, 4, 4, 7, 2, 400, 1} {
		f.onEvent(s, msg(seq))
	}
	f.onEvent(s, &event{name: []byte("snapshot")})
	f.onEvent(s, &event{name: []byte("snapshot")})
	if got := s.unique.Load(); got != 4 || s.dups != 2 || s.unexpected != 1 || s.resets != 1 || s.hist.Count() != 4 {
		t.Errorf("got %d unique, %d dups, %d unexpected, %d resets, %d timed; want 4, 2, 1, 1, 4", got, s.dups, s.unexpected, s.resets, s.hist.Count())
	}
}
