package stream

import (
	"runtime"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// TestSubscribeHeadIsAtomicWithRegistration checks subscribe's contract
// while the feed applies events as fast as it can: after subscribe
// returns (s, head), every event on s's topics with a position after head
// is queued to s, and none at or before it. So the first frame queued is
// the event right after head, and the frames that follow are contiguous.
// If the head were read apart from the registration, an event applied in
// between would be after the returned head yet not queued: a catch-up
// from head would not replay it to the live stream either, and it would
// show as a gap at the front of the queue.
func TestSubscribeHeadIsAtomicWithRegistration(t *testing.T) {
	const (
		rounds = 400 // subscriptions
		after  = 3   // events each must see queued before it is checked
	)
	m := New(newFakeSource(), Config{QueueSize: 1 << 20, TopicBuffer: 16})
	defer m.Close()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the feed: one event per batch, every position on topic "t"
		defer wg.Done()
		for seq := 1; ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			pos := fakePos(seq)
			m.apply(Batch{Events: []Event{{ID: pos, Topic: "t", Name: "message", Data: []byte(`{}`)}}, Checkpoint: pos})
			runtime.Gosched() // let a subscriber in between batches, as a real feed waits for the next
		}
	}()
	defer func() { close(stop); wg.Wait() }()

	killed := 0 // subscriptions that broke the contract
	for i := range rounds {
		s, head := m.subscribe([]string{"t"})
		if s == nil {
			t.Fatal("subscribe on an open multiplexer returned no subscriber")
		}
		h, ok := headSeq(head)
		if !ok {
			t.Fatalf("round %d: head %q is not a position of the feed", i, head)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, _ := headSeq(m.lastPos())
			if n >= h+after {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the feed did not move %d events past %s", i, after, head)
			}
			runtime.Gosched()
		}
		m.unsubscribe(s)
		q, _ := s.take(nil)
		bad := false
		for j, f := range q {
			if want := fakePos(h + 1 + j); f.id != want {
				t.Errorf("round %d: head %s: frame %d is %s, want %s (an event after the returned head was not queued)", i, head, j, f.id, want)
				bad = true
				break
			}
		}
		if !bad && len(q) < after {
			t.Errorf("round %d: head %s: %d frames queued while the feed moved %d events past it", i, head, len(q), after)
			bad = true
		}
		if bad {
			if killed++; killed >= 3 {
				t.Fatalf("stopping after %d bad subscriptions in %d rounds", killed, i+1)
			}
		}
	}
}

// headSeq returns the sequence number of a fake feed position, 0 for the
// empty position of a feed that has applied nothing.
func headSeq(pos string) (int, bool) {
	if pos == "" {
		return 0, true
	}
	return fakeSeq(pos)
}

// TestStatsApplied: Stats.Applied is "" before Start, the head Start read,
// then the position of the last change the feed handed on.
func TestStatsApplied(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		src.add("rooms/a", "before")
		m := New(src, Config{})
		defer m.Close()
		if got := m.Stats().Applied; got != "" {
			t.Fatalf("Applied before Start: %q, want empty", got)
		}
		if err := m.Start(); err != nil {
			t.Fatal(err)
		}
		if got := m.Stats().Applied; got != fakePos(1) {
			t.Fatalf("Applied after Start: %q, want the head %s", got, fakePos(1))
		}
		ev := src.add("rooms/a", "after")
		synctest.Wait()
		if got := m.Stats().Applied; got != ev.ID {
			t.Fatalf("Applied after a change: %q, want %s", got, ev.ID)
		}
	})
}
