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

// checkFeedStages checks that the feed's aggregate agg asks for no
// updateLookup and ends its pipeline with updateDescription projected
// away and $changeStreamSplitLargeEvent last.
func checkFeedStages(t *testing.T, what string, agg command) {
	t.Helper()
	if got := lookupString(changeStreamStage(t, agg), "fullDocument"); got != "" && got != "default" {
		t.Errorf("%s: fullDocument %q, want none (the feed reads an update's document at its own time)", what, got)
	}
	stages := pipelineStages(t, agg)
	if len(stages) < 3 {
		t.Fatalf("%s: pipeline %v, want at least $changeStream, $match, $project", what, agg.Body.Lookup("pipeline"))
	}
	if _, err := stages[len(stages)-1].LookupErr("$changeStreamSplitLargeEvent"); err != nil {
		t.Errorf("%s: last stage %v, want $changeStreamSplitLargeEvent", what, stages[len(stages)-1])
	}
	if v, ok := stages[len(stages)-2].Lookup("$project", "updateDescription").AsInt64OK(); !ok || v != 0 {
		t.Errorf("%s: stage before the split %v, want $project {updateDescription: 0}", what, stages[len(stages)-2])
	}
}

// pipelineStages returns an aggregate's stages.
func pipelineStages(t *testing.T, agg command) []bson.Raw {
	t.Helper()
	vals, err := agg.Body.Lookup("pipeline").Array().Values()
	if err != nil {
		t.Fatalf("aggregate without a pipeline: %v", agg.Body)
	}
	out := make([]bson.Raw, len(vals))
	for i, v := range vals {
		out[i] = v.Document()
	}
	return out
}

// skipped returns the positions an aggregate's pipeline leaves out with
// a $match on _id._data $nin.
func skipped(t *testing.T, agg command) []string {
	t.Helper()
	var out []string
	for _, st := range pipelineStages(t, agg) {
		nin, err := st.LookupErr("$match", "_id._data", "$nin")
		if err != nil {
			continue
		}
		vals, _ := nin.Array().Values()
		for _, v := range vals {
			out = append(out, v.StringValue())
		}
	}
	return out
}

// tooLarge is mongod's 10334 for a change event it cannot put in a batch
// (plan_executor_pipeline.cpp; the message is BSONObj's size check, which
// names the object's first element, the event's _id).
func tooLarge(pos string) bson.D {
	return serverErr(10334, "BSONObjectTooLarge", "BSONObj size: 16793699 (0x1004063) is invalid. Size must be between 0 and 16793600(16MB) First element: _id: { _data: \""+pos+"\" }")
}

// batchRows describes batches as "[positions] @checkpoint".
func batchRows(bs []store.Batch) []string {
	var rows []string
	for _, b := range bs {
		var r []string
		for _, c := range b.Changes {
			r = append(r, c.Pos)
		}
		rows = append(rows, fmt.Sprint(r, " @", b.Checkpoint))
	}
	return rows
}

func row(cp string, pos ...string) string { return fmt.Sprint(pos, " @", cp) }

// A change event the server cannot send (10334) fails the aggregate that
// opens the feed as well as a getMore, and resuming from the same point
// would meet it again. The feed opens the stream again from the same
// point with a $match that leaves out that one event: every other event
// of the failed batch still arrives, an ordinary update too.
func TestFollowTooLargeEvent(t *testing.T) {
	order := bson.NewObjectID()
	after := eventTok(1)
	rest := []bson.D{
		cursorReply(true, 44, eventTok(4),
			eventDoc(eventTok(2), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1)),
			// An ordinary update next to the large one: no document in
			// the event; the feed reads it at the event's time.
			eventDoc(eventTok(4), "update", ordersCollection, order, nil)),
		killReply(44),
	}
	for _, tt := range []struct {
		name    string
		replies []bson.D
		aggs    int
	}{
		{"in the opening aggregate", append([]bson.D{tooLarge(eventTok(3))}, rest...), 2},
		{"in a getMore", append([]bson.D{cursorReply(true, 42, after), tooLarge(eventTok(3)), killReply(42)}, rest...), 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mm := openMock(t, Options{})
			mm.feed.AddResponses(tt.replies...)
			mm.data.AddResponses(findReply(ordersCollection, orderBSON(order, store.StatusPreparing, 2)))
			got, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool { return len(bs) == 2 })
			if !errors.Is(err, errTestStop) {
				t.Fatalf("Follow returned %v, want the callback's error (the feed goes on)", err)
			}
			if want := []string{row(after), row(eventTok(4), eventTok(2), eventTok(4))}; !slices.Equal(batchRows(got), want) {
				t.Errorf("batches:\n got %v\nwant %v", batchRows(got), want)
			}
			if o := got[1].Changes[1].Order; o == nil || o.Version != 2 || got[1].Changes[1].Op != store.OpUpdate {
				t.Errorf("the ordinary update: got %+v, want version 2 of the order", got[1].Changes[1])
			}
			aggs := mm.feedCmds.named("aggregate")
			if len(aggs) != tt.aggs {
				t.Fatalf("aggregates: got %d, want %d", len(aggs), tt.aggs)
			}
			if s := skipped(t, aggs[0]); len(s) != 0 {
				t.Errorf("first aggregate leaves out %v, want nothing", s)
			}
			reopen := aggs[len(aggs)-1]
			if got := lookupString(changeStreamStage(t, reopen), "resumeAfter", "_data"); got != after {
				t.Errorf("reopened resumeAfter: got %q, want the checkpoint %q", got, after)
			}
			if s := skipped(t, reopen); !slices.Equal(s, []string{eventTok(3)}) {
				t.Errorf("reopened stream leaves out %v, want only the large event %s", s, eventTok(3))
			}
			checkFeedStages(t, "reopened stream", reopen)
		})
	}

	t.Run("a message that names no event", func(t *testing.T) {
		mm := openMock(t, Options{})
		mm.feed.AddResponses(serverErr(10334, "BSONObjectTooLarge", "BSONObj size: 16793699 (0x1004063) is invalid"))
		err := mm.store.Follow(context.Background(), after, func(store.Batch) error { return nil })
		if !serverCode(err, codeBSONObjectTooLarge) {
			t.Fatalf("Follow: got %v, want the server's 10334", err)
		}
		if got := len(mm.feedCmds.named("aggregate")); got != 1 {
			t.Errorf("aggregates: got %d, want 1 (nothing to leave out)", got)
		}
	})
}

// A server before 6.0.9 or 7.0 refuses $changeStreamSplitLargeEvent with
// 40324, and one whose feature compatibility version is older with 224:
// the feed opens its stream again without the stage, once.
func TestFollowWithoutSplitStage(t *testing.T) {
	order := bson.NewObjectID()
	after := eventTok(1)
	for _, refusal := range []bson.D{
		serverErr(40324, "Location40324", "Unrecognized pipeline stage name: '$changeStreamSplitLargeEvent'"),
		serverErr(224, "QueryFeatureNotAllowed", "$changeStreamSplitLargeEvent is not allowed in the current feature compatibility version"),
	} {
		t.Run(lookupString(bsonRaw(t, refusal), "codeName"), func(t *testing.T) {
			mm := openMock(t, Options{})
			mm.feed.AddResponses(
				refusal,
				cursorReply(true, 42, eventTok(2), eventDoc(eventTok(2), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1))),
				killReply(42),
			)
			got, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool { return len(bs) == 2 })
			if !errors.Is(err, errTestStop) {
				t.Fatalf("Follow returned %v, want the callback's error", err)
			}
			if want := []string{row(after), row(eventTok(2), eventTok(2))}; !slices.Equal(batchRows(got), want) {
				t.Errorf("batches:\n got %v\nwant %v", batchRows(got), want)
			}
			aggs := mm.feedCmds.named("aggregate")
			if len(aggs) != 2 {
				t.Fatalf("aggregates: got %d, want 2", len(aggs))
			}
			checkFeedStages(t, "first aggregate", aggs[0])
			stages := pipelineStages(t, aggs[1])
			if _, err := stages[len(stages)-1].LookupErr("$project", "updateDescription"); err != nil {
				t.Errorf("second aggregate's last stage: got %v, want the $project, without the split", stages[len(stages)-1])
			}
		})
	}
}

func bsonRaw(t *testing.T, d bson.D) bson.Raw {
	t.Helper()
	b, err := bson.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fragTok is the token of fragment n of the event at inc: fragments share
// the event's cluster time and sort in order.
func fragTok(inc uint32, n int) string { return eventTok(inc) + fmt.Sprintf("%02X", 2*n) }

// An event split by $changeStreamSplitLargeEvent reaches fn whole, with
// the last fragment's position, even when its fragments come in two
// batches; no checkpoint falls between fragments (resuming there would
// lose the first ones).
func TestFollowJoinsSplitEvent(t *testing.T) {
	mm := openMock(t, Options{})
	order, msg := bson.NewObjectID(), bson.NewObjectID()
	after := eventTok(1)
	full := eventDoc(fragTok(3, 1), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1))
	// Fragment 1: the event's fields but fullDocument; fragment 2: _id,
	// splitEvent and fullDocument, as the server cuts at top-level fields.
	var frag1 bson.D
	for _, e := range full {
		if e.Key != "fullDocument" {
			frag1 = append(frag1, e)
		}
	}
	frag1 = append(frag1, bson.E{Key: "splitEvent", Value: bson.D{{Key: "fragment", Value: int32(1)}, {Key: "of", Value: int32(2)}}})
	frag2 := bson.D{
		{Key: "_id", Value: tokDoc(fragTok(3, 2))},
		{Key: "splitEvent", Value: bson.D{{Key: "fragment", Value: int32(2)}, {Key: "of", Value: int32(2)}}},
		{Key: "fullDocument", Value: orderBSON(order, store.StatusPlaced, 1)},
	}
	mm.feed.AddResponses(
		cursorReply(true, 42, after),
		cursorReply(false, 42, fragTok(3, 1),
			eventDoc(eventTok(2), "insert", messagesCollection, msg, messageBSON(msg, "lobby", "hi")),
			frag1),
		cursorReply(false, 42, eventTok(4), frag2,
			eventDoc(eventTok(4), "insert", messagesCollection, msg, messageBSON(msg, "lobby", "after"))),
		killReply(42),
	)
	got, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool { return len(bs) == 3 })
	if !errors.Is(err, errTestStop) {
		t.Fatalf("Follow returned %v, want the callback's error", err)
	}
	want := []string{row(after), row(eventTok(2), eventTok(2)), row(eventTok(4), fragTok(3, 2), eventTok(4))}
	if !slices.Equal(batchRows(got), want) {
		t.Errorf("batches:\n got %v\nwant %v", batchRows(got), want)
	}
	if len(got) == 3 {
		if c := got[2].Changes[0]; c.Order == nil || c.Order.ID != order.Hex() || c.Order.Status != store.StatusPlaced || c.Topic != store.OrderTopic(order.Hex()) || c.Op != store.OpInsert {
			t.Errorf("joined event: got %+v, want the order's insert", c)
		}
	}
}
