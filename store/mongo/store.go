// Package mongo is the MongoDB backend of changecast's store: many
// processes over one replica set, each following its change stream. Its
// Store implements store.Backend. The driver's own mongo package is
// imported here as mongodrv.
package mongo

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
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
	"go.mongodb.org/mongo-driver/v2/mongo/readconcern"
	"go.mongodb.org/mongo-driver/v2/mongo/readpref"
	"go.mongodb.org/mongo-driver/v2/mongo/writeconcern"

	"changecast/store"
)

// Collection names of the MongoDB backend. They are storage names, fixed
// by the data already written, not topic kinds, so they stay literals
// ("orders" happens to equal store.KindOrder; "messages" differs from
// store.KindRoom).
const (
	ordersCollection   = "orders"
	messagesCollection = "messages"
)

// DefaultCatchUps is the size of a Store's pool of short-lived change
// streams when Options.CatchUps is zero: catch-ups, and the streams Head
// and Snapshot open only while no Follow is running, share it. Each one
// holds a pooled connection while it waits in getMore; 16 leaves most of
// the driver's default pool of 100 to ordinary reads and writes.
//
// So the change streams a Store holds open at once number at most one per
// running Follow (changecast runs one) plus this pool, whatever the number
// of clients: a Snapshot or Head made while a Follow runs opens none, and a
// catch-up beyond the pool waits for a free slot (or for its context).
const DefaultCatchUps = 16

// updateAttempts bounds how often UpdateOrderStatus re-reads an order
// that another writer changed between its read and its check-and-set.
const updateAttempts = 8

// closeTimeout bounds the clean-up calls made while closing (killCursors,
// endSessions), which must not hang on an unreachable server.
const closeTimeout = 5 * time.Second

// durable is the write concern of every write of the store, whatever
// the URI or the deployment's default says: a write is acknowledged (and
// its request answered 2xx) only once a majority of the replica set has it
// in its journal. Only such a write survives a failover (a w:1 write can
// be rolled back, and then never reaches any change stream); the implicit
// default is w:1 on a PSA set, under setDefaultRWConcern, or with w= in
// the URI.
func durable() *writeconcern.WriteConcern {
	j := true
	return &writeconcern.WriteConcern{W: writeconcern.WCMajority, Journal: &j}
}

// dataOptions are the options of the database handles, whatever the URI
// says: durable writes, and reads and change streams from the primary,
// which has every write it acknowledged, so a read after a write sees it
// (a 201 is never followed by a 404, nor an If-Match by a spurious 412).
// A majority-acknowledged write is on every member that can be elected, so
// this holds across a failover too.
func dataOptions() *options.DatabaseOptionsBuilder {
	return options.Database().SetWriteConcern(durable()).SetReadPreference(readpref.Primary())
}

// readOwnWrites is the read concern of the collections' reads: local,
// what the primary has, including the writes it just acknowledged (a URI's
// readConcernLevel=majority could miss a write for the moment the
// primary's majority snapshot lags it). Snapshot reads set their own. It
// is not set on the database, whose change streams the server reads at
// majority anyway.
func readOwnWrites() *options.CollectionOptionsBuilder {
	return options.Collection().SetReadConcern(readconcern.Local())
}

// Options configures Open. The zero value is usable.
type Options struct {
	// CatchUps is the size of the pool of short-lived change streams
	// (catch-ups, and Head and Snapshot while no Follow runs); zero means
	// DefaultCatchUps. Beyond it, calls wait in line for a free slot.
	CatchUps int
	// Logger receives the feed's restarts; nil discards them.
	Logger *slog.Logger

	// clientOptions, when set, adjusts the driver options of the data
	// client (role "data") and of the feed's client (role "feed") before
	// they connect. Tests use it to plug in the driver's mock deployment.
	clientOptions func(role string, o *options.ClientOptions) error
}

// Store is the MongoDB backend of the store: orders and messages in two
// collections of one database, and their change log read from MongoDB change
// streams. It needs a replica set or a sharded cluster. A Store is safe for
// concurrent use.
//
// Positions are the hex strings of the change events' resume tokens
// (_id._data), so every process following the same database hands out
// the same ids; ComparePositions orders them like the log (bytewise within
// one token version).
type Store struct {
	client   *mongodrv.Client // reads, writes, Head, Snapshot and catch-ups
	feed     *mongodrv.Client // only Follow's long-lived change stream
	db       *mongodrv.Database
	feedDB   *mongodrv.Database
	orders   *mongodrv.Collection
	messages *mongodrv.Collection
	catchUps chan struct{} // semaphore: one token per short-lived stream open
	log      *slog.Logger

	feedMu    sync.Mutex
	feedGen   uint64    // counts the Follows that became the feed (the first running; see startFeed)
	feedAlive bool      // the feed of generation feedGen is running
	feedAt    feedPoint // where the feed has got to, if known

	done   context.Context // cancelled by Close
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed and calls to wg.Add
	closed bool
	wg     sync.WaitGroup // calls in flight
}

// Store keeps the contract of every backend.
var _ store.Backend = (*Store)(nil)

// orderDoc is an order as stored: the order's fields and its ObjectID.
type orderDoc struct {
	ID          bson.ObjectID `bson:"_id"`
	store.Order `bson:",inline"`
}

func (d orderDoc) order() store.Order {
	o := d.Order
	o.ID = d.ID.Hex()
	if o.Items == nil {
		o.Items = []store.Item{}
	}
	if o.History == nil {
		// Stored before histories were kept: empty, not null, in JSON.
		o.History = []store.StatusChange{}
	}
	return o
}

// messageDoc is a message as stored.
type messageDoc struct {
	ID            bson.ObjectID `bson:"_id"`
	store.Message `bson:",inline"`
}

func (d messageDoc) message() store.Message {
	m := d.Message
	m.ID = d.ID.Hex()
	return m
}

// Open connects to the MongoDB deployment at uri, uses database
// (created on first write), checks the server answers and creates the
// indexes: messages by room and _id, orders by customer. It returns an error
// if the server cannot be reached before ctx ends or the indexes cannot be
// built. Close the store to disconnect.
func Open(ctx context.Context, uri, database string, opts Options) (*Store, error) {
	if database == "" {
		return nil, fmt.Errorf("open mongo: database name is empty: %w", store.ErrInvalid)
	}
	connect := func(role string) (*mongodrv.Client, error) {
		o := options.Client().ApplyURI(uri).SetAppName("changecast")
		if opts.clientOptions != nil {
			if err := opts.clientOptions(role, o); err != nil {
				return nil, err
			}
		}
		return mongodrv.Connect(o)
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
		n = DefaultCatchUps
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Store{
		client:   client,
		feed:     feed,
		db:       client.Database(database, dataOptions()),
		feedDB:   feed.Database(database, dataOptions()),
		catchUps: make(chan struct{}, n),
		log:      log,
	}
	m.orders = m.db.Collection(ordersCollection, readOwnWrites())
	m.messages = m.db.Collection(messagesCollection, readOwnWrites())
	m.done, m.cancel = context.WithCancel(context.Background())

	if err := m.open(ctx); err != nil {
		m.cancel()
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		_ = feed.Disconnect(dctx)
		_ = client.Disconnect(dctx)
		return nil, err
	}
	return m, nil
}

func (m *Store) open(ctx context.Context) error {
	if err := m.client.Ping(ctx, readpref.Primary()); err != nil {
		return fmt.Errorf("open mongo: ping: %w", err)
	}
	return m.createIndexes(ctx)
}

// createIndexes creates the indexes the store reads by, if missing:
// messages by room and _id; orders by customer and _id, and by status and
// _id.
func (m *Store) createIndexes(ctx context.Context) error {
	if _, err := m.messages.Indexes().CreateMany(ctx, []mongodrv.IndexModel{
		{Keys: bson.D{{Key: "room", Value: 1}, {Key: "_id", Value: 1}}},
	}); err != nil {
		return fmt.Errorf("open mongo: index messages by room: %w", err)
	}
	if _, err := m.orders.Indexes().CreateMany(ctx, []mongodrv.IndexModel{
		// ListOrders and the list topics' snapshots: a customer's orders,
		// and the active ones (status $in), newest first. The first also
		// serves what the {customer: 1} index of earlier versions served
		// (a deployment that has it keeps it; it is no longer created).
		{Keys: bson.D{{Key: "customer", Value: 1}, {Key: "_id", Value: -1}}},
		{Keys: bson.D{{Key: "status", Value: 1}, {Key: "_id", Value: -1}}},
	}); err != nil {
		return fmt.Errorf("open mongo: index orders by customer: %w", err)
	}
	return nil
}

// Close stops every running Follow and CatchUp (they return an error
// wrapping ErrClosed), waits for the calls in flight and disconnects. Calls
// made after Close, a second Close too, return errors wrapping ErrClosed.
func (m *Store) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return fmt.Errorf("close store: %w", store.ErrClosed)
	}
	m.closed = true
	m.mu.Unlock()
	m.cancel()
	m.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	return errors.Join(m.feed.Disconnect(ctx), m.client.Disconnect(ctx))
}

// begin registers a call in flight and returns ctx cancelled also by Close.
// The returned func must be called when the call returns.
func (m *Store) begin(ctx context.Context) (context.Context, func(), error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, nil, store.ErrClosed
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
func (m *Store) fail(what string, err error) error {
	if m.done.Err() != nil {
		return fmt.Errorf("%s: %w", what, store.ErrClosed)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// Ping checks that the primary answers.
func (m *Store) Ping(ctx context.Context) error {
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

// nowMillis is the time stored on writes, cut to BSON's milliseconds so that
// what a write returns equals what a read gives back.
func nowMillis() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// CreateOrder stores a new order with status placed, version 1 and a
// history of one placed entry at CreatedAt, and returns it. Bad fields give an error wrapping ErrInvalid.
func (m *Store) CreateOrder(ctx context.Context, customer string, items []store.Item) (store.Order, error) {
	if err := store.ValidateOrder(customer, items); err != nil {
		return store.Order{}, fmt.Errorf("create order: %w", err)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return store.Order{}, fmt.Errorf("create order: %w", err)
	}
	defer end()
	now := nowMillis()
	doc := orderDoc{ID: bson.NewObjectID(), Order: store.Order{
		Customer:  customer,
		Items:     slices.Clone(items),
		Status:    store.StatusPlaced,
		Version:   1,
		History:   store.NewHistory(now),
		CreatedAt: now,
		UpdatedAt: now,
	}}
	if _, err := m.orders.InsertOne(ctx, doc); err != nil {
		return store.Order{}, m.fail("create order", err)
	}
	return doc.order(), nil
}

// GetOrder returns the order with id, or an error wrapping ErrNotFound
// (also for a malformed id).
func (m *Store) GetOrder(ctx context.Context, id string) (store.Order, error) {
	oid, ok := orderID(id)
	if !ok {
		return store.Order{}, fmt.Errorf("get order %q: %w", id, store.ErrNotFound)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return store.Order{}, fmt.Errorf("get order %s: %w", id, err)
	}
	defer end()
	doc, err := m.findOrder(ctx, oid)
	if err != nil {
		return store.Order{}, m.fail("get order "+id, err)
	}
	return doc.order(), nil
}

func orderID(id string) (bson.ObjectID, bool) {
	if !store.ValidOrderID(id) {
		return bson.ObjectID{}, false
	}
	oid, err := bson.ObjectIDFromHex(id)
	return oid, err == nil
}

func (m *Store) findOrder(ctx context.Context, oid bson.ObjectID) (orderDoc, error) {
	var doc orderDoc
	err := m.orders.FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&doc)
	if errors.Is(err, mongodrv.ErrNoDocuments) {
		return doc, store.ErrNotFound
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
// and however late: the replacement holds the order's history with this
// change appended, so the event's fullDocument carries the history as of
// the change straight from the oplog.
func (m *Store) UpdateOrderStatus(ctx context.Context, id, status string, ifVersion int64) (store.Order, error) {
	oid, ok := orderID(id)
	if !ok {
		return store.Order{}, fmt.Errorf("update order %q: %w", id, store.ErrNotFound)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return store.Order{}, fmt.Errorf("update order %s: %w", id, err)
	}
	defer end()
	for range updateAttempts {
		cur, err := m.findOrder(ctx, oid)
		if err != nil {
			return store.Order{}, m.fail("update order "+id, err)
		}
		if ifVersion != 0 && cur.Version != ifVersion {
			return store.Order{}, fmt.Errorf("update order %s: version is %d, not %d: %w", id, cur.Version, ifVersion, store.ErrVersionMismatch)
		}
		if err := store.CheckTransition(cur.Status, status); err != nil {
			return store.Order{}, fmt.Errorf("update order %s: %w", id, err)
		}
		next := cur
		next.Items = slices.Clone(cur.Items)
		next.Status = status
		next.Version = cur.Version + 1
		next.UpdatedAt = nowMillis()
		next.History = store.AppendHistory(cur.History, status, next.UpdatedAt)
		res, err := m.orders.ReplaceOne(ctx, bson.D{{Key: "_id", Value: oid}, {Key: "version", Value: cur.Version}}, next)
		if err != nil {
			return store.Order{}, m.fail("update order "+id, err)
		}
		if res.MatchedCount == 1 {
			return next.order(), nil
		}
		// Changed or deleted since the read: read again.
	}
	return store.Order{}, fmt.Errorf("update order %s: changed by others %d times in a row: %w", id, updateAttempts, store.ErrConflict)
}

// PostMessage stores a new message in room and returns it. Bad fields give
// an error wrapping ErrInvalid. Ids are ObjectIDs made here: within one
// process they order like the messages were posted; across processes,
// messages posted in the same second order by process.
func (m *Store) PostMessage(ctx context.Context, room, author, text string) (store.Message, error) {
	if err := store.ValidateMessage(room, author, text); err != nil {
		return store.Message{}, fmt.Errorf("post message: %w", err)
	}
	ctx, end, err := m.begin(ctx)
	if err != nil {
		return store.Message{}, fmt.Errorf("post message: %w", err)
	}
	defer end()
	doc := messageDoc{ID: bson.NewObjectID(), Message: store.Message{
		Room: room, Author: author, Text: text, CreatedAt: nowMillis(),
	}}
	if _, err := m.messages.InsertOne(ctx, doc); err != nil {
		return store.Message{}, m.fail("post message", err)
	}
	return doc.message(), nil
}

// ListMessages returns up to limit messages of room posted just before the
// message with id before ("" for the newest), oldest first. It returns an
// error wrapping ErrInvalid for a bad room, a limit outside 1..MaxListLimit
// or a malformed before.
func (m *Store) ListMessages(ctx context.Context, room, before string, limit int) ([]store.Message, error) {
	if !store.ValidRoom(room) {
		return nil, fmt.Errorf("list messages: room %q: %w", room, store.ErrInvalid)
	}
	if limit < 1 || limit > store.MaxListLimit {
		return nil, fmt.Errorf("list messages: limit must be 1 to %d: %w", store.MaxListLimit, store.ErrInvalid)
	}
	filter := bson.D{{Key: "room", Value: room}}
	if before != "" {
		oid, ok := orderID(before)
		if !ok {
			return nil, fmt.Errorf("list messages: before %q: %w", before, store.ErrInvalid)
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
func (m *Store) lastMessages(ctx context.Context, filter bson.D, limit int) ([]store.Message, error) {
	cur, err := m.messages.Find(ctx, filter, options.Find().
		SetSort(bson.D{{Key: "_id", Value: -1}}).
		SetLimit(int64(limit)))
	if err != nil {
		return nil, err
	}
	var docs []messageDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	msgs := make([]store.Message, len(docs))
	for i, d := range docs {
		msgs[len(docs)-1-i] = d.message()
	}
	return msgs, nil
}
