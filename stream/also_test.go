package stream

import (
	"changecast/protocol"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// orderChange adds a change of order id of customer cust, delivered on
// the order's own topic and on the lists "orders" and "customers/<cust>".
func orderChange(src *fakeSource, id, cust, text string) Event {
	return src.addAlso("orders/"+id, []string{"orders", "customers/" + cust}, text)
}

// TestAlsoDeliveredOnce: a stream on both "orders" and "orders/x" gets
// each change once, live, replayed from memory and caught up from the
// Source, and then continues live with nothing doubled.
func TestAlsoDeliveredOnce(t *testing.T) {
	for _, tc := range []struct {
		name     string
		buffer   int
		catchUps bool
	}{
		{"from memory", 1000, false},
		{"older than memory", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFakeSource()
			m := startMux(t, src, Config{TopicBuffer: tc.buffer})
			srv := testServer(t, m)
			topics := []string{"orders", "orders/x"}
			u := topicsURL(srv.URL, topics...)
			c := dial(t, u, "")
			snap := c.next(t)
			if c2 := c.next(t); c2.Name != protocol.EventSnapshot || snap.Name != protocol.EventSnapshot {
				t.Fatalf("first events %q, %q; want two snapshots", snap, c2)
			}
			write := func(round int) {
				for i := range 4 {
					orderChange(src, "x", "a", fmt.Sprint("x ", round, i))
					orderChange(src, "y", "b", fmt.Sprint("y ", round, i))
					src.add("rooms/r", "not watched")
				}
			}
			write(0)
			live := c.nextN(t, 8)
			end := orderChange(src, "x", "a", "end of live")
			if ev := c.next(t); ev.ID != end.ID {
				t.Fatalf("after 8 changes got %q, want %s: a change came twice", ev, end.ID)
			}
			c.close()
			checkSequence(t, src, topics, snap.ID, live)

			// The client drops and misses changes.
			write(1)
			waitFor(t, "feed", func() bool { return m.lastPos() == fakePos(len(src.log)) })
			before := src.catchUpCount()
			r := dial(t, u, end.ID)
			replayed := r.nextN(t, 8)
			last := orderChange(src, "y", "b", "live again")
			if ev := r.next(t); ev.ID != last.ID {
				t.Fatalf("after the 8 missed changes got %q, want %s: a change came twice", ev, last.ID)
			}
			checkSequence(t, src, topics, end.ID, replayed)
			if did := src.catchUpCount() > before; did != tc.catchUps {
				t.Errorf("caught up from the source: %v, want %v", did, tc.catchUps)
			}
		})
	}
}

// TestAlsoQueuedOnce: the multiplexer queues a change on several of a
// subscriber's topics once, and to a subscriber of any one of its topics.
func TestAlsoQueuedOnce(t *testing.T) {
	m := New(newFakeSource(), Config{})
	m.last = fakePos(0)
	both, _ := m.subscribe([]string{"orders", "orders/x", "customers/a"})
	defer m.unsubscribe(both)
	list, _ := m.subscribe([]string{"customers/a"})
	defer m.unsubscribe(list)
	other, _ := m.subscribe([]string{"customers/b"})
	defer m.unsubscribe(other)
	ev := func(seq int, topic string, also ...string) Event {
		return Event{ID: fakePos(seq), Topic: topic, Also: also, Name: "order", Data: []byte("{}")}
	}
	m.apply(Batch{Events: []Event{
		ev(1, "orders/x", "orders", "customers/a"),
		ev(2, "orders/y", "orders", "customers/b"),
		ev(3, "orders/x", "orders", "customers/a", "orders"),
	}, Checkpoint: fakePos(3)})
	ids := func(s *subscriber) []string {
		frames, _ := s.take(nil)
		var out []string
		for _, f := range frames {
			out = append(out, f.id)
		}
		return out
	}
	for _, c := range []struct {
		name string
		s    *subscriber
		want []string
	}{
		{"orders+orders/x+customers/a", both, []string{fakePos(1), fakePos(2), fakePos(3)}},
		{"customers/a", list, []string{fakePos(1), fakePos(3)}},
		{"customers/b", other, []string{fakePos(2)}},
	} {
		if got := ids(c.s); !slices.Equal(got, c.want) {
			t.Errorf("%s queued %v, want %v", c.name, got, c.want)
		}
	}
}

// TestAlsoNeverLeaks: a stream on "customers/a" gets only the changes
// whose topics include it, live and on resume, while another customer's
// orders change in between.
func TestAlsoNeverLeaks(t *testing.T) {
	src := newFakeSource()
	m := startMux(t, src, Config{QueueSize: 1 << 12})
	srv := testServer(t, m)
	u := topicsURL(srv.URL, "customers/a")
	c := dial(t, u, "")
	snap := c.next(t)
	mine := 0
	for i := range 60 {
		orderChange(src, fmt.Sprint("b", i%3), "b", "not yours")
		if i%4 == 0 {
			orderChange(src, fmt.Sprint("a", i%2), "a", fmt.Sprint("yours ", i))
			mine++
		}
	}
	end := orderChange(src, "a0", "a", "end")
	got := c.nextN(t, mine+1)
	c.close()
	if got[mine].ID != end.ID {
		t.Fatalf("last event %q, want %s", got[mine], end.ID)
	}
	checkSequence(t, src, []string{"customers/a"}, snap.ID, got)
	for _, ev := range got {
		if strings.Contains(ev.Data, "not yours") {
			t.Fatalf("customers/a got %q", ev)
		}
	}
	r := dial(t, u, snap.ID)
	replayed := r.nextN(t, mine+1)
	checkSequence(t, src, []string{"customers/a"}, snap.ID, replayed)
}

// TestAlsoBufferAccounting: a change kept in the ring of each of its
// topics counts once in BufferBytes, and the budget holds.
func TestAlsoBufferAccounting(t *testing.T) {
	for _, budget := range []int{1 << 20, 1500} {
		t.Run(fmt.Sprint(budget), func(t *testing.T) {
			m := New(newFakeSource(), Config{BufferBytes: budget})
			m.last = fakePos(0)
			at := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
			var evs []Event
			for i := 1; i <= 40; i++ {
				cust := fmt.Sprint("customers/c", i%3)
				evs = append(evs, Event{ID: fakePos(i), Topic: fmt.Sprint("orders/", i%5), Also: []string{"orders", cust}, Name: "order", Data: []byte(`{"topic":"x"}`), Time: at})
			}
			m.apply(Batch{Events: evs, Checkpoint: fakePos(40)})
			m.mu.Lock()
			distinct := map[*frame]bool{}
			sum, held, inOrders := 0, m.bufBytes, 0
			for topic, r := range m.rings {
				for _, f := range r.frames {
					if topic != f.topic && !slices.Contains(f.also, topic) {
						t.Errorf("ring %s holds a frame of %s %v", topic, f.topic, f.also)
					}
					if !distinct[f] {
						distinct[f] = true
						sum += len(f.wire)
					}
				}
				if topic == "orders" {
					inOrders = len(r.frames)
				}
			}
			m.mu.Unlock()
			if held != sum || held > budget {
				t.Fatalf("budget counts %d bytes; the rings hold %d distinct frames of %d bytes; want equal, within %d", held, len(distinct), sum, budget)
			}
			if budget > 1<<19 && (len(distinct) != 40 || inOrders != 40) {
				t.Fatalf("memory holds %d changes, %d in the orders ring; want all 40", len(distinct), inOrders)
			}
			if budget < 1<<19 && len(distinct) == 40 {
				t.Fatalf("memory holds every change within a budget of %d", budget)
			}
			// Whatever memory says it holds replays once, in order.
			for _, topics := range [][]string{{"orders"}, {"orders", "orders/1"}, {"customers/c1", "orders", "orders/2"}} {
				frames, ok := m.replay(topics, fakePos(30), fakePos(40))
				if !ok {
					continue
				}
				var want []string
				for _, ev := range evs[30:] {
					if onTopics(ev, topics) {
						want = append(want, ev.ID)
					}
				}
				var got []string
				for _, f := range frames {
					got = append(got, f.id)
				}
				if !slices.Equal(got, want) {
					t.Errorf("replay of %v after 30: %v, want %v", topics, got, want)
				}
			}
		})
	}
}
