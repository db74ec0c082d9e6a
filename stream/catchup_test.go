package stream

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// A catch-up from the Source gives its slot back while its client is
// written to: with the pool's only slot taken by a client that does not
// read, another client's catch-up completes while the first is stuck.
func TestCatchUpSlotFreeWhileWriting(t *testing.T) {
	src := newFakeSource()
	m := New(src, Config{CatchUps: 1, TopicBuffer: 4})
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	srv := smallBufferServer(t, m)
	stuckFrom := src.add("rooms/a", "first")
	fastFrom := src.add("rooms/b", "first")
	// Far more than the socket buffers hold, older than memory keeps.
	payload := strings.Repeat("p", 16<<10)
	for i := range 200 {
		src.add("rooms/a", fmt.Sprint(i, payload))
	}
	for i := range 10 {
		src.add("rooms/b", fmt.Sprint("missed ", i))
	}
	waitFor(t, "the feed", func() bool { h, _ := src.Head(context.Background()); return m.lastPos() == h })

	rawStream(t, srv, "topic=rooms%2Fa&lastEventId="+url.QueryEscape(stuckFrom.ID))
	waitFor(t, "the stuck client's catch-up", func() bool { return src.catchUpCount() == 1 })

	fast := dial(t, topicsURL(srv.URL, "rooms/b"), fastFrom.ID)
	got := fast.nextN(t, 10)
	for i, ev := range got {
		if !strings.Contains(ev.Data, fmt.Sprintf(`"missed %d"`, i)) {
			t.Fatalf("fast client's event %d: %s", i, ev.Data)
		}
	}
	if n := m.Stats().OpenStreams; n != 2 {
		t.Errorf("open streams: got %d, want 2 (the stuck client still stuck)", n)
	}
}
