package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
)

// Collection names of the MongoDB backend.
const (
	mongoOrders   = "orders"
	mongoMessages = "messages"
)

// DefaultMongoCatchUps is how many catch-up change streams a Mongo store runs
// at once when MongoOptions.CatchUps is zero. Each one holds a pooled
// connection while it waits in getMore; 16 leaves most of the driver's default
// pool of 100 to ordinary reads and writes.
const DefaultMongoCatchUps = 16

// mongoUpdateAttempts bounds how often UpdateOrderStatus re-reads an order
// that another writer changed between its read and its check-and-set.
const mongoUpdateAttempts = 8

// mongoCloseTimeout bounds the clean-up calls made while closing (killCursors,
// endSessions), which must not hang on an unreachable server.
const mongoCloseTimeout = 5 * time.Second

// MongoOptions configures OpenMongo. The zero value is usable.
type MongoOptions struct {
	// CatchUps caps the number of catch-up change streams open at once;
	// zero means DefaultMongoCatchUps. CatchUp waits for a free slot.
	CatchUps int
	// Logger receives the feed's restarts; nil discards them.
	Logger *slog.Logger

	// clientOptions, when set, adjusts the driver options of the data
	// client (role "data") and of the feed's client (role "feed") before
	// they connect. Tests use it to plug in the driver's mock deployment.
	clientOptions func(role string, o *options.ClientOptions) error
}

// Mongo is the MongoDB backend of the store: orders and messages in two
// collections of one database, and their change log read from MongoDB change
// streams. It needs a replica set or a sharded cluster. A Mongo is safe for
// concurrent use.
//
// Positions are the hex strings of the change events' resume tokens
// (_id._data); within one deployment they compare bytewise like the log, so
// every process following the same database hands out the same ids.
type Mongo struct {
	client   *mongo.Client // reads, writes, Head, Snapshot and catch-ups
	feed     *mongo.Client // only Follow's long-lived change stream
	db       *mongo.Database
	feedDB   *mongo.Database
	orders   *mongo.Collection
	messages *mongo.Collection
	catchUps chan struct{} // semaphore: one token per running catch-up
	log      *slog.Logger

	done   context.Context // cancelled by Close
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed and calls to wg.Add
	closed bool
	wg     sync.WaitGroup // calls in flight
}

// mongoOrderDoc is an order as stored: the order's fields and its ObjectID.
type mongoOrderDoc struct {
	ID    bson.ObjectID `bson:"_id"`
	Order `bson:",inline"`
}

func (d mongoOrderDoc) order() Order {
	o := d.Order
	o.ID = d.ID.Hex()
	if o.Items == nil {
		o.Items = []Item{}
	}
	return o
}

// mongoMessageDoc is a message as stored.
type mongoMessageDoc struct {
	ID      bson.ObjectID `bson:"_id"`
	Message `bson:",inline"`
}

func (d mongoMessageDoc) message() Message {
	m := d.Message
	m.ID = d.ID.Hex()
	return m
}

// OpenMongo connects to the MongoDB deployment at uri, uses database
// (created on first write), checks the server answers and creates the
// indexes: messages by room and _id, orders by customer. It returns an error
// if the server cannot be reached before ctx ends or the indexes cannot be
// built. Close the store to disconnect.
func OpenMongo(ctx context.Context, uri, database string, opts MongoOptions) (*Mongo, error) {
	if database == "" {
		return nil, fmt.Errorf("open mongo: database name is empty: %w", ErrInvalid)
	}
	connect := func(role string) (*mongo.Client, error) {
		o := options.Client().ApplyURI(uri).SetAppName("changecast")
		if opts.clientOptions != nil {
			if err := opts.clientOptions(role, o); err != nil {
				return nil, err
			}
		}
		return mongo.Connect(o)
	}
	client, err := connect("data")
	if err != nil {
		return nil, fmt.Errorf("open mongo: %w", err)
	}
	// The feed's change stream sits in getMore on a pooled connection all
	// the time; on a client of its own it never competes with requests.
	feed, err := connect("feed")
	if err != nil {
		_ = client.Disconnect(context.WithoutCancel(ctx))
		return nil, fmt.Errorf("open mongo feed client: %w", err)
	}
	n := opts.CatchUps
	if n <= 0 {
		n = DefaultMongoCatchUps
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Mongo{
		client:   client,
		feed:     feed,
		db:       client.Database(database),
		feedDB:   feed.Database(database),
		catchUps: make(chan struct{}, n),
		log:      log,
	}
	m.orders = m.db.Collection(mongoOrders)
	m.messages = m.db.Collection(mongoMessages)
	m.done, m.cancel = context.WithCancel(context.Background())

	if err := m.open(ctx); err != nil {
		m.cancel()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mongoCloseTimeout)
		defer cancel()
		_ = feed.Disconnect(dctx)
		_ = client.Disconnect(dctx)
		return nil, err
	}
	return m, nil
}

func (m *Mongo) open(ctx context.Context) error {
	if err := m.client.Ping(ctx, readpref.Primary()); err != nil {
		return fmt.Errorf("open mongo: ping: %w", err)
	}
	if _, err := m.messages.Indexes().CreateMany(ctx, []mongo.IndexModel{
		{Keys: bson.D{{Key: "room", Value: 1}, {Key: "_id", Value: 1}}},
	}); err != nil {
		return fmt.Errorf("open mongo: index messages by room: %w", err)
	}
	if _, err := m.orders.Indexes().CreateMany(ctx, []mongo.IndexModel{
		{Keys: bson.D{{Key: "customer", Value: 1}}},
	}); err != nil {
		return fmt.Errorf("open mongo: index orders by customer: %w", err)
	}
	return nil
}

// Close stops every running Follow and CatchUp (they return an error
// wrapping ErrClosed), waits for the calls in flight and disconnects. Calls
// made after Close, a second Close too, return errors wrapping ErrClosed.
func (m *Mongo) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("close store: %w", ErrClosed)
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), mongoCloseTimeout)
	defer cancel()
	return errors.Join(m.feed.Disconnect(ctx), m.client.Disconnect(ctx))
}

// begin registers a call in flight and returns ctx cancelled also by Close.
// The returned func must be called when the call returns.
func (m *Mongo) begin(ctx context.Context) (context.Context, func(), error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, nil, ErrClosed
	}
	m.wg.Add(1)
	m.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(m.done, cancel)
	return ctx, func() {
		stop()
		cancel()
		m.wg.Done()
	}, nil
}

// fail wraps err from operation what, reporting ErrClosed if the store was
// closed meanwhile.
func (m *Mongo) fail(what string, err error) error {
	if m.done.Err() != nil {
		return fmt.Errorf("%s: %w", what, ErrClosed)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Ping checks that the primary answers.
func (m *Mongo) Ping(ctx context.Context) error {
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	defer end()
	if err := m.client.Ping(ctx, readpref.Primary()); err != nil {
		return m.fail("ping", err)
	}
	return nil
}

// mongoNow is the time stored on writes, cut to BSON's milliseconds so that
// what a write returns equals what a read gives back.
func mongoNow() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// CreateOrder stores a new order with status placed and version 1 and
// returns it. Bad fields give an error wrapping ErrInvalid.
func (m *Mongo) CreateOrder(ctx context.Context, customer string, items []Item) (Order, error) {
	if err := ValidateOrder(customer, items); err != nil {
		return Order{}, fmt.Errorf("create order: %w", err)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return Order{}, fmt.Errorf("create order: %w", err)
	}
	defer end()
	now := mongoNow()
	doc := mongoOrderDoc{ID: bson.NewObjectID(), Order: Order{
		Customer:  customer,
		Items:     slices.Clone(items),
		Status:    StatusPlaced,
		Version:   1,
		CreatedAt: now,
		UpdatedAt: now,
	}}
	if _, err := m.orders.InsertOne(ctx, doc); err != nil {
		return Order{}, m.fail("create order", err)
	}
	return doc.order(), nil
}

// GetOrder returns the order with id, or an error wrapping ErrNotFound
// (also for a malformed id).
func (m *Mongo) GetOrder(ctx context.Context, id string) (Order, error) {
	oid, ok := mongoOrderID(id)
	if !ok {
		return Order{}, fmt.Errorf("get order %q: %w", id, ErrNotFound)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return Order{}, fmt.Errorf("get order %s: %w", id, err)
	}
	defer end()
	doc, err := m.findOrder(ctx, oid)
	if err != nil {
		return Order{}, m.fail("get order "+id, err)
	}
	return doc.order(), nil
}

func mongoOrderID(id string) (bson.ObjectID, bool) {
	if !ValidOrderID(id) {
		return bson.ObjectID{}, false
	}
	oid, err := bson.ObjectIDFromHex(id)
	return oid, err == nil
}

func (m *Mongo) findOrder(ctx context.Context, oid bson.ObjectID) (mongoOrderDoc, error) {
	var doc mongoOrderDoc
	err := m.orders.FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return doc, ErrNotFound
	}
	return doc, err
}

// UpdateOrderStatus moves the order with id to status and returns it with
// its version one higher. ifVersion 0 accepts any current version. Errors
// wrap, in the order checked: ErrNotFound, ErrVersionMismatch (ifVersion is
// not the current version), ErrInvalid (unknown status), ErrConflict (the
// transition is not allowed).
//
// The write is a check-and-set on the version: the order is read, checked,
// and replaced only if its version is still the one read; if another writer
// got there first it is read again. The whole document is replaced rather
// than $set so that the change event carries the order exactly as written
// (a "replace" event holds its full document), whichever process reads it
// and however late.
func (m *Mongo) UpdateOrderStatus(ctx context.Context, id, status string, ifVersion int64) (Order, error) {
	oid, ok := mongoOrderID(id)
	if !ok {
		return Order{}, fmt.Errorf("update order %q: %w", id, ErrNotFound)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return Order{}, fmt.Errorf("update order %s: %w", id, err)
	}
	defer end()
	for range mongoUpdateAttempts {
		cur, err := m.findOrder(ctx, oid)
		if err != nil {
			return Order{}, m.fail("update order "+id, err)
		}
		if ifVersion != 0 && cur.Version != ifVersion {
			return Order{}, fmt.Errorf("update order %s: version is %d, not %d: %w", id, cur.Version, ifVersion, ErrVersionMismatch)
		}
		if err := CheckTransition(cur.Status, status); err != nil {
			return Order{}, fmt.Errorf("update order %s: %w", id, err)
		}
		next := cur
		next.Items = slices.Clone(cur.Items)
		next.Status = status
		next.Version = cur.Version + 1
		next.UpdatedAt = mongoNow()
		res, err := m.orders.ReplaceOne(ctx, bson.D{{Key: "_id", Value: oid}, {Key: "version", Value: cur.Version}}, next)
		if err != nil {
			return Order{}, m.fail("update order "+id, err)
		}
		if res.MatchedCount == 1 {
			return next.order(), nil
		}
		// Changed or deleted since the read: read again.
	}
	return Order{}, fmt.Errorf("update order %s: changed by others %d times in a row: %w", id, mongoUpdateAttempts, ErrConflict)
}

// PostMessage stores a new message in room and returns it. Bad fields give
// an error wrapping ErrInvalid. Ids are ObjectIDs made here: within one
// process they order like the messages were posted; across processes,
// messages posted in the same second order by process.
func (m *Mongo) PostMessage(ctx context.Context, room, author, text string) (Message, error) {
	if err := ValidateMessage(room, author, text); err != nil {
		return Message{}, fmt.Errorf("post message: %w", err)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return Message{}, fmt.Errorf("post message: %w", err)
	}
	defer end()
	doc := mongoMessageDoc{ID: bson.NewObjectID(), Message: Message{
		Room: room, Author: author, Text: text, CreatedAt: mongoNow(),
	}}
	if _, err := m.messages.InsertOne(ctx, doc); err != nil {
		return Message{}, m.fail("post message", err)
	}
	return doc.message(), nil
}

// ListMessages returns up to limit messages of room posted just before the
// message with id before ("" for the newest), oldest first. It returns an
// error wrapping ErrInvalid for a bad room, a limit outside 1..MaxListLimit
// or a malformed before.
func (m *Mongo) ListMessages(ctx context.Context, room, before string, limit int) ([]Message, error) {
	if !ValidRoom(room) {
		return nil, fmt.Errorf("list messages: room %q: %w", room, ErrInvalid)
	}
	if limit < 1 || limit > MaxListLimit {
		return nil, fmt.Errorf("list messages: limit must be 1 to %d: %w", MaxListLimit, ErrInvalid)
	}
	filter := bson.D{{Key: "room", Value: room}}
	if before != "" {
		oid, ok := mongoOrderID(before)
		if !ok {
			return nil, fmt.Errorf("list messages: before %q: %w", before, ErrInvalid)
		}
		filter = append(filter, bson.E{Key: "_id", Value: bson.D{{Key: "$lt", Value: oid}}})
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	defer end()
	msgs, err := m.lastMessages(ctx, filter, limit)
	if err != nil {
		return nil, m.fail("list messages", err)
	}
	return msgs, nil
}

// lastMessages returns the last limit messages matching filter, oldest
// first, never nil. It reads in ctx's session, if any.
func (m *Mongo) lastMessages(ctx context.Context, filter bson.D, limit int) ([]Message, error) {
	cur, err := m.messages.Find(ctx, filter, options.Find().
		SetSort(bson.D{{Key: "_id", Value: -1}}).
		SetLimit(int64(limit)))
	if err != nil {
		return nil, err
	}
	var docs []mongoMessageDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	msgs := make([]Message, len(docs))
	for i, d := range docs {
		msgs[len(docs)-1-i] = d.message()
	}
	return msgs, nil
}
