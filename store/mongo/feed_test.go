package mongo

import (
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// checkFeedStages checks that the feed's aggregate agg asks for no
// updateLookup and ends its pipeline with updateDescription projected
// away and $changeStreamSplitLargeEvent last.
func checkFeedStages(t *testing.T, what string, agg command) {
	t.Helper()
	if got := lookupString(changeStreamStage(t, agg), "fullDocument"); got != "" && got != "default" {
		t.Errorf("%s: fullDocument %q, want none (the feed reads an update's document at its own time)", what, got)
	}
	stages, err := agg.Body.Lookup("pipeline").Array().Values()
	if err != nil || len(stages) < 3 {
		t.Fatalf("%s: pipeline %v, want at least $changeStream, $match, $project", what, agg.Body.Lookup("pipeline"))
	}
	last := stages[len(stages)-1].Document()
	if _, err := last.LookupErr("$changeStreamSplitLargeEvent"); err != nil {
		t.Errorf("%s: last stage %v, want $changeStreamSplitLargeEvent", what, last)
	}
	proj := stages[len(stages)-2].Document()
	if v, ok := proj.Lookup("$project", "updateDescription").AsInt64OK(); !ok || v != 0 {
		t.Errorf("%s: stage before the split %v, want $project {updateDescription: 0}", what, proj)
	}
}

var _ = bson.Raw{}
