package e2e

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// scrape returns the value of the metric line that matches re (a full
// series name with labels), or -1 when there is none.
func scrape(tb testing.TB, base, series string) float64 {
	tb.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("/metrics: status %d", resp.StatusCode)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

func TestMetricsEndToEnd(t *testing.T) {
	t.Parallel()
	s := newE2EServer(t, nil)
	w := watch(t, s.URL+"/api/rooms/metered/events", "")
	w.WaitN(t, 1)
	postMessage(t, s.URL, "metered", "one")
	postMessage(t, s.URL, "metered", "two")
	w.WaitN(t, 3)
	doJSON(t, "POST", s.URL+"/api/rooms/BAD/messages", map[string]string{"text": "x"}, nil, nil)
	doJSON(t, "GET", s.URL+"/api/orders/0123456789abcdef01234567", nil, nil, nil)

	for _, tc := range []struct {
		series string
		want   float64
	}{
		{`changecast_streams_open`, 1},
		{`changecast_subscribers{kind="rooms"}`, 1},
		{`changecast_subscribers{kind="orders"}`, 0},
		{`changecast_events_delivered_total`, 4}, // the snapshot, the presence sync and two messages
		{`changecast_change_feed_up`, 1},
		{`changecast_http_requests_total{method="POST",route="/api/rooms/:room/messages",status="201"}`, 2},
		{`changecast_http_requests_total{method="POST",route="/api/rooms/:room/messages",status="400"}`, 1},
		{`changecast_http_requests_total{method="GET",route="/api/orders/:id",status="404"}`, 1},
	} {
		if got := scrape(t, s.URL, tc.series); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.series, got, tc.want)
		}
	}
	if lag := scrape(t, s.URL, "changecast_change_feed_lag_seconds"); lag < 0 || lag > 60 {
		t.Errorf("changecast_change_feed_lag_seconds = %v, want a small non-negative number", lag)
	}
	if w := scrape(t, s.URL, "changecast_log_replay_window_seconds"); w < 0 || w > 60 {
		t.Errorf("changecast_log_replay_window_seconds = %v, want how long ago the first message was written", w)
	}
	if n := scrape(t, s.URL, `changecast_http_request_duration_seconds_count{method="POST",route="/api/rooms/:room/messages"}`); n != 3 {
		t.Errorf("latency observations for POST messages = %v, want 3", n)
	}
	w.Stop(t)
}

// changeStreamsParsed returns how many $changeStream stages the server
// MONGODB_URI names has parsed since it started
// (serverStatus metrics.aggStageCounters, MongoDB 4.4 and later).
func changeStreamsParsed(t *testing.T, c *mongodrv.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), mongoE2EWait)
	defer cancel()
	var status bson.Raw
	if err := c.Database("admin").RunCommand(ctx, bson.D{{Key: "serverStatus", Value: 1}}).Decode(&status); err != nil {
		t.Fatalf("serverStatus: %v", err)
	}
	n, ok := status.Lookup("metrics", "aggStageCounters", "$changeStream").AsInt64OK()
	if !ok {
		t.Fatalf("serverStatus has no metrics.aggStageCounters.$changeStream: the count of change streams this test relies on")
	}
	return n
}

// TestMongoMetricsScrapeOpensNoStream: scraping /metrics, which reports
// the feed's lag, opens no change stream on the server, and neither do
// the snapshots of the streams opened after many scrapes (item 1: a
// scrape used to run a second Follow that took over the feed's
// bookkeeping, after which every snapshot opened a change stream).
// Counted by the server's own stage counter.
func TestMongoMetricsScrapeOpensNoStream(t *testing.T) {
	env := mongoDatabase(t)
	s := startMongoProcess(t, env)
	raw, err := mongodrv.Connect(options.Client().ApplyURI(env["MONGODB_URI"]))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Disconnect(context.Background())
	const room = "scraped"
	w := watch(t, s.URL+"/api/rooms/"+room+"/events", "")
	w.WaitN(t, 1)
	postMessage(t, s.URL, room, "one")
	w.WaitN(t, 2) // the feed has passed the message
	w.Stop(t)

	before := changeStreamsParsed(t, raw)
	const scrapes, streams = 30, 10
	for i := range scrapes {
		if lag := scrape(t, s.URL, "changecast_change_feed_lag_seconds"); lag < 0 || lag > 60 {
			t.Fatalf("scrape %d: changecast_change_feed_lag_seconds = %v, want a small non-negative number", i, lag)
		}
	}
	for range streams {
		c := watch(t, s.URL+"/api/rooms/"+room+"/events", "")
		if first := c.WaitN(t, 1)[0]; first.Name != "snapshot" {
			t.Fatalf("first event %s, want the snapshot", first.Name)
		}
		c.Stop(t)
	}
	if opened := changeStreamsParsed(t, raw) - before; opened != 0 {
		t.Errorf("%d scrapes and %d snapshots opened %d change streams, want 0 (the lag comes from the running feed, the snapshots' positions too)", scrapes, streams, opened)
	}
}
