package mongo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"

	"changecast/store"
)

// These tests run the feed (Follow) and a catch-up (CatchUp) over one
// fakeOplog and hold them to the same output: the same events, with the
// same ids and the same documents, so that a client never sees a
// difference between live and caught-up changes (nor an order's version
// going backwards).

// changeRows describes changes as "pos op topic vN status" lines.
func changeRows(cs []store.Change) []string {
	var rows []string
	for _, c := range cs {
		r := fmt.Sprintf("%s %s %s", c.Pos, c.Op, c.Topic)
		if c.Order != nil {
			r += fmt.Sprintf(" v%d %s", c.Order.Version, c.Order.Status)
		}
		if c.Message != nil {
			r += " " + c.Message.Text
		}
		rows = append(rows, r)
	}
	return rows
}

// feedChanges follows s from after until a batch holds the change at
// last or its checkpoint reaches last, and returns the changes on topics.
func feedChanges(t *testing.T, s *Store, after, last string, topics []string) []store.Change {
	t.Helper()
	wanted := map[string]bool{}
	for _, tp := range topics {
		wanted[tp] = true
	}
	var got []store.Change
	err := s.Follow(context.Background(), after, func(b store.Batch) error {
		for _, c := range b.Changes {
			if onTopics(wanted, c) {
				got = append(got, c)
			}
		}
		if comparePositionOrder(b.Checkpoint, last) >= 0 {
			return errTestStop
		}
		return nil
	})
	if !errors.Is(err, errTestStop) {
		t.Fatalf("Follow: %v; changes so far:\n%v", err, changeRows(got))
	}
	return got
}

// stagesAfterMatch returns the stages of an aggregate after its $match.
func stagesAfterMatch(t *testing.T, agg bson.Raw) string {
	t.Helper()
	vals, err := agg.Lookup("pipeline").Array().Values()
	if err != nil || len(vals) < 2 {
		t.Fatalf("aggregate without a pipeline: %v", agg)
	}
	var out []string
	for _, v := range vals[2:] {
		out = append(out, v.String())
	}
	return fmt.Sprint(out)
}

// A catch-up over the feed's range gives exactly the feed's changes: an
// event split by $changeStreamSplitLargeEvent as one change with the
// feed's id (its last fragment's), an update by someone else with the
// document as that change left it (not as it is now: the version never
// goes backwards), and an event over 16 MB that no stage can shrink
// stepped over the same way.
func TestCatchUpReadsAsFeed(t *testing.T) {
	order, msg := bson.NewObjectID(), bson.NewObjectID()
	// An operator's $set on version 2: the change's own post-image.
	noted := append(orderBSON(order, store.StatusPreparing, 2), bson.E{Key: "note", Value: "ring twice"})
	events := func() []bson.D {
		return []bson.D{
			eventDoc(eventTok(1), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1)),
			eventDoc(eventTok(2), "replace", ordersCollection, order, orderBSON(order, store.StatusPreparing, 2)),
			eventDoc(eventTok(3), "update", ordersCollection, order, noted),
			eventDoc(eventTok(4), "replace", ordersCollection, order, orderBSON(order, store.StatusOutForDelivery, 3)),
			eventDoc(eventTok(5), "replace", ordersCollection, order, orderBSON(order, store.StatusDelivered, 4)),
			eventDoc(eventTok(6), "insert", messagesCollection, msg, messageBSON(msg, "lobby", "done")),
		}
	}
	// An order's own topic is matched on its _id; a customer's list on
	// fullDocument.customer, which an update event has only once its
	// document is read.
	testCatchUpReadsAsFeed(t, "order", events, []string{store.OrderTopic(order.Hex()), store.RoomTopic("lobby")})
	testCatchUpReadsAsFeed(t, "customer", events, []string{store.CustomerTopic("ann"), store.RoomTopic("lobby")})
}

func testCatchUpReadsAsFeed(t *testing.T, name string, events func() []bson.D, topics []string) {
	for _, tt := range []struct {
		name  string
		large func(*fakeOplog)
		want  []string // the ids handed out
	}{
		{"split event", func(o *fakeOplog) { o.splitInto(2, 3) },
			[]string{eventTok(1), fragTok(2, 3), eventTok(3), eventTok(4), eventTok(5), eventTok(6)}},
		{"event too large even split", func(o *fakeOplog) { o.large[eventTok(2)] = true },
			[]string{eventTok(1), eventTok(3), eventTok(4), eventTok(5), eventTok(6)}},
	} {
		t.Run(name+" "+tt.name, func(t *testing.T) {
			log := newFakeOplog(events()...)
			tt.large(log)
			s := openScriptedFeed(t, log.reply, log.reply)
			live := feedChanges(t, s, hwmTok(0), eventTok(6), topics)
			feedAggs := len(log.aggregates())
			var caught []store.Change
			if err := s.CatchUp(context.Background(), topics, hwmTok(0), eventTok(6), func(c store.Change) error {
				caught = append(caught, c)
				return nil
			}); err != nil {
				t.Fatalf("CatchUp: %v", err)
			}
			if !slices.Equal(changeRows(caught), changeRows(live)) {
				t.Errorf("catch-up and feed differ:\ncatch-up %v\n    feed %v", changeRows(caught), changeRows(live))
			}
			var ids []string
			version := int64(0)
			for _, c := range live {
				ids = append(ids, c.Pos)
				if c.Order != nil {
					if c.Order.Version < version {
						t.Errorf("version %d after %d at %s: backwards", c.Order.Version, version, c.Pos)
					}
					version = c.Order.Version
				}
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("ids: got %v, want %v", ids, tt.want)
			}
			if i := slices.IndexFunc(live, func(c store.Change) bool { return c.Op == store.OpUpdate }); i < 0 || live[i].Order.Version != 2 {
				t.Errorf("the update: got %v, want version 2 (its own post-image)", changeRows(live))
			}
			// The same stages after the $match, stream for stream.
			aggs := log.aggregates()
			if len(aggs)-feedAggs != feedAggs {
				t.Fatalf("aggregates: the feed opened %d streams, the catch-up %d, want as many", feedAggs, len(aggs)-feedAggs)
			}
			for i := range feedAggs {
				if f, c := stagesAfterMatch(t, aggs[i]), stagesAfterMatch(t, aggs[feedAggs+i]); f != c {
					t.Errorf("stream %d: the feed's stages %s, the catch-up's %s", i, f, c)
				}
			}
		})
	}
}

// A catch-up resumes after a split event's id, the last fragment's token,
// even when the event is on none of its topics: its pipeline has the split
// stage (without it the server refuses a fragment's token) and its $match
// keeps the event the token is in (whose own token is not the fragment's).
func TestCatchUpAfterSplitEvent(t *testing.T) {
	other, msg := bson.NewObjectID(), bson.NewObjectID()
	bob := orderBSON(other, store.StatusPlaced, 1)
	bob[1].Value = "bob"
	log := newFakeOplog(
		eventDoc(eventTok(1), "insert", messagesCollection, msg, messageBSON(msg, "lobby", "before")),
		eventDoc(eventTok(2), "insert", ordersCollection, other, bob),
		eventDoc(eventTok(3), "insert", messagesCollection, msg, messageBSON(msg, "lobby", "after")),
	)
	log.splitInto(2, 2)
	s, _, _ := openScripted(t, Options{}, log.reply)
	var got []string
	err := s.CatchUp(context.Background(), []string{store.RoomTopic("lobby")}, fragTok(2, 2), eventTok(3), func(c store.Change) error {
		got = append(got, c.Pos)
		return nil
	})
	if err != nil {
		t.Fatalf("CatchUp after a split event's id: %v", err)
	}
	if want := []string{eventTok(3)}; !slices.Equal(got, want) {
		t.Errorf("changes: got %v, want %v", got, want)
	}
}
