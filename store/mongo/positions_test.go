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

// hwmV2 is a version-2 high-water-mark token at cluster time (testSec,
// inc), as a 7.0 server makes after an upgrade.
func hwmV2(inc uint32) string { return fmt.Sprintf("82%08X%08X2B042929296E04", uint32(testSec), inc) }

// Positions order by cluster time, then high-water marks before events,
// whatever the token versions: a version-2 high-water mark sorts after a
// version-1 event of its time as a string, but comes before it in the log.
func TestComparePositionOrder(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{eventTok(1), eventTok(2), -1},
		{eventTok(2), eventTok(2), 0},
		{tokenV1(1), eventTok(2), -1},
		{hwmTok(3), eventTok(3), -1},
		{hwmV2(3), tokenV1(3), -1}, // strings say +1
		{tokenV1(3), hwmV2(3), 1},
		{hwmV2(3), tokenV1(2), 1},
		{eventTok(3)[:18], hwmTok(3), -1},
	} {
		if got := comparePositionOrder(tt.a, tt.b); got != tt.want {
			t.Errorf("ComparePositions(%.26s, %.26s): got %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
	// A total order: antisymmetric and transitive over tokens of both
	// versions, events and high-water marks, at three times.
	var all []string
	for inc := uint32(1); inc <= 3; inc++ {
		all = append(all, eventTok(inc), tokenV1(inc), hwmTok(inc), hwmV2(inc), eventTok(inc)[:18])
	}
	for _, a := range all {
		for _, b := range all {
			if ab, ba := comparePositionOrder(a, b), comparePositionOrder(b, a); ab != -ba || (ab == 0) != (a == b) {
				t.Errorf("not antisymmetric: %.30s vs %.30s: %d, %d", a, b, ab, ba)
			}
			for _, c := range all {
				if comparePositionOrder(a, b) < 0 && comparePositionOrder(b, c) < 0 && comparePositionOrder(a, c) >= 0 {
					t.Errorf("not transitive: %.30s < %.30s < %.30s", a, b, c)
				}
			}
		}
	}
}

// A catch-up up to a version-2 high-water mark stops at a version-1 event
// of the mark's time: the event is after the mark (the live feed sends
// it), although its token sorts before the mark as a string.
func TestCatchUpUntilAcrossTokenVersions(t *testing.T) {
	order := bson.NewObjectID()
	after, until := tokenV1(2), hwmV2(5)
	log := newFakeOplog(
		eventDoc(tokenV1(3), "replace", ordersCollection, order, orderBSON(order, store.StatusPreparing, 2)),
		eventDoc(tokenV1(5), "replace", ordersCollection, order, orderBSON(order, store.StatusCancelled, 3)),
		eventDoc(tokenV1(6), "replace", ordersCollection, order, orderBSON(order, store.StatusCancelled, 4)),
	)
	s, _, _ := openScripted(t, Options{}, log.reply)
	var got []string
	if err := s.CatchUp(context.Background(), []string{store.OrderTopic(order.Hex())}, after, until, func(c store.Change) error {
		got = append(got, c.Pos)
		return nil
	}); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}
	if want := []string{tokenV1(3)}; !slices.Equal(got, want) {
		t.Errorf("changes up to %.30s: got %v, want %v (the event at its time is after it)", until, got, want)
	}
	if s.ComparePositions(tokenV1(5), until) <= 0 {
		t.Errorf("ComparePositions(event at T, version-2 mark at T) <= 0")
	}
}

// The feed orders its checkpoints through comparePositionOrder: a quiet
// getMore's version-2 high-water mark at the time of the version-1 event
// just handed over is before that event in the log (although after it as
// a string), so it is no new checkpoint; resuming from it would send the
// event again. A later mark is.
func TestFollowCheckpointsAcrossTokenVersions(t *testing.T) {
	mm := openMock(t, Options{})
	msg := bson.NewObjectID()
	after := tokenV1(1)
	mm.feed.AddResponses(
		cursorReply(true, 42, after),
		cursorReply(false, 42, tokenV1(5), eventDoc(tokenV1(5), "insert", messagesCollection, msg, messageBSON(msg, "lobby", "hi"))),
		cursorReply(false, 42, hwmV2(5)),
		cursorReply(false, 42, hwmV2(6)),
		killReply(42),
	)
	got, err := followUntil(t, mm.store, after, func(bs []store.Batch) bool { return bs[len(bs)-1].Checkpoint == hwmV2(6) || len(bs) == 4 })
	if !errors.Is(err, errTestStop) {
		t.Fatalf("Follow: got %v, want the callback's error", err)
	}
	if want := []string{row(after), row(tokenV1(5), tokenV1(5)), row(hwmV2(6))}; !slices.Equal(batchRows(got), want) {
		t.Errorf("batches:\n got %v\nwant %v", batchRows(got), want)
	}
}
