package store

import "context"

// Backend is the contract both backends keep: *bolt.Store (store/bolt) and
// *mongo.Store (store/mongo) implement it, each checked at compile time
// beside its implementation, and store/storetest checks that they behave
// alike. A Backend is safe for concurrent use. Errors wrap this package's
// Err values; callers test them with errors.Is.
type Backend interface {
	// Ping returns nil if the store can serve requests, or an error
	// saying why (wrapping ErrClosed after Close).
	Ping(ctx context.Context) error
	// CreateOrder stores a new order with status placed and version 1,
	// and logs an insert change. Bad fields are an error wrapping
	// ErrInvalid (see ValidateOrder).
	CreateOrder(ctx context.Context, customer string, items []Item) (Order, error)
	// GetOrder returns an order, or an error wrapping ErrNotFound.
	GetOrder(ctx context.Context, id string) (Order, error)
	// UpdateOrderStatus moves order id to status and increments its
	// version; ifVersion 0 means any version. Errors wrap ErrNotFound,
	// ErrInvalid (unknown status), ErrVersionMismatch or ErrConflict.
	UpdateOrderStatus(ctx context.Context, id, status string, ifVersion int64) (Order, error)
	// PostMessage stores a message in room and logs an insert change.
	// Bad fields are an error wrapping ErrInvalid (see ValidateMessage).
	PostMessage(ctx context.Context, room, author, text string) (Message, error)
	// ListMessages returns up to limit messages of room just before
	// message id before ("" = newest), oldest first.
	ListMessages(ctx context.Context, room, before string, limit int) ([]Message, error)
	// ListOrders returns a page of orders, newest first (by id), selected
	// by q (see OrderQuery); never nil. A bad query is an error wrapping
	// ErrInvalid (see OrderQuery.Check).
	ListOrders(ctx context.Context, q OrderQuery) ([]Order, error)

	// Head returns the position of the newest change in the log.
	Head(ctx context.Context) (string, error)
	// Follow calls fn first with an empty batch whose checkpoint is after,
	// then with every change after it in log order, in batches, and then
	// waits for more, until ctx ends (ctx.Err()), fn fails (fn's error)
	// or the store closes (ErrClosed). A bad after is an error wrapping
	// ErrInvalidPosition; changes after it no longer kept, ErrHistoryLost.
	Follow(ctx context.Context, after string, fn func(Batch) error) error
	// CatchUp calls fn, in log order, with each change on one of topics
	// whose position p has after < p <= until. Topics may be list topics;
	// a change is on a topic if the topic is its Topic or one of its
	// Lists, and fn gets it once however many of topics it is on. Errors wrap
	// ErrInvalidPosition, ErrHistoryLost or ErrInvalid (a malformed
	// topic), or are ctx.Err() or fn's error.
	CatchUp(ctx context.Context, topics []string, after, until string, fn func(Change) error) error
	// Snapshot returns the current state of each topic (list topics
	// too, see Snapshot.Orders), in the order given, and the position of the newest change it reflects: every
	// change up to the position and none after it.
	Snapshot(ctx context.Context, topics []string) ([]Snapshot, string, error)
	// CheckPosition returns an error wrapping ErrInvalidPosition if pos is
	// not a position this store could have made. It does not check
	// whether the history after pos is still kept.
	CheckPosition(pos string) error
	// ComparePositions compares two positions CheckPosition accepts, as
	// strings.Compare compares strings: negative when a comes before b in
	// the log, zero for the same position, positive after. It is a total
	// order. Positions need not order as strings: callers compare them
	// only through it.
	ComparePositions(a, b string) int

	// Close releases the store; a Follow in progress returns, and later
	// calls return errors wrapping ErrClosed.
	Close() error
}
