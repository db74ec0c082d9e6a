// Package store keeps changecast's orders and messages and the ordered log of
// their changes. It has two backends with the same behaviour: an embedded one
// on bbolt (the default, one process, one data directory) and a MongoDB one
// (many processes over one replica set, following its change stream).
//
// Positions in the change log are opaque printable ASCII strings (no CR, LF or
// NUL, at most 512 bytes). Within one deployment Backend.ComparePositions
// tells which of two changes came first; positions need not order as
// strings (MongoDB's resume tokens of two versions do not). A position is
// what changecast sends as an SSE event id.
//
// The contract both backends keep is Backend; they live in store/bolt and
// store/mongo, and store/storetest holds the suite that checks them. The
// store and its subpackages are the only ones that import a database driver.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"
)

// Order statuses. An order moves placed → preparing → out_for_delivery →
// delivered; placed or preparing may move to cancelled.
const (
	StatusPlaced         = "placed"
	StatusPreparing      = "preparing"
	StatusOutForDelivery = "out_for_delivery"
	StatusDelivered      = "delivered"
	StatusCancelled      = "cancelled"
)

// Change operations, named as MongoDB names them.
const (
	OpInsert  = "insert"
	OpUpdate  = "update"
	OpReplace = "replace"
	OpDelete  = "delete"
)

// Limits on what a client may store.
const (
	// MaxTextLen is the longest message text, in characters.
	MaxTextLen = 4000
	// MaxItems is the largest number of line items in one order.
	MaxItems = 100
	// MaxQty is the largest quantity of one line item.
	MaxQty = 1000
	// MaxNameLen is the longest customer, author or SKU, in bytes.
	MaxNameLen = 128
	// SnapshotMessages is how many of a room's latest messages a snapshot holds.
	SnapshotMessages = 50
	// MaxListLimit is the largest page ListMessages and ListOrders return.
	MaxListLimit = 200
	// DefaultListLimit is the page ListOrders returns when OrderQuery.Limit is 0.
	DefaultListLimit = 50
	// SnapshotActiveOrders is the most active orders a snapshot of the
	// orders list topic holds; a client pages further with ListOrders.
	SnapshotActiveOrders = 200
	// SnapshotCustomerOrders is how many of a customer's most recent orders
	// a snapshot of its list topic holds.
	SnapshotCustomerOrders = 50
)

// Errors returned by both backends. Callers test them with errors.Is.
var (
	// ErrNotFound means the order does not exist (a malformed id is not found too).
	ErrNotFound = errors.New("not found")
	// ErrConflict means the status transition is not allowed.
	ErrConflict = errors.New("invalid status transition")
	// ErrVersionMismatch means the caller's expected version is not the current one.
	ErrVersionMismatch = errors.New("version mismatch")
	// ErrInvalid means a field failed validation; the wrapped message names it.
	ErrInvalid = errors.New("invalid input")
	// ErrHistoryLost means a position is older than what the log retains.
	ErrHistoryLost = errors.New("change history lost")
	// ErrInvalidPosition means a position is malformed, unknown or from another deployment.
	ErrInvalidPosition = errors.New("invalid position")
	// ErrClosed means the store has been closed.
	ErrClosed = errors.New("store closed")
)

// Item is one line of an order.
type Item struct {
	SKU string `json:"sku" bson:"sku"`
	Qty int    `json:"qty" bson:"qty"`
}

// Order is a food-delivery order. ID is 24 hex characters; Version starts at 1
// and grows by one per change.
type Order struct {
	ID       string `json:"id" bson:"-"`
	Customer string `json:"customer" bson:"customer"`
	Items    []Item `json:"items" bson:"items"`
	Status   string `json:"status" bson:"status"`
	Version  int64  `json:"version" bson:"version"`
	// History is every status the order has had, oldest first, each with
	// when it was reached: {placed, CreatedAt} first, then one entry per
	// status change at that change's UpdatedAt. It is written in the same
	// write as the change, so the change's event carries it. It cannot grow
	// without bound: the status machine has no cycle, so an order passes
	// through each status at most once and its longest path (placed →
	// preparing → out_for_delivery → delivered) has four entries. An order
	// stored before histories were kept reads with an empty history (never
	// nil from a backend, so its JSON is "history":[]) and gains entries
	// only for its later changes.
	History   []StatusChange `json:"history" bson:"history"`
	CreatedAt time.Time      `json:"createdAt" bson:"createdAt"`
	UpdatedAt time.Time      `json:"updatedAt" bson:"updatedAt"`
}

// MarshalJSON encodes the order with its fields and "allowed": the
// statuses it may move to next (NextStatuses of its status, [] for
// none), so that a client offers the moves of the status machine
// without a copy of it. Decoding ignores "allowed".
func (o Order) MarshalJSON() ([]byte, error) {
	type fields Order // without this method
	return json.Marshal(struct {
		fields
		Allowed []string `json:"allowed"`
	}{fields(o), NextStatuses(o.Status)})
}

// StatusChange is one step of an order's history: the status the order
// moved to and when (the order's UpdatedAt as of that change).
type StatusChange struct {
	Status string    `json:"status" bson:"status"`
	At     time.Time `json:"at" bson:"at"`
}

// NewHistory returns the history of a new order created at createdAt: one
// placed entry.
func NewHistory(createdAt time.Time) []StatusChange {
	return []StatusChange{{Status: StatusPlaced, At: createdAt}}
}

// AppendHistory returns h with a step to status at time at appended,
// in a new slice: h itself, which may be shared, is not modified.
func AppendHistory(h []StatusChange, status string, at time.Time) []StatusChange {
	out := make([]StatusChange, len(h), len(h)+1)
	copy(out, h)
	return append(out, StatusChange{Status: status, At: at})
}

// Message is a chat message in a room. ID is 24 hex characters; within a
// room, ids order like the messages were written.
type Message struct {
	ID        string    `json:"id" bson:"-"`
	Room      string    `json:"room" bson:"room"`
	Author    string    `json:"author" bson:"author"`
	Text      string    `json:"text" bson:"text"`
	CreatedAt time.Time `json:"createdAt" bson:"createdAt"`
}

// Change is one committed write, read from the change log.
type Change struct {
	// Pos is the change's position in the log (the SSE event id).
	Pos string
	// Topic is "orders/<id>" or "rooms/<room>" (see ParseTopic).
	Topic string
	// Lists are the list topics the change also belongs to: for an order
	// change OrderListTopic and the order's CustomerTopic (see OrderLists);
	// nil for a message. A backend that cannot tell an order's customer (a
	// delete in MongoDB, whose event names only the _id) gives only
	// OrderListTopic.
	Lists []string
	// Op is one of OpInsert, OpUpdate, OpReplace, OpDelete.
	Op string
	// Order is the order after the change, for order topics. For a delete
	// only its ID is set.
	Order *Order
	// Message is the message, for room topics.
	Message *Message
	// Time is when the change was committed.
	Time time.Time
}

// Batch is a run of changes from the log in order, with the position the
// feed has reached after them.
type Batch struct {
	// Changes are in log order; may be empty.
	Changes []Change
	// Checkpoint is a position at or after the last change in the batch: the
	// feed has seen everything up to it. Never empty.
	Checkpoint string
}

// Snapshot is the current state of one topic.
type Snapshot struct {
	Topic string
	// Order is set for an order topic; nil if the order does not exist.
	Order *Order
	// Messages are a room's last SnapshotMessages messages, oldest first.
	Messages []Message
	// Orders are set for a list topic, newest first, never nil: for
	// OrderListTopic the active orders (see Active), at most
	// SnapshotActiveOrders; for a customer's topic its most recent
	// SnapshotCustomerOrders orders, any status.
	Orders []Order
}

// OrderQuery selects a page of orders for ListOrders. Orders come newest
// first, by id (ids are time-ordered).
type OrderQuery struct {
	// Active keeps only orders that are not delivered or cancelled.
	Active bool
	// Customer keeps only that customer's orders; "" keeps everyone's.
	Customer string
	// Limit is the page size, 1 to MaxListLimit; 0 means DefaultListLimit.
	Limit int
	// Before is an order id cursor: only orders with a smaller id (older)
	// are returned; "" starts from the newest.
	Before string
}

// Check validates q and returns its page size (DefaultListLimit for 0). It
// returns an error wrapping ErrInvalid for a limit outside 0..MaxListLimit,
// a malformed Before or a bad Customer.
func (q OrderQuery) Check() (int, error) {
	limit := q.Limit
	if limit == 0 {
		limit = DefaultListLimit
	}
	if limit < 1 || limit > MaxListLimit {
		return 0, fmt.Errorf("limit must be 1 to %d: %w", MaxListLimit, ErrInvalid)
	}
	if q.Before != "" && !ValidOrderID(q.Before) {
		return 0, fmt.Errorf("before %.40q is not an order id: %w", q.Before, ErrInvalid)
	}
	if q.Customer != "" && !ValidCustomer(q.Customer) {
		return 0, fmt.Errorf("customer %.40q: %w", q.Customer, ErrInvalid)
	}
	return limit, nil
}

// Active reports whether an order with status is still in progress: not
// delivered or cancelled.
func Active(status string) bool {
	return status != StatusDelivered && status != StatusCancelled
}

// TopicKind is what a topic is about: the part of the topic before the slash.
type TopicKind string

// Topic kinds. KindOrder, KindRoom and KindCustomer are also the first
// segment of their topics' names; KindOrderList has one topic,
// OrderListTopic.
const (
	// KindOrder is the kind of an order's topic, orders/<id>.
	KindOrder TopicKind = "orders"
	// KindRoom is the kind of a room's topic, rooms/<room>.
	KindRoom TopicKind = "rooms"
	// KindOrderList is the kind of the list of every order, the topic
	// "orders" (OrderListTopic).
	KindOrderList TopicKind = "order-list"
	// KindCustomer is the kind of the list of one customer's orders,
	// customers/<sub> (CustomerTopic).
	KindCustomer TopicKind = "customers"
)

// Topic prefixes: a kind and a slash.
const (
	OrderTopicPrefix    = string(KindOrder) + "/"
	RoomTopicPrefix     = string(KindRoom) + "/"
	CustomerTopicPrefix = string(KindCustomer) + "/"
)

// OrderListTopic is the topic of the list of every order.
const OrderListTopic = "orders"

// CustomerTopic returns the topic of the list of customer sub's orders.
func CustomerTopic(sub string) string { return CustomerTopicPrefix + sub }

// OrderLists returns the list topics a change to an order of customer
// belongs to: OrderListTopic and the customer's topic, in a new slice.
func OrderLists(customer string) []string {
	return []string{OrderListTopic, CustomerTopic(customer)}
}

// IsListTopic reports whether kind is the kind of a list topic.
func IsListTopic(kind TopicKind) bool { return kind == KindOrderList || kind == KindCustomer }

// OrderTopic returns the topic of an order.
func OrderTopic(id string) string { return OrderTopicPrefix + id }

// RoomTopic returns the topic of a room.
func RoomTopic(room string) string { return RoomTopicPrefix + room }

var (
	roomRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	orderIDRE = regexp.MustCompile(`^[0-9a-f]{24}$`)
)

// ValidRoom reports whether room is a valid room name.
func ValidRoom(room string) bool { return roomRE.MatchString(room) }

// ValidCustomer reports whether sub can name a customer in a topic: any
// valid customer name (see ValidateOrder). A subject an identity provider
// makes may hold `|` or `/` (`auth0|123`, `user/42`): customers/<sub>
// takes the rest of the topic whole, so it round-trips.
func ValidCustomer(sub string) bool {
	return validName("customer", sub) == nil
}

// ValidOrderID reports whether id has the shape of an order id (24 lower-case hex characters).
func ValidOrderID(id string) bool { return orderIDRE.MatchString(id) }

// ParseTopic splits a topic into its kind and key, and reports whether it
// is well formed: orders/<id> (KindOrder, the id), rooms/<room> (KindRoom,
// the room), orders (KindOrderList, "") or customers/<sub> (KindCustomer,
// the sub).
func ParseTopic(topic string) (kind TopicKind, key string, ok bool) {
	switch {
	case topic == OrderListTopic:
		return KindOrderList, "", true
	case strings.HasPrefix(topic, CustomerTopicPrefix):
		key = topic[len(CustomerTopicPrefix):]
		return KindCustomer, key, ValidCustomer(key)
	case strings.HasPrefix(topic, OrderTopicPrefix):
		key = topic[len(OrderTopicPrefix):]
		return KindOrder, key, ValidOrderID(key)
	case strings.HasPrefix(topic, RoomTopicPrefix):
		key = topic[len(RoomTopicPrefix):]
		return KindRoom, key, ValidRoom(key)
	}
	return "", "", false
}

// transitions is the status machine: the statuses an order may move to
// from each status, in the order an order moves through them.
var transitions = map[string][]string{
	StatusPlaced:         {StatusPreparing, StatusCancelled},
	StatusPreparing:      {StatusOutForDelivery, StatusCancelled},
	StatusOutForDelivery: {StatusDelivered},
}

// NextStatuses returns the statuses an order may move to from status
// from, in the order an order moves through them: empty, not nil, for
// a final or unknown status. The caller owns the slice.
func NextStatuses(from string) []string {
	return append([]string{}, transitions[from]...)
}

// ValidStatus reports whether s is a known order status.
func ValidStatus(s string) bool {
	switch s {
	case StatusPlaced, StatusPreparing, StatusOutForDelivery, StatusDelivered, StatusCancelled:
		return true
	}
	return false
}

// CanTransition reports whether an order may move from status from to status to.
func CanTransition(from, to string) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// CheckTransition returns nil if an order may move from status from to
// status to, an error wrapping ErrInvalid for an unknown status, and one
// wrapping ErrConflict otherwise.
func CheckTransition(from, to string) error {
	if !ValidStatus(to) {
		return fmt.Errorf("status %q: %w", to, ErrInvalid)
	}
	if !CanTransition(from, to) {
		return fmt.Errorf("%s to %s: %w", from, to, ErrConflict)
	}
	return nil
}

func validName(field, s string) error {
	if s == "" {
		return fmt.Errorf("%s is required: %w", field, ErrInvalid)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%s is longer than %d bytes: %w", field, MaxNameLen, ErrInvalid)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s is not valid UTF-8: %w", field, ErrInvalid)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s has a control character: %w", field, ErrInvalid)
		}
	}
	return nil
}

// ValidateOrder checks a new order's fields. It returns an error wrapping
// ErrInvalid that names the first bad field.
func ValidateOrder(customer string, items []Item) error {
	if err := validName("customer", customer); err != nil {
		return err
	}
	if len(items) == 0 {
		return fmt.Errorf("items must not be empty: %w", ErrInvalid)
	}
	if len(items) > MaxItems {
		return fmt.Errorf("more than %d items: %w", MaxItems, ErrInvalid)
	}
	for i, it := range items {
		if err := validName(fmt.Sprintf("items[%d].sku", i), it.SKU); err != nil {
			return err
		}
		if it.Qty < 1 || it.Qty > MaxQty {
			return fmt.Errorf("items[%d].qty must be 1 to %d: %w", i, MaxQty, ErrInvalid)
		}
	}
	return nil
}

// ValidateMessage checks a new message's fields. It returns an error wrapping
// ErrInvalid that names the first bad field.
func ValidateMessage(room, author, text string) error {
	if !ValidRoom(room) {
		return fmt.Errorf("room must match %s: %w", roomRE, ErrInvalid)
	}
	if err := validName("author", author); err != nil {
		return err
	}
	if !utf8.ValidString(text) {
		return fmt.Errorf("text is not valid UTF-8: %w", ErrInvalid)
	}
	if n := utf8.RuneCountInString(text); n < 1 || n > MaxTextLen {
		return fmt.Errorf("text must be 1 to %d characters: %w", MaxTextLen, ErrInvalid)
	}
	return nil
}

// PresenceEntry is one user present on a topic, since the time they
// joined: what the processes of a deployment tell each other about the
// streams they hold (see the MongoDB store's SharePresence).
type PresenceEntry struct {
	Topic string
	User  string
	Since time.Time
}
