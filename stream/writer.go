package stream

import (
	"errors"
	"sync"
	"time"

	"changecast/protocol"
	"changecast/stream/internal/httpconn"
)

// responseWriter is where a stream's bytes go: a connection taken over
// from net/http, or the http.ResponseWriter. The session chooses one when
// the response starts; one goroutine at a time calls Write and End or
// Drop, and SetWriteDeadline may cut a Write short from another.
type responseWriter interface {
	// Write sends bufs, size bytes in all, to the client as the next part
	// of the body; it neither modifies nor keeps bufs.
	Write(bufs [][]byte, size int) error
	// SetWriteDeadline bounds the writes in progress and to come.
	SetWriteDeadline(t time.Time) error
	// End ends the response cleanly, last (if not empty) being the final
	// bytes of its body.
	End(last []byte)
	// Drop gives up on a response whose write failed.
	Drop()
	// Blocked reports whether bytes written earlier still wait for the
	// client (only after a Write that did not wait for it), and the
	// error that ended their writing, if one did.
	Blocked() (bool, error)
}

var (
	_ responseWriter = (*httpconn.Conn)(nil)
	_ responseWriter = (*httpconn.ResponseWriter)(nil)
)

// flushSize is how much a stream buffers before writing to the client
// while draining its queue or catching up: a few TCP segments' worth, so
// a burst costs few syscalls and a client sees progress early. maxPieces
// bounds the pieces of one write: as many as a write takes without
// allocating.
const (
	flushSize = 64 << 10
	maxPieces = httpconn.MaxBufs
)

var errAborted = errors.New("stream aborted by Close")

// streamWriter batches what one stream writes: the pieces of the next
// write, most of them frames shared by every subscriber, sent with one
// call to the responseWriter per flush. One goroutine at a time writes
// through it (Serve's, then the stream's own); abort, from Close's, may
// only cut short a write in progress.
type streamWriter struct {
	rw      responseWriter
	scratch *[][]byte // lent from scratchPool until the stream is live

	out     [][]byte // pieces to write, in order; never modified
	size    int      // bytes in out
	own     []byte   // bytes for this stream alone, which out points into
	ownFrom int      // where in own the last piece starts, if ownLast
	ownLast bool     // the last piece is the end of own
	pending int      // events in out
	events  int      // events written
	err     error
	// pushed is when the write deadline was last pushed forward.
	pushed time.Time

	mu       sync.Mutex
	writing  bool // a write to the client is in progress
	aborting bool // the multiplexer is closing
	// async says writes do not wait for the client: what it has not
	// taken is written in the background, until the write deadline.
	async bool
}

// newStreamWriter returns a streamWriter with room for a catch-up's
// pieces, given back by release once the stream is live. Its rw is set
// when the response starts.
func newStreamWriter() *streamWriter {
	sc := scratchPool.Get().(*[][]byte)
	return &streamWriter{scratch: sc, out: (*sc)[:0]}
}

// scratchPool holds room for the pieces of a catch-up's writes.
var scratchPool = sync.Pool{New: func() any {
	s := make([][]byte, 0, maxPieces)
	return &s
}}

// add adds bytes that are not an event; b must not change afterwards.
func (sw *streamWriter) add(b []byte) {
	sw.out = append(sw.out, b)
	sw.size += len(b)
	sw.ownLast = false
}

// addEvent adds one event's frame; b must not change afterwards.
func (sw *streamWriter) addEvent(b []byte) {
	sw.add(b)
	sw.pending++
}

// encode adds an event encoded for this stream alone.
func (sw *streamWriter) encode(id string, name protocol.EventName, data []byte) error {
	start, c := len(sw.own), cap(sw.own)
	own, err := AppendEvent(sw.own, id, string(name), data)
	if err != nil {
		return err
	}
	sw.own = own
	sw.addOwn(start, c)
	return nil
}

// addOwn adds own[start:] as one event: it extends the last piece when
// that ends where start is, in the same array (whose capacity was c).
func (sw *streamWriter) addOwn(start, c int) {
	own := sw.own
	if sw.ownLast && cap(own) == c {
		sw.out[len(sw.out)-1] = own[sw.ownFrom:len(own):len(own)]
	} else {
		sw.out = append(sw.out, own[start:len(own):len(own)])
		sw.ownFrom, sw.ownLast = start, true
	}
	sw.size += len(own) - start
	sw.pending++
}

// full reports whether what is buffered should be written before more is
// added.
func (sw *streamWriter) full() bool { return sw.size >= flushSize || len(sw.out) >= maxPieces }

// release lets go of the buffers the start of the stream used: live
// events and heartbeats are shared frames, and an idle stream should hold
// little.
func (sw *streamWriter) release() {
	if sc := sw.scratch; sc != nil {
		clear((*sc)[:cap(*sc)])
		scratchPool.Put(sc)
		sw.scratch = nil
	}
	sw.own, sw.out = nil, nil
}

// flush writes what is buffered to the client, pushing the write deadline
// forward first (at most once a second: it costs a timer update). A
// response that cannot take deadlines is written to all the same. It
// returns the number of events written.
func (sw *streamWriter) flush() (int, error) {
	if sw.err != nil {
		return 0, sw.err
	}
	if len(sw.out) == 0 {
		return 0, nil
	}
	sw.mu.Lock()
	if sw.aborting {
		sw.mu.Unlock()
		sw.err = errAborted
		return 0, sw.err
	}
	sw.writing = true
	if now := time.Now(); now.Sub(sw.pushed) >= time.Second {
		if err := sw.rw.SetWriteDeadline(now.Add(writeTimeout)); err == nil {
			sw.pushed = now
		}
	}
	sw.mu.Unlock()
	err := sw.rw.Write(sw.out, sw.size)
	sw.mu.Lock()
	sw.writing = false
	sw.mu.Unlock()
	clear(sw.out)
	sw.out, sw.own, sw.size, sw.ownLast = sw.out[:0], sw.own[:0], 0, false
	if err != nil {
		sw.err = err
		return 0, err
	}
	n := sw.pending
	sw.events += n
	sw.pending = 0
	return n, nil
}

// abort cuts short a write in progress (to a client that does not read)
// and makes later writes fail, so the stream ends promptly on Close. It
// is called from Close's goroutine, under the multiplexer's lock, while
// the stream is registered.
func (sw *streamWriter) abort() {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	sw.aborting = true
	if sw.writing || sw.async {
		// An async write may be in progress in the background; a
		// deadline set while none is does no harm: the end of the
		// response sets its own.
		_ = sw.rw.SetWriteDeadline(time.Now())
	}
}

// setAsync records that the responseWriter no longer waits for the
// client in Write.
func (sw *streamWriter) setAsync() {
	sw.mu.Lock()
	sw.async = true
	sw.mu.Unlock()
}

// finish ends the response, last (if not empty) being the final bytes of
// its body, written if the stream can still write; after a failed write
// it drops the response.
func (sw *streamWriter) finish(last []byte) {
	if sw.err == nil || sw.err == errAborted {
		sw.rw.End(last)
	} else {
		sw.rw.Drop()
	}
}

// send flushes sw and counts what was delivered.
func (m *Multiplexer) send(sw *streamWriter) error {
	n, err := sw.flush()
	if n > 0 {
		m.delivered.Add(uint64(n))
	}
	return err
}
