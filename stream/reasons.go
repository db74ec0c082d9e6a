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
	// EndMaxAge: the stream reached its age limit (Config.MaxAge) and
	// ended cleanly; the client resumes from its last id, maybe on
	// another process.
	EndMaxAge EndReason = "max-age"
	// EndWithdrawn: every topic of the stream was withdrawn
	// (StreamOptions.Recheck); the stream sent their events.
	EndWithdrawn EndReason = "withdrawn"
)
