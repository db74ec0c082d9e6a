package stream

import (
	"changecast/protocol"
	"context"
	"errors"
	"time"
)

// Errors a Source returns, tested with errors.Is.
var (
	// ErrHistoryLost means a position is older than the log retains.
	ErrHistoryLost = errors.New("history lost")
	// ErrInvalidPosition means a position is malformed, unknown or from
	// another deployment.
	ErrInvalidPosition = errors.New("invalid position")
)

// Event is one change as the stream sees it: a position, a topic, an SSE
// event name and a JSON payload. Events are immutable once made.
type Event struct {
	// ID is the change's position in the log; Source.ComparePositions
	// orders positions like the log.
	ID string
	// Topic is the topic the change belongs to; the stream does not
	// interpret it.
	Topic string
	// Also lists further topics the event is delivered on, besides Topic.
	Also []string
	// Name is the SSE event name, as the Source names the change (or
	// protocol.EventSnapshot).
	Name protocol.EventName
	// Data is the JSON payload, one line, carrying "topic".
	Data []byte
	// Time is when the change was committed (zero for snapshots).
	Time time.Time
}

// Batch is a run of events from the feed in log order.
type Batch struct {
	// Events are in log order; may be empty.
	Events []Event
	// Checkpoint is the position the feed has reached: at or after the last
	// event. Never empty.
	Checkpoint string
}

// Source is the database's change log as the multiplexer uses it. A
// Source is safe for concurrent use.
type Source interface {
	// Head returns the position of the newest change in the log (or the
	// position of an empty log).
	Head(ctx context.Context) (string, error)
	// Follow calls fn with every change after position after, in log
	// order, until ctx ends (then it returns ctx.Err()) or fn or the feed
	// fails. It first calls fn with an empty batch whose checkpoint is
	// after, once the feed is established. It returns an error wrapping
	// ErrHistoryLost or ErrInvalidPosition when it cannot follow from after.
	Follow(ctx context.Context, after string, fn func(Batch) error) error
	// CatchUp calls fn, in log order, with each change on one of topics
	// whose position p has after < p <= until. It returns an error wrapping
	// ErrHistoryLost or ErrInvalidPosition when after cannot be resumed.
	CatchUp(ctx context.Context, topics []string, after, until string, fn func(Event) error) error
	// Snapshot returns one protocol.EventSnapshot event per topic, in the order given,
	// and the position they reflect: each holds every change up to that
	// position and none after it.
	Snapshot(ctx context.Context, topics []string) ([]Event, string, error)
	// CheckPosition returns an error wrapping ErrInvalidPosition if pos is
	// not a position this deployment could have made. It does not check
	// whether the history is still retained.
	CheckPosition(pos string) error
	// ComparePositions compares two positions that CheckPosition
	// accepts, as strings.Compare compares strings: negative when a comes
	// before b in the log, zero when they are the same position, positive
	// when a comes after b. It is a total order. Positions need not order
	// as strings (MongoDB's resume tokens of different versions do not):
	// the multiplexer compares positions only through it.
	ComparePositions(a, b string) int
}
