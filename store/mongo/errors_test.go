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

// serverErr is an error reply as mongod sends it: ok 0, its message, the
// code, the code's name (LocationNNN for codes raised by uassert at one
// place in the source) and any labels.
func serverErr(code int32, name, msg string, labels ...string) bson.D {
	d := errReply(code, name, labels...)
	d[1].Value = msg
	return d
}

// A catch-up started by a client's position that the server refuses for
// any reason but a transient one must end in reset + snapshot
// (ErrInvalidPosition), never in an error the client retries with the
// same id. The messages are mongod's for a non-hex token and for hex that
// is not a resume token (resume_token.cpp, key_string.cpp).
func TestCatchUpRefusedPositionResets(t *testing.T) {
	after, until := eventTok(5), eventTok(9)
	topics := []string{store.RoomTopic("lobby")}
	tests := []struct {
		name  string
		reply bson.D
	}{
		{"non-hex token", serverErr(9, "FailedToParse", "resume token string was not a valid hex string")},
		{"bad KeyString", serverErr(50811, "Location50811", "KeyString format error: Unknown type: 255")},
		{"bad token fields", serverErr(40649, "Location40649", "invalid empty resume token")},
		{"bad token version", serverErr(6189501, "Location6189501", "Invalid resume token: unknown token version")},
		{"not a document key", serverErr(50796, "Location50796", "Resume Token does not contain applyOpsIndex")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mm := openMock(t, Options{})
			mm.data.AddResponses(tt.reply)
			err := mm.store.CatchUp(context.Background(), topics, after, until, func(store.Change) error { return nil })
			if !errors.Is(err, store.ErrInvalidPosition) {
				t.Fatalf("CatchUp: got %v, want ErrInvalidPosition (reset and snapshot)", err)
			}
			if got := len(mm.dataCmds.named("aggregate")); got != 1 {
				t.Errorf("aggregates: got %d, want 1", got)
			}
		})
	}

	t.Run("refused in a getMore", func(t *testing.T) {
		mm := openMock(t, Options{})
		mm.data.AddResponses(
			cursorReply(true, 50, eventTok(6)),
			serverErr(50811, "Location50811", "KeyString format error: Unknown type: 255"),
			killReply(50),
		)
		err := mm.store.CatchUp(context.Background(), topics, after, until, func(store.Change) error { return nil })
		if !errors.Is(err, store.ErrInvalidPosition) {
			t.Fatalf("CatchUp: got %v, want ErrInvalidPosition", err)
		}
	})

	transient := []struct {
		name    string
		replies []bson.D
		code    int
	}{
		// 4.4+: the server labels what a change stream may resume from.
		{"primary stepped down", []bson.D{
			serverErr(189, "PrimarySteppedDown", "operation was interrupted because the primary stepped down", "ResumableChangeStreamError"),
			serverErr(189, "PrimarySteppedDown", "operation was interrupted because the primary stepped down", "ResumableChangeStreamError"),
		}, 189},
		// No label: the code alone says the node is going away.
		{"shutting down", []bson.D{
			serverErr(91, "ShutdownInProgress", "The server is in quiesce mode and will shut down"),
			serverErr(91, "ShutdownInProgress", "The server is in quiesce mode and will shut down"),
		}, 91},
		{"overloaded", []bson.D{
			serverErr(462, "IngressRequestRateLimitExceeded", "Rate limiter exceeded", "SystemOverloadedError", "RetryableError"),
			serverErr(462, "IngressRequestRateLimitExceeded", "Rate limiter exceeded", "SystemOverloadedError", "RetryableError"),
			serverErr(462, "IngressRequestRateLimitExceeded", "Rate limiter exceeded", "SystemOverloadedError", "RetryableError"),
			serverErr(462, "IngressRequestRateLimitExceeded", "Rate limiter exceeded", "SystemOverloadedError", "RetryableError"),
			serverErr(462, "IngressRequestRateLimitExceeded", "Rate limiter exceeded", "SystemOverloadedError", "RetryableError"),
			serverErr(462, "IngressRequestRateLimitExceeded", "Rate limiter exceeded", "SystemOverloadedError", "RetryableError"),
		}, 462},
	}
	for _, tt := range transient {
		t.Run("transient "+tt.name, func(t *testing.T) {
			mm := openMock(t, Options{})
			mm.data.AddResponses(tt.replies...)
			err := mm.store.CatchUp(context.Background(), topics, after, until, func(store.Change) error { return nil })
			if err == nil || errors.Is(err, store.ErrInvalidPosition) || errors.Is(err, store.ErrHistoryLost) {
				t.Fatalf("CatchUp: got %v, want a transient failure (no reset)", err)
			}
			if !serverCode(err, tt.code) {
				t.Errorf("CatchUp: got %v, want it to wrap the server's code %d", err, tt.code)
			}
		})
	}
}

// After an invalidate the feed starts after it; the driver resumes such a
// stream with resumeAfter the invalidate token, which the server refuses
// with 260. The feed must start after it again, keep the indexes that
// dropDatabase removed, and never hand out the invalidate token.
func TestFollowResumeAfterInvalidate(t *testing.T) {
	mm := openMock(t, Options{})
	order := bson.NewObjectID()
	after, inval := eventTok(1), eventTok(3)
	indexed := bson.D{{Key: "createdCollectionAutomatically", Value: true}, {Key: "numIndexesBefore", Value: int32(1)}, {Key: "numIndexesAfter", Value: int32(2)}, {Key: "ok", Value: 1.0}}
	mm.data.AddResponses(indexed, indexed)
	mm.feed.AddResponses(
		cursorReply(true, 42, after),
		cursorReply(false, 0, inval,
			eventDoc(eventTok(2), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1)),
			bson.D{
				{Key: "_id", Value: tokDoc(inval)},
				{Key: "operationType", Value: "invalidate"},
				{Key: "clusterTime", Value: bson.Timestamp{T: testSec, I: 3}},
			}),
		// Started after the invalidate: nothing yet, the post-batch
		// token is still the invalidate's.
		cursorReply(true, 43, inval),
		cursorReply(false, 43, inval),
		serverErr(6, "HostUnreachable", "Connection refused", "ResumableChangeStreamError"),
		killReply(43),
		// The driver's resume: resumeAfter the invalidate token.
		serverErr(260, "InvalidResumeToken", "Attempting to resume a change stream using 'resumeAfter' is not allowed from an invalidate notification."),
		cursorReply(true, 44, eventTok(4),
			eventDoc(eventTok(4), "insert", ordersCollection, order, orderBSON(order, store.StatusPlaced, 1))),
		killReply(44),
	)
	got, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool {
		return len(bs) > 0 && len(bs[len(bs)-1].Changes) > 0 && bs[len(bs)-1].Changes[0].Pos == eventTok(4)
	})
	if !errors.Is(err, errTestStop) {
		t.Fatalf("Follow returned %v, want the callback's error (it must start after the invalidate again)", err)
	}
	var pos []string
	for _, b := range got {
		if b.Checkpoint == inval {
			t.Errorf("checkpoint %s is the invalidate token, which resumeAfter refuses", inval)
		}
		for _, c := range b.Changes {
			pos = append(pos, c.Pos)
		}
	}
	if want := []string{eventTok(2), eventTok(4)}; !slices.Equal(pos, want) {
		t.Errorf("positions: got %v, want %v", pos, want)
	}
	aggs := mm.feedCmds.named("aggregate")
	if len(aggs) != 4 {
		t.Fatalf("aggregates: got %d, want 4 (open, startAfter, the driver's resume, startAfter again)", len(aggs))
	}
	for i, k := range map[int]string{1: "startAfter", 2: "resumeAfter", 3: "startAfter"} {
		if got := lookupString(changeStreamStage(t, aggs[i]), k, "_data"); got != inval {
			t.Errorf("aggregate %d %s: got %q, want the invalidate token", i, k, got)
		}
	}
	checkFeedStages(t, "restarted stream fullDocument", aggs[3])
	idx := mm.dataCmds.named("createIndexes")
	if len(idx) != 4 {
		t.Fatalf("createIndexes: got %d, want 4 (Open's two, again after the invalidate)", len(idx))
	}
	var colls []string
	for _, c := range idx[2:] {
		colls = append(colls, lookupString(c.Body, "createIndexes"))
	}
	if want := []string{messagesCollection, ordersCollection}; !slices.Equal(colls, want) {
		t.Errorf("createIndexes after invalidate on %v, want %v", colls, want)
	}
}

// The getMores of the feed and of catch-ups carry the chosen await times.
func TestAwaitTimes(t *testing.T) {
	maxTime := func(c command) int64 {
		v, _ := c.Body.Lookup("maxTimeMS").AsInt64OK()
		return v
	}
	t.Run("feed", func(t *testing.T) {
		mm := openMock(t, Options{})
		after := eventTok(1)
		mm.feed.AddResponses(cursorReply(true, 42, after), cursorReply(false, 42, hwmTok(5)), killReply(42))
		if _, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool { return len(bs) == 2 }); !errors.Is(err, errTestStop) {
			t.Fatalf("Follow: %v", err)
		}
		gm := mm.feedCmds.named("getMore")
		if len(gm) != 1 || maxTime(gm[0]) != feedAwait.Milliseconds() || feedAwait.Milliseconds() != 1000 {
			t.Errorf("feed getMores %v: want one with maxTimeMS 1000", gm)
		}
	})
	t.Run("catch-up", func(t *testing.T) {
		mm := openMock(t, Options{})
		mm.data.AddResponses(cursorReply(true, 50, eventTok(3)), cursorReply(false, 50, eventTok(9)), killReply(50))
		if err := mm.store.CatchUp(context.Background(), []string{store.RoomTopic("lobby")}, eventTok(2), eventTok(8), func(store.Change) error { return nil }); err != nil {
			t.Fatalf("CatchUp: %v", err)
		}
		gm := mm.dataCmds.named("getMore")
		if len(gm) != 1 || maxTime(gm[0]) != catchUpAwait.Milliseconds() || catchUpAwait.Milliseconds() != 1000 {
			t.Errorf("catch-up getMores %v: want one with maxTimeMS 1000", gm)
		}
	})
}

// tokenV1 is a version-1 event token (MongoDB before 7.0's FCV) at
// cluster time (testSec, inc).
func tokenV1(inc uint32) string {
	return fmt.Sprintf("82%08X%08X2B022C0100296E5A10040F5B9E4A2C7D4B1E8F3A6C5D2E1B0A9846645F69640064", uint32(testSec), inc)
}

func TestComparePositions(t *testing.T) {
	if v, ok := tokenVersion(eventTok(1)); !ok || v != 2 {
		t.Errorf("tokenVersion(v2 token): got %d %v", v, ok)
	}
	if v, ok := tokenVersion(tokenV1(1)); !ok || v != 1 {
		t.Errorf("tokenVersion(v1 token): got %d %v", v, ok)
	}
	tests := []struct {
		a, b string
		want int
		err  bool
	}{
		{eventTok(1), eventTok(2), -1, false},
		{eventTok(2), eventTok(2), 0, false},
		{tokenV1(1), eventTok(2), -1, false}, // other times: the time decides
		{eventTok(2), tokenV1(1), 1, false},
		{tokenV1(3), eventTok(3), 0, true}, // same time, other versions
		{eventTok(3), tokenV1(3), 0, true},
		{eventTok(3)[:18], eventTok(3), -1, false}, // a bare time sorts first
		{hwmV2(3), tokenV1(3), -1, false},          // a mark before the events of its time
		{tokenV1(3), hwmV2(3), 1, false},
	}
	for _, tt := range tests {
		got, err := comparePositions(tt.a, tt.b)
		if tt.err {
			if !errors.Is(err, store.ErrInvalidPosition) {
				t.Errorf("comparePositions(%.26s, %.26s): got %d, %v, want ErrInvalidPosition", tt.a, tt.b, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("comparePositions(%.26s, %.26s): got %d, %v, want %d", tt.a, tt.b, got, err, tt.want)
		}
	}
}

// A client's version-2 position met by version-1 events of the same
// cluster time (after a downgrade) would sort after all of them bytewise
// and skip them silently; it must be reset instead.
func TestCatchUpAcrossTokenVersions(t *testing.T) {
	mm := openMock(t, Options{})
	msg := bson.NewObjectID()
	mm.data.AddResponses(
		cursorReply(true, 50, tokenV1(9),
			eventDoc(tokenV1(3), "insert", messagesCollection, msg, messageBSON(msg, "lobby", "in the same transaction"))),
		killReply(50),
	)
	var got []string
	err := mm.store.CatchUp(context.Background(), []string{store.RoomTopic("lobby")}, eventTok(3), tokenV1(9), func(c store.Change) error {
		got = append(got, c.Pos)
		return nil
	})
	if !errors.Is(err, store.ErrInvalidPosition) {
		t.Fatalf("CatchUp: got %v (changes %v), want ErrInvalidPosition", err, got)
	}
}

// The same on the live feed: after a failover onto a server of another
// token version in the middle of a transaction, the rest of it comes in
// the other version at the checkpoint's cluster time. Follow must fail
// with ErrInvalidPosition (the feed restarts and resets its clients)
// rather than hand out ids that sort before its checkpoint.
func TestFollowAcrossTokenVersions(t *testing.T) {
	mm := openMock(t, Options{})
	msg := bson.NewObjectID()
	after := eventTok(3)
	mm.feed.AddResponses(
		cursorReply(true, 42, tokenV1(3),
			eventDoc(tokenV1(3)[:18]+"2B022C0200296E5A10040F5B9E4A2C7D4B1E8F3A6C5D2E1B0A9846645F69640064", "insert", messagesCollection, msg, messageBSON(msg, "lobby", "rest of the transaction"))),
		killReply(42),
	)
	got, err := followUntil(t, mm.store, after, func([]store.Batch) bool { return false })
	if !errors.Is(err, store.ErrInvalidPosition) {
		t.Fatalf("Follow: got %v after batches %v, want ErrInvalidPosition", err, got)
	}
}
