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
// every subscriber writes. Event ids are positions in the log, which the
// Source orders (ComparePositions; they need not order as strings): a
// stream never sends an event at or before the last
// id it sent, and a client that resumes with its Last-Event-ID gets
// exactly the events after it. An id that cannot be resumed gets a
// `reset` event and a snapshot, never an error status.
//
// The SSE encoder (AppendEvent, Encode, AppendComment, AppendRetry)
// follows the WHATWG HTML event-stream format and can be used on its own.
//
// Files: multiplexer.go (the feed, its lifecycle and the fan-out),
// buffer.go (each topic's recent events), subscribe.go (a stream's
// registration), session.go (one stream from headers to end, and its
// mode), resume.go (what a stream sends before it is live: snapshot,
// catch-up, reset), deliver.go (a live stream: its queue, its step, its
// writes), presence.go (who is on a topic, apart from the fan-out),
// withdraw.go (a live stream giving up topics its Recheck refuses),
// reasons.go (why a stream ended). The event names, payloads and headers
// it sends are package protocol's. The HTTP/1.x transport under it, a
// connection taken over from net/http, is internal/httpconn.
//
// The walk of one change, from a PATCH of an order's status to the
// bytes on a client's socket, with the embedded store (10 files; a file
// met again is marked "back"; calls that return at once, such as
// encoding or buffering, are in parentheses):
//
//  1. handlers/orders.go: patchOrder checks the request and calls the
//     store's UpdateOrderStatus.
//  2. store/bolt/orders.go: UpdateOrderStatus hands its write, a closure,
//     to the group commit (submit) and waits.
//  3. store/bolt/commit.go: the committer (runCommitter, commit) runs the
//     closures of a group in one transaction: back in orders.go, the
//     closure updates the order (t.putJSON) and appends the change to
//     the log (t.append, the record format of logformat.go); back in
//     commit.go, the transaction commits with one fdatasync, wake tells
//     the feed, and each writer gets its answer.
//  4. store/bolt/logread.go: Follow, woken, reads the new entries
//     (readLog, decodeChange) and calls its fn with a store.Batch.
//  5. store/streamsource/feed.go: encodes each change's payload once
//     (the protocol package's types) into a stream.Batch.
//  6. stream/multiplexer.go: follow's fn is apply: it encodes each event's
//     SSE frame once (encode.go), keeps it for resuming (buffer.go), and
//     fanOutLocked pushes it to every subscriber of its topics.
//  7. stream/deliver.go: subscriber.push queues the frame and, when the
//     queue was empty, notifies its session: notify wakes the session's
//     task on the pool.
//  8. stream/internal/httpconn/pool.go: a worker runs the task.
//  9. back in stream/deliver.go: the task runs step, which takes the
//     queue, skips what the client has (write), and flushes the
//     streamWriter (send, flush): one Write of shared buffers.
//  10. stream/internal/httpconn/conn.go: Conn.Write adds the chunk's
//     framing and hands the buffers to the gatherWriter.
//  11. stream/internal/httpconn/writev_linux.go: one writev takes what the
//     socket takes; the rest waits in a backlog written when the client
//     reads.
//
// Ten files; three returns to a file already left (orders.go and
// commit.go inside the group commit, deliver.go after the pool). With
// MongoDB, steps 2 to 4 are store/mongo/store.go (the write) and
// store/mongo/feed.go (the change stream). With stage timing on
// (internal/latency), steps 3, 6 and 9 stamp the change on its way:
// committed, applied and fanned out, then written to each stream.
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
