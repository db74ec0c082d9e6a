// Package stream carries changes from one upstream change feed to many
// Server-Sent Events responses.
//
// A Multiplexer follows the database's change log through a Source (one
// feed per process), keeps the most recent events of each topic in memory,
// and hands every event to the subscribers of its topic without blocking:
// each subscriber has a bounded queue, and one whose queue is full is
// disconnected (it reconnects with its Last-Event-ID and catches up). A
// client that resumes from an older position is caught up from memory or
// from the Source's log, then handed over to the live feed with no gap and
// no duplicate. Serve writes the whole SSE response.
//
// Every event is encoded once, when it comes off the feed, into the bytes
// every subscriber writes. Event ids are positions in the log, which order
// bytewise like it: a stream never sends an event at or before the last
// id it sent, and a client that resumes with its Last-Event-ID gets
// exactly the events after it. An id that cannot be resumed gets a
// `reset` event and a snapshot, never an error status.
//
// The SSE encoder (AppendEvent, Encode, AppendComment, AppendRetry)
// follows the WHATWG HTML event-stream format and can be used on its own.
//
// Files: multiplexer.go (the feed and its lifecycle), buffer.go (each
// topic's recent events), subscriber.go (queues and fan-out), session.go
// (one stream from headers to end), resume.go (snapshot, catch-up,
// reset), writer.go (what a stream batches per write), reasons.go (why
// a stream ended). The event names, payloads and headers it sends are
// package protocol's. The HTTP/1.x transport under
// it, a connection taken over from net/http, is internal/httpconn.
//
// A live stream on a taken-over connection has no goroutine of its own:
// its subscriber's queue wakes it on the Multiplexer's pool of writers
// (httpconn.Pool), which writes what is pending without waiting for the
// client, and one epoll instance (httpconn.Poller) notices the client
// hang up. A stream through an http.ResponseWriter (HTTP/2) keeps the
// handler's goroutine. Either way the same step (session.go) decides
// what to write.
//
// The package imports neither a database driver nor a web framework, and
// gives topics no meaning: Config.Classify lets the caller count
// subscribers by its own kinds.
package stream
