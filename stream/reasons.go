package stream

// EndReason says why a stream ended: StreamEnd.Reason, a label of
// metrics and logs. Its values are the constants below.
type EndReason string

// Why a stream ended.
const (
	// EndClientGone: the client hung up, or the request's context ended.
	EndClientGone EndReason = "client-gone"
	// EndShutdown: Close ended the stream (or it started after Close).
	EndShutdown EndReason = "shutdown"
	// EndSlow: the subscriber's queue was full; the client catches up when
	// it reconnects.
	EndSlow EndReason = "slow"
	// EndReset: the feed lost its history; the client is reset when it
	// reconnects.
	EndReset EndReason = "reset"
	// EndExpired: the client's token expired (the stream sent `expired`).
	EndExpired EndReason = "expired"
	// EndWriteFailed: a write to the client failed or timed out.
	EndWriteFailed EndReason = "write-failed"
	// EndSourceFailed: the Source failed while catching up; Serve
	// returned its error.
	EndSourceFailed EndReason = "source-failed"
	// EndPanic: the stream panicked (a bug, logged with its stack).
	EndPanic EndReason = "panic"
)

// ResetReason says why a stream sent `reset` events: the `reason` of
// their data. Its values are the constants below.
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

// EventName is an SSE event name (the `event:` field).
type EventName string

// The events the stream itself sends; the events of the feed are named
// by the Source.
const (
	// EventSnapshot carries a topic's state when a stream starts fresh or
	// after a reset.
	EventSnapshot EventName = "snapshot"
	// EventReset tells the client its position could not be resumed,
	// with a ResetReason; a snapshot follows.
	EventReset EventName = "reset"
	// EventExpired tells the client its token expired; the stream ends.
	EventExpired EventName = "expired"
)

// expiredReason is the `reason` of an `expired` event's data.
const expiredReason = "token expired"
