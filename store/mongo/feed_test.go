package mongo

import (
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
// would meet it again. The feed opens the stream again from its
// checkpoint and reads one event a batch: the ordinary events before the
// large one arrive; when a batch fails again, the next event is the large
// one, read once without its document and left out; then whole batches
// again after it, where an ordinary update arrives with its document.
// Nothing depends on the error's message.
func TestFollowTooLargeEvent(t *testing.T) {
	order := bson.NewObjectID()
	after := eventTok(1)
	rest := []bson.D{
		// One event a batch: the insert before the large one.
		cursorReply(true, 43, eventTok(2), eventDoc(eventTok(2), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1))),
		tooLarge(eventTok(3)),
		killReply(43),
		// The large one without its document.
		cursorReply(true, 44, eventTok(3), eventDoc(eventTok(3), "replace", ordersCollection, order, nil)),
		killReply(44),
		// Whole batches again: an ordinary update, whose event has no
		// document; the feed reads it at the event's time.
		cursorReply(true, 45, eventTok(4), eventDoc(eventTok(4), "update", ordersCollection, order, nil)),
		killReply(45),
	}
	unnamed := serverErr(10334, "BSONObjectTooLarge", "BSONObj size: 16793699 (0x1004063) is invalid")
	for _, tt := range []struct {
		name    string
		replies []bson.D
	}{
		{"in the opening aggregate", append([]bson.D{tooLarge(eventTok(3))}, rest...)},
		{"in a getMore, a message that names no event", append([]bson.D{cursorReply(true, 42, after), unnamed, killReply(42)}, rest...)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			mm := openMock(t, Options{})
			mm.feed.AddResponses(tt.replies...)
			mm.data.AddResponses(findReply(ordersCollection, orderBSON(order, store.StatusPreparing, 2)))
			got, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool { return len(bs) == 4 })
			if !errors.Is(err, errTestStop) {
				t.Fatalf("Follow returned %v, want the callback's error (the feed goes on)", err)
			}
			if want := []string{row(after), row(eventTok(2), eventTok(2)), row(eventTok(3)), row(eventTok(4), eventTok(4))}; !slices.Equal(batchRows(got), want) {
				t.Errorf("batches:\n got %v\nwant %v", batchRows(got), want)
			}
			if o := got[3].Changes[0].Order; o == nil || o.Version != 2 || got[3].Changes[0].Op != store.OpUpdate {
				t.Errorf("the ordinary update: got %+v, want version 2 of the order", got[3].Changes[0])
			}
			aggs := mm.feedCmds.named("aggregate")
			if len(aggs) != 4 {
				t.Fatalf("aggregates: got %d, want 4", len(aggs))
			}
			for i, w := range []struct {
				resume   string
				batch    int64 // 0: the server's default
				stripped bool
			}{{after, 0, false}, {after, 1, false}, {eventTok(2), 1, true}, {eventTok(3), 0, false}} {
				agg := aggs[i]
				if got := lookupString(changeStreamStage(t, agg), "resumeAfter", "_data"); got != w.resume {
					t.Errorf("aggregate %d resumeAfter: got %q, want %q", i, got, w.resume)
				}
				if got, _ := agg.Body.Lookup("cursor", "batchSize").AsInt64OK(); got != w.batch {
					t.Errorf("aggregate %d batchSize: got %d, want %d", i, got, w.batch)
				}
				checkFeedStages(t, fmt.Sprintf("aggregate %d", i), agg)
				stages := pipelineStages(t, agg)
				_, err := stages[len(stages)-2].LookupErr("$project", "fullDocument")
				if stripped := err == nil; stripped != w.stripped {
					t.Errorf("aggregate %d: fullDocument projected away %v, want %v", i, stripped, w.stripped)
				}
			}
		})
	}
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
