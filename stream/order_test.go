package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// reversedSource is a fakeSource whose positions are the digit-wise
// complement of the fake's: they order backwards as strings, while
// ComparePositions orders them like the log, as a Source may (MongoDB's
// resume tokens of two versions do not order as strings).
type reversedSource struct{ *fakeSource }

// flip complements every hex digit of pos; it is its own inverse.
func flip(pos string) string {
	b := []byte(pos)
	for i, c := range b {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		default:
			continue
		}
		b[i] = "0123456789abcdef"[15-v]
	}
	return string(b)
}

func flipEvents(evs []Event) []Event {
	out := make([]Event, len(evs))
	for i, ev := range evs {
		ev.ID = flip(ev.ID)
		out[i] = ev
	}
	return out
}

func (r reversedSource) Head(ctx context.Context) (string, error) {
	h, err := r.fakeSource.Head(ctx)
	return flip(h), err
}

func (r reversedSource) Follow(ctx context.Context, after string, fn func(Batch) error) error {
	return r.fakeSource.Follow(ctx, flip(after), func(b Batch) error {
		return fn(Batch{Events: flipEvents(b.Events), Checkpoint: flip(b.Checkpoint)})
	})
}

func (r reversedSource) CatchUp(ctx context.Context, topics []string, after, until string, fn func(Event) error) error {
	return r.fakeSource.CatchUp(ctx, topics, flip(after), flip(until), func(ev Event) error {
		ev.ID = flip(ev.ID)
		return fn(ev)
	})
}

func (r reversedSource) Snapshot(ctx context.Context, topics []string) ([]Event, string, error) {
	evs, pos, err := r.fakeSource.Snapshot(ctx, topics)
	return flipEvents(evs), flip(pos), err
}

func (r reversedSource) CheckPosition(pos string) error { return r.fakeSource.CheckPosition(flip(pos)) }

func (r reversedSource) ComparePositions(a, b string) int {
	return strings.Compare(flip(a), flip(b))
}

// The multiplexer orders positions only through the Source: with
// positions that order backwards as strings, a resume from memory and one
// older than memory both get exactly the events after the client's id,
// in order, with no reset.
func TestPositionsOrderedBySource(t *testing.T) {
	for _, tc := range []struct {
		name     string
		buffer   int
		catchUps bool
	}{
		{"from memory", 1000, false},
		{"older than memory", 4, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake := newFakeSource()
			src := reversedSource{fake}
			m := startMux(t, src, Config{TopicBuffer: tc.buffer})
			srv := testServer(t, m)
			u := topicsURL(srv.URL, "rooms/a")
			first := dial(t, u, "")
			first.next(t) // snapshot
			fake.add("rooms/a", "seen")
			seen := first.next(t)
			first.close()
			for i := range 20 {
				fake.add("rooms/a", fmt.Sprint("missed ", i))
			}
			fake.add("rooms/b", "other")
			waitFor(t, "feed to catch up", func() bool { h, _ := src.Head(context.Background()); return m.lastPos() == h })
			before := fake.catchUpCount()
			c := dial(t, u, seen.ID)
			got := c.nextN(t, 20)
			for i, ev := range got {
				var d struct{ Text string }
				_ = json.Unmarshal([]byte(ev.Data), &d)
				if ev.Name != "message" || d.Text != fmt.Sprint("missed ", i) {
					t.Fatalf("event %d after resuming from %s: got %s %q, want message %q", i, seen.ID, ev.Name, d.Text, fmt.Sprint("missed ", i))
				}
			}
			fake.add("rooms/a", "live")
			if ev := c.next(t); !strings.Contains(ev.Data, `"live"`) {
				t.Fatalf("live event: got %s %s", ev.Name, ev.Data)
			}
			if did := fake.catchUpCount() > before; did != tc.catchUps {
				t.Errorf("caught up from the source: %v, want %v", did, tc.catchUps)
			}
		})
	}
}
