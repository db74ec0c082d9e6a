// Package protocol is changecast's wire protocol on a stream, declared
// once: the SSE event names, the JSON payload each carries, the reasons
// and operations those payloads name, and the headers a stream is
// answered with. The server (stream, handlers, the store's feed adapter),
// the Go clients (the tail and bench commands) and the tests all import
// it; static/changecast.js exports the same event names (a test here
// holds the two lists equal).
//
// Every payload carries the topic it is about. Events with an id (order,
// message, snapshot) are positions in the change log a client resumes
// from; the others (reset, expired, refused, presence) carry none.
package protocol

import (
	"net/http"
	"time"

	"changecast/store"
)

// EventName is an SSE event name (the `event:` field).
type EventName string

// The events of a stream.
const (
	// EventOrder carries an OrderChange: one change of an order.
	EventOrder EventName = "order"
	// EventMessage carries a MessageChange: one message posted to a room.
	EventMessage EventName = "message"
	// EventSnapshot carries an OrderSnapshot, a RoomSnapshot or a
	// ListSnapshot: a topic's state when its stream started fresh or was
	// reset.
	EventSnapshot EventName = "snapshot"
	// EventReset carries a Reset: the client's position could not be
	// resumed for the topic; a snapshot follows.
	EventReset EventName = "reset"
	// EventExpired carries an Expired: the client's token expired; the
	// stream ends.
	EventExpired EventName = "expired"
	// EventRefused carries a Refused: a topic of a multi-topic stream is
	// left out (unknown, not allowed, or malformed); the rest stream on.
	EventRefused EventName = "refused"
	// EventPresence carries a PresenceSync after a stream's snapshot or
	// resume, then a PresenceChange for each join and leave.
	EventPresence EventName = "presence"
)

// Events lists every event name, in the order static/changecast.js
// exports them.
var Events = []EventName{
	EventSnapshot, EventOrder, EventMessage, EventReset, EventExpired, EventRefused, EventPresence,
}

// HasID reports whether events of this name carry an id, a position a
// client resumes after.
func (n EventName) HasID() bool {
	switch n {
	case EventOrder, EventMessage, EventSnapshot:
		return true
	}
	return false
}

// ResetReason says why a stream sent `reset` events: a Reset's Reason.
type ResetReason string

// Why a client's position could not be resumed.
const (
	// ResetInvalidID: the Last-Event-ID is malformed, unknown, or from
	// another deployment.
	ResetInvalidID ResetReason = "invalid-id"
	// ResetHistoryLost: the log no longer holds the events after the
	// Last-Event-ID.
	ResetHistoryLost ResetReason = "history-lost"
)

// ExpiredReason is the Reason of every Expired.
const ExpiredReason = "token expired"

// PresenceOp is the Op of a presence event.
type PresenceOp string

// Presence operations.
const (
	// PresenceOpSync: the whole list of who is on the topic.
	PresenceOpSync PresenceOp = "sync"
	// PresenceOpJoin: a user arrived.
	PresenceOpJoin PresenceOp = "join"
	// PresenceOpLeave: a user left (after a grace period).
	PresenceOpLeave PresenceOp = "leave"
)

// Payloads, one type per event (snapshot has three, by topic kind).
type (
	// OrderChange is an `order` event's data. Op is one of store's Op
	// constants.
	OrderChange struct {
		Topic string       `json:"topic"`
		Op    string       `json:"op"`
		Order *store.Order `json:"order"`
	}
	// MessageChange is a `message` event's data.
	MessageChange struct {
		Topic   string         `json:"topic"`
		Op      string         `json:"op"`
		Message *store.Message `json:"message"`
	}
	// OrderSnapshot is a `snapshot` event's data for an order topic.
	OrderSnapshot struct {
		Topic string       `json:"topic"`
		Order *store.Order `json:"order"`
	}
	// RoomSnapshot is a `snapshot` event's data for a room topic: its
	// latest messages, oldest first.
	RoomSnapshot struct {
		Topic    string          `json:"topic"`
		Messages []store.Message `json:"messages"`
	}
	// ListSnapshot is a `snapshot` event's data for a list topic.
	ListSnapshot struct {
		Topic  string        `json:"topic"`
		Orders []store.Order `json:"orders"`
	}
	// Reset is a `reset` event's data.
	Reset struct {
		Topic  string      `json:"topic"`
		Reason ResetReason `json:"reason"`
	}
	// Expired is an `expired` event's data; Reason is ExpiredReason.
	Expired struct {
		Topic  string `json:"topic"`
		Reason string `json:"reason"`
	}
	// Refused is a `refused` event's data, and an entry of the
	// "refused" list of an all-refused answer: the HTTP status the topic
	// alone would have had, and its error text.
	Refused struct {
		Topic  string `json:"topic"`
		Status int    `json:"status"`
		Error  string `json:"error"`
	}
	// Member is one user present on a topic, since the time they joined.
	Member struct {
		User  string    `json:"user"`
		Since time.Time `json:"since"`
	}
	// PresenceSync is a `presence` event's data with Op PresenceOpSync.
	PresenceSync struct {
		Topic string     `json:"topic"`
		Op    PresenceOp `json:"op"`
		Users []Member   `json:"users"`
	}
	// PresenceChange is a `presence` event's data with Op PresenceOpJoin
	// or PresenceOpLeave.
	PresenceChange struct {
		Topic string     `json:"topic"`
		Op    PresenceOp `json:"op"`
		User  string     `json:"user"`
	}
)

// Payload is the union of every event's data, for a client that decodes
// an event before knowing its name (a field absent from the event is
// left zero).
type Payload struct {
	Topic    string          `json:"topic"`
	Op       string          `json:"op"`
	Reason   string          `json:"reason"`
	Order    *store.Order    `json:"order"`
	Message  *store.Message  `json:"message"`
	Messages []store.Message `json:"messages"`
	Orders   []store.Order   `json:"orders"`
	Status   int             `json:"status"`
	Error    string          `json:"error"`
	Users    []Member        `json:"users"`
	User     string          `json:"user"`
}

// Content type and headers of every stream's answer.
const ContentType = "text/event-stream"

// StreamHeaders are the headers a stream is answered with (a HEAD
// request gets them alone): no caching, no transformation (a proxy that
// compresses, as HAProxy does with gzip on text/event-stream, would hold
// each event until the next), and no buffering by a proxy that honours
// X-Accel-Buffering (nginx).
var StreamHeaders = [...][2]string{
	{"Content-Type", ContentType},
	{"Cache-Control", "no-cache, no-transform"},
	{"X-Accel-Buffering", "no"},
}

// SetStreamHeaders sets StreamHeaders on h.
func SetStreamHeaders(h http.Header) {
	for _, kv := range StreamHeaders {
		h.Set(kv[0], kv[1])
	}
}
