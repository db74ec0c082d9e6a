package mongo

import (
	"context"
	"slices"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/description"
	"go.mongodb.org/mongo-driver/v2/x/mongo/driver/xoptions"

	"changecast/store"
)

// rsDeployment is a scriptDeployment that the driver sees as a replica
// set with a primary, so that commands carry the read preference the
// driver sends to a replica set member: none for primary (OP_MSG never
// sends "primary", x/mongo/driver/operation.go createReadPref), the mode
// for any other.
type rsDeployment struct{ *scriptDeployment }

func (rsDeployment) Kind() description.TopologyKind {
	return description.TopologyKindReplicaSetWithPrimary
}

// openReplicaSet opens a Store with uri over a replica set whose server
// answers every command with reply, and returns the commands it got.
func openReplicaSet(t *testing.T, uri string, reply func(name string, body bson.Raw) bson.D) (*Store, func() []command) {
	t.Helper()
	var mu sync.Mutex
	var cmds []command
	d := rsDeployment{newScriptDeployment(func(name string, body bson.Raw) bson.D {
		mu.Lock()
		cmds = append(cmds, command{Name: name, Body: body})
		mu.Unlock()
		switch name {
		case "ping", "createIndexes", "endSessions":
			return okReply()
		}
		return reply(name, body)
	})}
	s, err := Open(context.Background(), uri, testDB, Options{clientOptions: func(_ string, o *options.ClientOptions) error {
		return xoptions.SetInternalClientOptions(o, "deployment", d)
	}})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, func() []command {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(cmds)
	}
}

// Every write is majority-acknowledged and journaled, and every read and
// change stream goes to the primary, reading what it has (local), even
// when the URI asks for w=1, no journal, secondaries and majority reads.
func TestWritesDurableReadsFromPrimary(t *testing.T) {
	order := bson.NewObjectID()
	written := bson.D{{Key: "n", Value: int32(1)}, {Key: "nModified", Value: int32(1)}, {Key: "ok", Value: 1.0}}
	s, sent := openReplicaSet(t, "mongodb://127.0.0.1:27017/?w=1&journal=false&readPreference=secondary&readConcernLevel=majority",
		func(name string, body bson.Raw) bson.D {
			switch name {
			case "insert", "update", "delete":
				return written
			case "find":
				return findReply(ordersCollection, orderBSON(order, store.StatusPlaced, 1))
			case "aggregate":
				return cursorReply(true, 5, eventTok(3))
			case "killCursors":
				return killReply(5)
			}
			return errReply(59, "CommandNotFound")
		})
	ctx := context.Background()
	if _, err := s.CreateOrder(ctx, "ann", []store.Item{{SKU: "pizza", Qty: 1}}); err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	if _, err := s.PostMessage(ctx, "lobby", "bob", "hi"); err != nil {
		t.Fatalf("PostMessage: %v", err)
	}
	if _, err := s.GetOrder(ctx, order.Hex()); err != nil {
		t.Fatalf("GetOrder: %v", err)
	}
	if _, err := s.UpdateOrderStatus(ctx, order.Hex(), store.StatusPreparing, 1); err != nil {
		t.Fatalf("UpdateOrderStatus: %v", err)
	}
	if _, err := s.ListOrders(ctx, store.OrderQuery{Customer: "ann"}); err != nil {
		t.Fatalf("ListOrders: %v", err)
	}
	if _, err := s.ListMessages(ctx, "lobby", "", 10); err != nil {
		t.Fatalf("ListMessages: %v", err)
	}
	if err := s.CatchUp(ctx, []string{store.OrderTopic(order.Hex())}, eventTok(1), eventTok(3), func(store.Change) error { return nil }); err != nil {
		t.Fatalf("CatchUp: %v", err)
	}

	counts := map[string]int{}
	for _, c := range sent() {
		counts[c.Name]++
		if rp, err := c.Body.LookupErr("$readPreference"); err == nil {
			t.Errorf("%s carries $readPreference %s, want none (primary)", c.Name, rp)
		}
		switch c.Name {
		case "insert", "update", "delete", "createIndexes":
			wc, ok := c.Body.Lookup("writeConcern").DocumentOK()
			w, _ := bson.Raw(wc).Lookup("w").StringValueOK()
			j, _ := bson.Raw(wc).Lookup("j").BooleanOK()
			if !ok || w != "majority" || !j {
				t.Errorf("%s writeConcern: got %s, want {w: \"majority\", j: true}", c.Name, bson.Raw(wc))
			}
		case "find":
			if lvl := lookupString(c.Body, "readConcern", "level"); lvl != "local" {
				t.Errorf("find readConcern: got %s, want level local (the primary's own writes)", c.Body.Lookup("readConcern"))
			}
		}
	}
	for _, name := range []string{"insert", "update", "find", "aggregate"} {
		if counts[name] == 0 {
			t.Errorf("no %s sent: %v", name, counts)
		}
	}
}
