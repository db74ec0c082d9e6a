package e2e

// End-to-end tests of two changecast processes over one MongoDB database,
// run only when MONGODB_URI names a replica set (see docs/mongodb.md); the
// workflow .github/workflows/mongodb.yml runs them on MongoDB 6.0, 7.0 and
// 8.0. Each test uses a database of its own, dropped at the end. The test
// imports the driver only to drop that database.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"changecast/internal/sseclient"
	"changecast/stream/sseparse"
)

// mongoE2EWait bounds the waits on a real server (an idle primary writes
// a no-op only every 10 s); it guards against hangs and measures nothing.
const mongoE2EWait = 60 * time.Second

// mongoDatabase skips t unless MONGODB_URI is set, and otherwise returns
// the environment of a changecast process on a fresh database of the
// test's own, dropped when the test ends (after its processes stop).
func mongoDatabase(t *testing.T) map[string]string {
	t.Helper()
	uri := os.Getenv("MONGODB_URI")
	if uri == "" {
		t.Skipf("MONGODB_URI not set: %s skipped", t.Name())
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	db := "changecast_e2e_" + hex.EncodeToString(rnd[:])
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), mongoE2EWait)
		defer cancel()
		c, err := mongodrv.Connect(options.Client().ApplyURI(uri))
		if err != nil {
			t.Errorf("drop the test database %s: %v", db, err)
			return
		}
		defer c.Disconnect(ctx)
		if err := c.Database(db).Drop(ctx); err != nil {
			t.Errorf("drop the test database %s: %v", db, err)
		}
	})
	return map[string]string{"MONGODB_URI": uri, "MONGODB_DATABASE": db}
}

// startMongoProcess starts changecast on env's database and waits until it
// is ready (its change feed running).
func startMongoProcess(t *testing.T, env map[string]string) *e2eServer {
	t.Helper()
	s := newE2EServer(t, env)
	deadline := time.Now().Add(mongoE2EWait)
	for {
		resp, err := http.Get(s.URL + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/readyz not 200 within %v (last: %v)\n%s", s.URL, mongoE2EWait, err, s.logs)
		}
		time.Sleep(50 * time.Millisecond) // polling for a condition
	}
}

// messageTexts returns the texts of the message events in evs, and fails
// on any event that is not a message.
func messageTexts(t *testing.T, evs []sseclient.Event) []string {
	t.Helper()
	var out []string
	for _, ev := range evs {
		if ev.Name != "message" {
			t.Fatalf("got a %s event where only messages belong:%s", ev.Name, describe(evs))
		}
		out = append(out, payload(t, ev).Message.Text)
	}
	return out
}

// TestMongoTwoProcessesMoveMidStream: a client reads a room on process A
// while messages are written; it drops off mid-stream, the writes go on,
// process B starts (its memory empty, so it must catch up from the
// database) and the client resumes on B with its Last-Event-ID while
// writes go on through both processes. Across the two connections it gets
// every message exactly once, in order.
func TestMongoTwoProcessesMoveMidStream(t *testing.T) {
	env := mongoDatabase(t)
	a := startMongoProcess(t, env)
	const room, total = "move", 60
	u := "/api/rooms/" + room + "/events"

	onA := watch(t, a.URL+u, "")
	if first := onA.WaitN(t, 1)[0]; first.Name != "snapshot" {
		t.Fatalf("first event on A is %s, want snapshot", first.Name)
	}
	// writer posts m<from>..m<to-1> one after another, each through the
	// next of targets in turn, and closes the returned channel when done.
	// The phases run one at a time, so the texts' order is the commit
	// order.
	writer := func(from, to int, targets ...*e2eServer) chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := from; i < to; i++ {
				url := targets[i%len(targets)].URL + "/api/rooms/" + room + "/messages"
				resp, err := http.Post(url, "application/json", strings.NewReader(fmt.Sprintf(`{"text":"m%d"}`, i)))
				if err != nil {
					t.Errorf("post m%d: %v", i, err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					t.Errorf("post m%d: status %d, want 201", i, resp.StatusCode)
					return
				}
			}
		}()
		return done
	}
	<-writer(0, 10, a)
	onA.WaitN(t, 11)

	// The client drops off while the next writes are arriving.
	phase2 := writer(10, 30, a)
	onA.WaitFor(t, "m12 on A", func(evs []sseclient.Event) bool { return len(evs) >= 14 })
	onA.Stop(t)
	<-phase2
	seenOnA := onA.Events()[1:]
	last := seenOnA[len(seenOnA)-1].ID

	b := startMongoProcess(t, env)
	phase3 := writer(30, total, a, b)
	onB := watch(t, b.URL+u, last)
	<-phase3
	want := total - len(seenOnA)
	seenOnB := onB.WaitN(t, want)

	all := slices.Concat(seenOnA, seenOnB)
	checkOrdered(t, all)
	got := messageTexts(t, all)
	var wantTexts []string
	for i := range total {
		wantTexts = append(wantTexts, fmt.Sprint("m", i))
	}
	if !slices.Equal(got, wantTexts) {
		t.Fatalf("across A (%d events) and B (%d events) the client got %q, want m0..m%d once each, in order", len(seenOnA), len(seenOnB), got, total-1)
	}
	// Nothing more arrives on B: a message posted now is the next event.
	postMessage(t, a.URL, room, "sentinel")
	evs := onB.WaitN(t, want+1)
	if ev := evs[want]; ev.Name != "message" || payload(t, ev).Message.Text != "sentinel" {
		t.Fatalf("after m%d, B sent %s %s; want the sentinel message", total-1, ev.Name, ev.Data)
	}
}

// rawItem is an event or a comment read off a stream.
type rawItem struct {
	ev        sseclient.Event
	isComment bool
	comment   string
}

// rawStream reads one connection's events and comments (heartbeats
// included), which the reconnecting client in sseclient.go hides.
type rawStream struct {
	items  chan rawItem
	cancel context.CancelFunc
	done   chan struct{}
}

// openRaw opens url with Last-Event-ID lastID (if not empty), checks that
// the answer is a 200 event stream and reads it in the background until
// the test ends.
func openRaw(t *testing.T, url, lastID string) *rawStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET %s: %s, want 200", url, resp.Status)
	}
	r := &rawStream{items: make(chan rawItem, 64), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer close(r.items)
		defer resp.Body.Close()
		push := func(it rawItem) bool {
			select {
			case r.items <- it:
				return true
			case <-ctx.Done():
				return false
			}
		}
		dec := sseparse.Decoder{
			OnEvent: func(ev *sseparse.Event) bool {
				return push(rawItem{ev: sseclient.Event{ID: string(ev.ID), Name: string(ev.Name), Data: append([]byte(nil), ev.Data...)}})
			},
			OnComment: func(text []byte) { push(rawItem{isComment: true, comment: string(text)}) },
		}
		_ = dec.Decode(resp.Body)
	}()
	t.Cleanup(r.Close)
	return r
}

// Close ends the connection and waits for the reader; it may be called
// more than once.
func (r *rawStream) Close() {
	r.cancel()
	<-r.done
}

// next returns the next event or comment, failing the test if the stream
// ends or nothing comes within the wait.
func (r *rawStream) next(t *testing.T, what string) rawItem {
	t.Helper()
	select {
	case it, ok := <-r.items:
		if !ok {
			t.Fatalf("the stream ended while waiting for %s", what)
		}
		return it
	case <-time.After(mongoE2EWait):
		t.Fatalf("no %s within %v", what, mongoE2EWait)
	}
	panic("unreachable")
}

// nextEvent returns the next event, skipping comments.
func (r *rawStream) nextEvent(t *testing.T, what string) sseclient.Event {
	t.Helper()
	for {
		if it := r.next(t, what); !it.isComment {
			return it.ev
		}
	}
}

// TestMongoSnapshotThenReconnect: a client takes a snapshot on process B
// and reconnects to B at once with the snapshot's id, no write in between.
// The position must not be ahead of B's feed: the stream goes live at once
// (its first heartbeat comes before any event, so no reset after the 5 s
// "ahead of the feed" wait), and the next write is its next event.
func TestMongoSnapshotThenReconnect(t *testing.T) {
	env := mongoDatabase(t)
	a := startMongoProcess(t, env)
	b := startMongoProcess(t, env)
	const room = "quiet"
	u := b.URL + "/api/rooms/" + room + "/events"
	// B's feed has passed the first message once a stream on B has it.
	onB := watch(t, u, "")
	onB.WaitN(t, 1)
	postMessage(t, a.URL, room, "before")
	onB.WaitN(t, 2)
	onB.Stop(t)

	for round := range 3 {
		first := openRaw(t, u, "")
		snap := first.nextEvent(t, "the snapshot")
		first.Close()
		if snap.Name != "snapshot" || snap.ID == "" {
			t.Fatalf("round %d: the first event of a fresh stream is %s with id %q, want a snapshot with an id", round, snap.Name, snap.ID)
		}
		if msgs := payload(t, snap).Messages; len(msgs) != 1+round || msgs[0].Text != "before" {
			t.Fatalf("round %d: the snapshot holds %d messages, want %d starting with \"before\": %s", round, len(msgs), 1+round, snap.Data)
		}

		again := openRaw(t, u, snap.ID)
		// The heartbeat ticks only once the stream is live (after its
		// catch-up or reset): an event before it is a reset or a replay.
		for {
			it := again.next(t, "the first heartbeat")
			if it.isComment {
				break
			}
			t.Fatalf("round %d: reconnecting with the snapshot's id %s, got %s %s before the stream went live; want nothing (no reset, no replay)", round, snap.ID, it.ev.Name, it.ev.Data)
		}
		text := fmt.Sprint("after ", round)
		postMessage(t, a.URL, room, text)
		ev := again.nextEvent(t, "the message written after the reconnect")
		if ev.Name != "message" || payload(t, ev).Message.Text != text || ev.ID <= snap.ID {
			t.Fatalf("round %d: after the reconnect got %s %s (id %s), want message %q after %s", round, ev.Name, ev.Data, ev.ID, text, snap.ID)
		}
		again.Close()
	}
}
