package mongo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"go.mongodb.org/mongo-driver/v2/bson"

	"changecast/store"
)

// fakeOplog is a change stream server over a fixed log of events, for
// catch-ups and feeds alike. An aggregate resumes after its resumeAfter
// token and answers with up to its batch size of the events after it (101
// by default, as mongod), a getMore with the next ones; an empty getMore
// answers with the last token read. Like mongod it:
//   - applies the pipeline's first $match (ns.coll, operationType,
//     clusterTime, documentKey._id, fullDocument.* with equality, $in, $and
//     and $or) to the event before any split;
//   - fails a resume with 280 when that $match drops the resume token's own
//     event (SERVER-71565), or when the token is a split event's fragment's
//     and the pipeline has no $changeStreamSplitLargeEvent;
//   - sends an update without its document (the stored event's
//     fullDocument is its post-image), unless fullDocument is updateLookup:
//     then with the document as it is now, the newest in the log;
//   - fails a whole batch with 10334 (BSONObjectTooLarge) when an event in
//     it is over 16 MB as serialized, that is after the pipeline: a large
//     event fits once a $project drops its fullDocument, and a split event
//     (split) is sent as its fragments when the pipeline ends with the
//     split stage, and is too large otherwise; a resume after a fragment
//     skips the fragments up to it;
//   - answers a find of one _id with the document as of its readConcern's
//     atClusterTime (the newest without one).
//
// It is safe for concurrent use.
type fakeOplog struct {
	mu      sync.Mutex
	events  []bson.D
	tokens  []string
	large   map[string]bool
	split   map[string][]bson.D // the fragments of a large event, by its token
	cursors map[int64]*fakeCursor
	nextID  int64
	aggs    []bson.Raw
	finds   []bson.Raw
}

type fakeCursor struct {
	next   int // index of the next event to send
	frag   int // fragments of events[next] already sent
	batch  int
	strip  bool // the pipeline drops fullDocument
	split  bool // the pipeline ends with $changeStreamSplitLargeEvent
	lookup bool // fullDocument: updateLookup
	match  bson.Raw
	last   string // the last token sent
}

func newFakeOplog(events ...bson.D) *fakeOplog {
	o := &fakeOplog{events: events, large: map[string]bool{}, split: map[string][]bson.D{}, cursors: map[int64]*fakeCursor{}, nextID: 100}
	for _, ev := range events {
		o.tokens = append(o.tokens, lookupString(mustRaw(ev), "_id", "_data"))
	}
	return o
}

// splitInto marks the event at inc as over 16 MB, split by the server into
// n fragments (tokens fragTok(inc, 1..n)), each with its _id and
// splitEvent: the first holds every other field but fullDocument, the
// last fullDocument, those between nothing else (the server fills each
// fragment up to the limit with whole top-level fields).
func (o *fakeOplog) splitInto(inc uint32, n int) {
	tok := eventTok(inc)
	var ev bson.D
	for i, t := range o.tokens {
		if t == tok {
			ev = o.events[i]
		}
	}
	var head, full bson.D
	for _, e := range ev {
		switch e.Key {
		case "_id":
		case "fullDocument":
			full = append(full, e)
		default:
			head = append(head, e)
		}
	}
	frags := make([]bson.D, n)
	for k := range n {
		f := bson.D{{Key: "_id", Value: tokDoc(fragTok(inc, k+1))}, {Key: "splitEvent", Value: bson.D{{Key: "fragment", Value: int32(k + 1)}, {Key: "of", Value: int32(n)}}}}
		switch k {
		case 0:
			f = append(f, head...)
		case n - 1:
			f = append(f, full...)
		}
		frags[k] = f
	}
	o.large[tok] = true
	o.split[tok] = frags
}

func mustRaw(d bson.D) bson.Raw {
	b, err := bson.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}

// fakeMatch reports whether doc passes the $match filter f.
func fakeMatch(doc, f bson.Raw) bool {
	elems, _ := f.Elements()
	for _, e := range elems {
		switch e.Key() {
		case "$and", "$or":
			clauses, _ := e.Value().Array().Values()
			some := false
			for _, c := range clauses {
				ok := fakeMatch(doc, c.Document())
				if e.Key() == "$and" && !ok {
					return false
				}
				some = some || ok
			}
			if e.Key() == "$or" && !some {
				return false
			}
		default:
			v, err := doc.LookupErr(strings.Split(e.Key(), ".")...)
			want := e.Value()
			if in, ok := want.DocumentOK(); ok {
				vals, _ := in.Lookup("$in").Array().Values()
				if err != nil || !slices.ContainsFunc(vals, v.Equal) {
					return false
				}
				continue
			}
			if err != nil || !v.Equal(want) {
				return false
			}
		}
	}
	return true
}

func (o *fakeOplog) reply(name string, body bson.Raw) bson.D {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch name {
	case "aggregate":
		o.aggs = append(o.aggs, body)
		after := lookupString(body, "pipeline", "0", "$changeStream", "resumeAfter", "_data")
		c := &fakeCursor{batch: 101, lookup: lookupString(body, "pipeline", "0", "$changeStream", "fullDocument") == "updateLookup"}
		if v, ok := body.Lookup("cursor", "batchSize").AsInt64OK(); ok {
			c.batch = int(v)
		}
		stages, _ := body.Lookup("pipeline").Array().Values()
		for _, st := range stages {
			if v, ok := st.Document().Lookup("$project", "fullDocument").AsInt64OK(); ok && v == 0 {
				c.strip = true
			}
			if _, err := st.Document().LookupErr("$changeStreamSplitLargeEvent"); err == nil {
				c.split = true
			}
			if m, ok := st.Document().Lookup("$match").DocumentOK(); ok && c.match == nil {
				c.match = m
			}
		}
		// The event the token is in: its own, or one of its fragments'.
		k := -1
		c.next = slices.IndexFunc(o.tokens, func(tok string) bool {
			k = slices.IndexFunc(o.split[tok], func(f bson.D) bool { return fragTokOf(f) == after })
			return tok == after || k >= 0
		})
		if c.next < 0 { // a high-water mark: the events after it
			c.next = 0
			for c.next < len(o.tokens) && o.tokens[c.next] < after {
				c.next++
			}
		} else {
			frags := o.split[o.tokens[c.next]]
			switch {
			case k >= 0 && !c.split:
				return serverErr(280, "ChangeStreamFatalError", "To resume from a split event, the $changeStream pipeline must include a $changeStreamSplitLargeEvent stage")
			case !c.keeps(o.events[c.next]):
				return serverErr(280, "ChangeStreamFatalError", "cannot resume stream; the resume token was not found")
			case k >= 0 && k+1 < len(frags):
				c.frag = k + 1
			default:
				c.next++
			}
		}
		c.last = after
		o.nextID++
		o.cursors[o.nextID] = c
		return o.batch(true, o.nextID, c)
	case "getMore":
		id, _ := body.Lookup("getMore").AsInt64OK()
		c := o.cursors[id]
		if c == nil {
			return errReply(43, "CursorNotFound")
		}
		if v, ok := body.Lookup("batchSize").AsInt64OK(); ok {
			c.batch = int(v)
		}
		return o.batch(false, id, c)
	case "find":
		o.finds = append(o.finds, body)
		return findReply(lookupString(body, "find"), o.document(body)...)
	case "killCursors":
		return okReply()
	}
	return errReply(59, "CommandNotFound")
}

func (c *fakeCursor) keeps(ev bson.D) bool { return c.match == nil || fakeMatch(mustRaw(ev), c.match) }

// document returns the document a find of one _id reads: as of its
// atClusterTime, or the newest.
func (o *fakeOplog) document(body bson.Raw) []bson.D {
	id := body.Lookup("filter", "_id")
	atT, atI, hasAt := body.Lookup("readConcern", "atClusterTime").TimestampOK()
	at := bson.Timestamp{T: atT, I: atI}
	var doc bson.D
	for _, ev := range o.events {
		r := mustRaw(ev)
		if !r.Lookup("documentKey", "_id").Equal(id) {
			continue
		}
		if t, i := r.Lookup("clusterTime").Timestamp(); hasAt && (bson.Timestamp{T: t, I: i}).After(at) {
			continue
		}
		for _, e := range ev {
			if e.Key == "fullDocument" {
				doc = e.Value.(bson.D)
			}
		}
	}
	if doc == nil {
		return nil
	}
	return []bson.D{doc}
}

// batch answers a cursor's next batch.
func (o *fakeOplog) batch(first bool, id int64, c *fakeCursor) bson.D {
	var docs []bson.D
	for c.next < len(o.events) && len(docs) < c.batch {
		i, tok := c.next, o.tokens[c.next]
		ev := o.events[i]
		if !c.keeps(ev) {
			c.next++
			continue
		}
		if frags := o.split[tok]; c.split && !c.strip && len(frags) > 0 {
			docs = append(docs, frags[c.frag])
			c.last = fragTokOf(frags[c.frag])
			if c.frag++; c.frag == len(frags) {
				c.next, c.frag = c.next+1, 0
			}
			continue
		}
		ev = slices.Clone(ev)
		if c.strip || lookupString(mustRaw(ev), "operationType") == store.OpUpdate {
			ev = slices.DeleteFunc(ev, func(e bson.E) bool { return e.Key == "fullDocument" })
		}
		if c.lookup && lookupString(mustRaw(ev), "operationType") == store.OpUpdate {
			body := mustRaw(bson.D{{Key: "find", Value: "x"}, {Key: "filter", Value: bson.D{{Key: "_id", Value: mustRaw(ev).Lookup("documentKey", "_id")}}}})
			if now := o.document(body); now != nil {
				ev = append(ev, bson.E{Key: "fullDocument", Value: now[0]})
			}
		}
		if !c.strip && o.large[tok] {
			return errReply(codeBSONObjectTooLarge, "BSONObjectTooLarge")
		}
		docs = append(docs, ev)
		c.last = tok
		c.next++
	}
	return cursorReply(first, id, c.last, docs...)
}

func fragTokOf(f bson.D) string { return lookupString(mustRaw(f), "_id", "_data") }

func (o *fakeOplog) aggregates() []bson.Raw {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.aggs)
}

// orderEvents returns n replace events of one order at increments
// 1..n of testSec.
func orderEvents(order bson.ObjectID, n int) []bson.D {
	evs := make([]bson.D, n)
	for i := range n {
		evs[i] = eventDoc(eventTok(uint32(i+1)), "replace", ordersCollection, order, orderBSON(order, store.StatusPreparing, int64(i+2)))
	}
	return evs
}

// A catch-up reads its range into memory and gives its slot back before
// it writes to the client: with every slot's client stalled in fn, another
// client still catches up, and the stalled ones finish once unblocked.
func TestCatchUpSlotFreeWhileWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		order := bson.NewObjectID()
		log := newFakeOplog(orderEvents(order, 3)...)
		s, _, _ := openScripted(t, Options{}, log.reply)
		topics := []string{store.OrderTopic(order.Hex())}
		after, until := hwmTok(0), eventTok(3)

		gate := make(chan struct{})
		released := false
		release := func() {
			if !released {
				released = true
				close(gate)
			}
		}
		defer release()
		stalled := make(chan error, DefaultCatchUps)
		for range DefaultCatchUps {
			go func() {
				stalled <- s.CatchUp(context.Background(), topics, after, until, func(store.Change) error {
					<-gate // a client that does not read
					return nil
				})
			}()
		}
		synctest.Wait()

		fast := make(chan error, 1)
		var got []string
		go func() {
			fast <- s.CatchUp(context.Background(), topics, after, until, func(c store.Change) error {
				got = append(got, c.Pos)
				return nil
			})
		}()
		synctest.Wait()
		select {
		case err := <-fast:
			if err != nil {
				t.Errorf("fast CatchUp: %v", err)
			}
		default:
			release()
			t.Fatalf("with %d stalled clients, another client's catch-up did not finish: it waits for a slot", DefaultCatchUps)
		}
		if want := []string{eventTok(1), eventTok(2), eventTok(3)}; !slices.Equal(got, want) {
			t.Errorf("fast client got %v, want %v", got, want)
		}
		if n := len(s.catchUps); n != 0 {
			t.Errorf("slots taken while %d clients are written to: %d, want 0", DefaultCatchUps, n)
		}
		release()
		for range DefaultCatchUps {
			if err := <-stalled; err != nil {
				t.Errorf("stalled CatchUp: %v", err)
			}
		}
	})
}

// At most the pool's size of catch-ups have a change stream open at once;
// the others wait in line, and a waiter whose context ends leaves.
func TestCatchUpPoolBoundsOpenStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const pool, clients = 2, 6
		order := bson.NewObjectID()
		log := newFakeOplog(orderEvents(order, 2)...)
		var mu sync.Mutex
		open, most := 0, 0
		serve := make(chan struct{})
		s, _, _ := openScripted(t, Options{CatchUps: pool}, func(name string, body bson.Raw) bson.D {
			if isChangeStream(name, body) {
				mu.Lock()
				open++
				most = max(most, open)
				mu.Unlock()
				<-serve // the server is slow to answer
			}
			if name == "killCursors" {
				mu.Lock()
				open--
				mu.Unlock()
			}
			return log.reply(name, body)
		})
		topics := []string{store.OrderTopic(order.Hex())}
		errs := make(chan error, clients)
		for range clients {
			go func() {
				errs <- s.CatchUp(context.Background(), topics, hwmTok(0), eventTok(2), func(store.Change) error { return nil })
			}()
		}
		synctest.Wait()
		mu.Lock()
		if open != pool {
			t.Errorf("change streams opening with %d catch-ups and a pool of %d: %d", clients, pool, open)
		}
		mu.Unlock()
		// One more, in line, whose context ends: it leaves without
		// opening a stream.
		ctx, cancel := context.WithCancel(context.Background())
		waiter := make(chan error, 1)
		go func() {
			waiter <- s.CatchUp(ctx, topics, hwmTok(0), eventTok(2), func(store.Change) error { return nil })
		}()
		synctest.Wait()
		cancel()
		if err := <-waiter; !errors.Is(err, context.Canceled) {
			t.Errorf("waiting catch-up whose context ended: got %v, want context.Canceled", err)
		}
		close(serve)
		for range clients {
			if err := <-errs; err != nil {
				t.Errorf("CatchUp: %v", err)
			}
		}
		if most != pool {
			t.Errorf("most change streams open at once: got %d, want %d", most, pool)
		}
		if n := len(log.aggregates()); n != clients {
			t.Errorf("change streams opened: got %d, want %d (one per catch-up, the cancelled waiter none)", n, clients)
		}
	})
}

// A range of more changes than catchUpBuffer is read in parts: each part
// resumes after the last event of the one before, and fn is called with
// no slot taken.
func TestCatchUpReadsInParts(t *testing.T) {
	order := bson.NewObjectID()
	const n = 2*catchUpBuffer + 5
	log := newFakeOplog(orderEvents(order, n)...)
	s, _, _ := openScripted(t, Options{}, log.reply)
	var got []string
	err := s.CatchUp(context.Background(), []string{store.OrderTopic(order.Hex())}, hwmTok(0), eventTok(n), func(c store.Change) error {
		if taken := len(s.catchUps); taken != 0 {
			return fmt.Errorf("fn called for %s with %d slots taken", c.Pos, taken)
		}
		got = append(got, c.Pos)
		return nil
	})
	if err != nil {
		t.Fatalf("CatchUp: %v", err)
	}
	var want []string
	for i := range n {
		want = append(want, eventTok(uint32(i+1)))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("changes: got %d, want %d in log order", len(got), len(want))
	}
	aggs := log.aggregates()
	var resumes []string
	for _, a := range aggs {
		resumes = append(resumes, lookupString(a, "pipeline", "0", "$changeStream", "resumeAfter", "_data"))
		if v, _ := a.Lookup("cursor", "batchSize").AsInt64OK(); v != catchUpBuffer {
			t.Errorf("aggregate batchSize: got %d, want %d", v, catchUpBuffer)
		}
	}
	if wantR := []string{hwmTok(0), eventTok(catchUpBuffer), eventTok(2 * catchUpBuffer)}; !slices.Equal(resumes, wantR) {
		t.Errorf("parts resume after %v, want %v", resumes, wantR)
	}
}

// A change event over 16 MB in a catch-up's range, at the opening
// aggregate or at a getMore, does not reset the client: the events around
// it are delivered, and the event itself, read without its document, is
// skipped.
func TestCatchUpPastTooLargeEvent(t *testing.T) {
	order := bson.NewObjectID()
	for _, tt := range []struct {
		name  string
		large uint32
	}{
		{"in the first batch", 2},
		{"in a getMore", 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log := newFakeOplog(orderEvents(order, 8)...)
			log.large[eventTok(tt.large)] = true
			s, _, _ := openScripted(t, Options{CatchUps: 1}, func(name string, body bson.Raw) bson.D {
				// The first batch holds the first three events.
				if name == "aggregate" && len(log.aggregates()) == 0 {
					body = setBatchSize(body, 3)
				}
				return log.reply(name, body)
			})
			var got []string
			err := s.CatchUp(context.Background(), []string{store.OrderTopic(order.Hex())}, hwmTok(0), eventTok(8), func(c store.Change) error {
				got = append(got, c.Pos)
				return nil
			})
			if err != nil {
				t.Fatalf("CatchUp: %v, want the events around the large one", err)
			}
			var want []string
			for i := uint32(1); i <= 8; i++ {
				if i != tt.large {
					want = append(want, eventTok(i))
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("changes: got %v, want %v", got, want)
			}
			stripped := 0
			for i, a := range log.aggregates() {
				// The feed's stages: no updateLookup, the split last.
				checkFeedStages(t, fmt.Sprintf("aggregate %d", i), command{Name: "aggregate", Body: a})
				proj, ok := a.Lookup("pipeline", "2", "$project").DocumentOK()
				if !ok {
					t.Fatalf("aggregate %s: no $project after the $match", a.Lookup("pipeline"))
				}
				if v, ok := bson.Raw(proj).Lookup("updateDescription").AsInt64OK(); !ok || v != 0 {
					t.Errorf("$project %s: want updateDescription dropped", bson.Raw(proj))
				}
				if _, err := bson.Raw(proj).LookupErr("fullDocument"); err == nil {
					stripped++
					if lookupString(a, "pipeline", "0", "$changeStream", "resumeAfter", "_data") != eventTok(tt.large-1) {
						t.Errorf("the stripped read resumes after %s, want the event before the large one", lookupString(a, "pipeline", "0", "$changeStream", "resumeAfter", "_data"))
					}
				}
			}
			if stripped != 1 {
				t.Errorf("reads without the document: got %d, want 1 (the large event only)", stripped)
			}
		})
	}
}

// setBatchSize returns an aggregate's body with cursor.batchSize n.
func setBatchSize(body bson.Raw, n int) bson.Raw {
	var d bson.D
	if err := bson.Unmarshal(body, &d); err != nil {
		panic(err)
	}
	for i, e := range d {
		if e.Key == "cursor" {
			d[i].Value = bson.D{{Key: "batchSize", Value: int32(n)}}
		}
	}
	return mustRaw(d)
}

// A catch-up on a list topic delivers the changes of its member orders:
// every order's for orders, a customer's own for customers/<sub>.
func TestCatchUpListTopics(t *testing.T) {
	ann, bob := bson.NewObjectID(), bson.NewObjectID()
	bobDoc := orderBSON(bob, store.StatusPlaced, 1)
	bobDoc[1].Value = "bob"
	log := newFakeOplog(
		eventDoc(eventTok(1), "insert", ordersCollection, ann, orderBSON(ann, store.StatusPlaced, 1)),
		eventDoc(eventTok(2), "insert", ordersCollection, bob, bobDoc),
		eventDoc(eventTok(3), "replace", ordersCollection, ann, orderBSON(ann, store.StatusPreparing, 2)),
	)
	s, _, _ := openScripted(t, Options{}, log.reply)
	for _, tt := range []struct {
		topic string
		want  []string
	}{
		{store.OrderListTopic, []string{eventTok(1), eventTok(2), eventTok(3)}},
		{store.CustomerTopic("ann"), []string{eventTok(1), eventTok(3)}},
		{store.CustomerTopic("bob"), []string{eventTok(2)}},
	} {
		var got []string
		if err := s.CatchUp(context.Background(), []string{tt.topic}, hwmTok(0), eventTok(3), func(c store.Change) error {
			got = append(got, c.Pos)
			return nil
		}); err != nil {
			t.Fatalf("CatchUp(%s): %v", tt.topic, err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("CatchUp(%s): got %v, want %v", tt.topic, got, tt.want)
		}
	}
}

// Every clause of the catch-up's $match, for each kind of topic: the
// events of after's and until's cluster times, an order's _id, a room and
// a room's updates, a customer's orders and the orders' updates, every
// order.
func TestCatchUpFilterClauses(t *testing.T) {
	after, until := eventTok(2), hwmTok(8)
	o1, o2 := bson.NewObjectID(), bson.NewObjectID()
	ends := bson.D{{Key: "clusterTime", Value: bson.D{{Key: "$in", Value: bson.A{bson.Timestamp{T: testSec, I: 2}, bson.Timestamp{T: testSec, I: 8}}}}}}
	both := bson.D{{Key: "ns.coll", Value: bson.D{{Key: "$in", Value: bson.A{"orders", "messages"}}}}}
	orderUpdates := bson.D{{Key: "ns.coll", Value: "orders"}, {Key: "operationType", Value: "update"}}
	roomUpdates := bson.D{{Key: "ns.coll", Value: "messages"}, {Key: "operationType", Value: "update"}}
	for _, tt := range []struct {
		name   string
		topics []string
		or     bson.A
	}{
		{"order", []string{store.OrderTopic(o1.Hex()), store.OrderTopic(o2.Hex()), store.OrderTopic(o1.Hex())}, bson.A{ends,
			bson.D{{Key: "ns.coll", Value: "orders"}, {Key: "documentKey._id", Value: bson.D{{Key: "$in", Value: bson.A{o1, o2}}}}}}},
		{"room", []string{store.RoomTopic("lobby"), store.RoomTopic("b")}, bson.A{ends,
			bson.D{{Key: "ns.coll", Value: "messages"}, {Key: "fullDocument.room", Value: bson.D{{Key: "$in", Value: bson.A{"lobby", "b"}}}}}, roomUpdates}},
		{"customer", []string{store.CustomerTopic("ann"), store.CustomerTopic("bob")}, bson.A{ends,
			bson.D{{Key: "ns.coll", Value: "orders"}, {Key: "fullDocument.customer", Value: bson.D{{Key: "$in", Value: bson.A{"ann", "bob"}}}}}, orderUpdates}},
		{"every kind", []string{store.RoomTopic("lobby"), store.CustomerTopic("ann"), store.OrderTopic(o1.Hex())}, bson.A{ends,
			bson.D{{Key: "ns.coll", Value: "orders"}, {Key: "fullDocument.customer", Value: bson.D{{Key: "$in", Value: bson.A{"ann"}}}}}, orderUpdates,
			bson.D{{Key: "ns.coll", Value: "orders"}, {Key: "documentKey._id", Value: bson.D{{Key: "$in", Value: bson.A{o1}}}}},
			bson.D{{Key: "ns.coll", Value: "messages"}, {Key: "fullDocument.room", Value: bson.D{{Key: "$in", Value: bson.A{"lobby"}}}}}, roomUpdates}},
		// Every order: the order and customer topics are within it.
		{"orders list", []string{store.CustomerTopic("ann"), store.OrderListTopic, store.OrderTopic(o1.Hex()), store.RoomTopic("lobby")}, bson.A{ends,
			bson.D{{Key: "ns.coll", Value: "orders"}},
			bson.D{{Key: "ns.coll", Value: "messages"}, {Key: "fullDocument.room", Value: bson.D{{Key: "$in", Value: bson.A{"lobby"}}}}}, roomUpdates}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			match, err := catchUpMatch(tt.topics, after, until)
			if err != nil {
				t.Fatal(err)
			}
			want := bson.D{{Key: "$match", Value: bson.D{{Key: "$and", Value: bson.A{both, bson.D{{Key: "$or", Value: tt.or}}}}}}}
			got, wantRaw := mustRaw(bson.D{{Key: "m", Value: match}}), mustRaw(bson.D{{Key: "m", Value: want}})
			if !slices.Equal(got, wantRaw) {
				t.Errorf("$match:\n got %s\nwant %s", got, wantRaw)
			}
		})
	}
}
