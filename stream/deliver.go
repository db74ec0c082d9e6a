package stream

import (
	"errors"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"changecast/internal/latency"
	"changecast/protocol"
	"changecast/stream/internal/httpconn"
)

// Delivery: how the frames of the feed reach one client once its stream
// is live. Fan-out (multiplexer.go) pushes a frame to the subscriber's
// queue, which notifies the session; the session's step, on the pool of
// writers or on its own goroutine, takes what is queued, skips what the
// client has, and writes the rest through the streamWriter, which hands
// one list of shared buffers to the connection (internal/httpconn) per
// write. The stream's start (catch-up, snapshot) writes through the same
// streamWriter.

// subscriber is one stream's registration. Its queue is a slice that
// holds only what is pending, so an idle subscriber costs little; notify
// tells the stream that frames came or that the subscriber was dropped.
type subscriber struct {
	topics []string
	user   string // counted present on its presence topics
	class  string // counted under it in Stats
	// notify, if set, is called when the queue stops being empty and when
	// the subscriber is dropped. It must not block: it runs under the
	// multiplexer's lock.
	notify func()

	mu   sync.Mutex
	q    []*frame // pending frames, oldest first
	done bool     // dropped: no frame follows those in q

	// reason and closed are set under the multiplexer's lock, before done.
	reason EndReason
	closed bool
	// pushed is the last frame fanned out to s, under the multiplexer's
	// lock: a frame on several of s's topics is queued once.
	pushed *frame
}

// push queues f; it returns false, queueing nothing, when max frames are
// pending. Called under the multiplexer's lock.
func (s *subscriber) push(f *frame, max int) bool {
	s.mu.Lock()
	n := len(s.q)
	if n >= max {
		s.mu.Unlock()
		return false
	}
	s.q = append(s.q, f)
	s.mu.Unlock()
	if n == 0 {
		s.signal()
	}
	return true
}

func (s *subscriber) signal() {
	if s.notify != nil {
		s.notify()
	}
}

// shrink lets go of the queue's array if nothing is pending.
func (s *subscriber) shrink() {
	s.mu.Lock()
	if len(s.q) == 0 {
		s.q = nil
	}
	s.mu.Unlock()
}

// take returns the pending frames, leaving spare (emptied) as the queue,
// and whether the subscriber was dropped after them.
func (s *subscriber) take(spare []*frame) ([]*frame, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.q
	s.q = spare[:0]
	return q, s.done
}

// run is live on the goroutine it is called on (Serve's in modeHandler,
// one of the stream's own in modeOwn), then ends the stream.
func (s *session) run() {
	defer s.end()
	defer s.recoverPanic()
	s.loop()
}

// recoverPanic does what net/http would for a handler: log, end the
// stream, keep serving the others.
func (s *session) recoverPanic() {
	if p := recover(); p != nil {
		s.reason, s.over = EndPanic, true
		s.m.log.Error("stream panicked", "panic", p, "stack", string(debug.Stack()))
	}
}

// notify says the stream has something to do: frames came, its
// subscriber was dropped, a timer fired or the client went.
func (s *session) notify() {
	if s.onPool.Load() {
		s.pool.Wake(&s.task)
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// wakeAfter returns a timer that, after d, sets due and notifies s.
func (s *session) wakeAfter(d time.Duration, due *atomic.Bool) *time.Timer {
	return time.AfterFunc(d, func() {
		due.Store(true)
		s.notify()
	})
}

// loop drives step on run's goroutine, each time the stream is woken,
// until the stream ends.
func (s *session) loop() {
	for {
		select {
		case <-s.ctx.Done():
			s.reason = s.ended()
			return
		case <-s.wake:
		}
		if s.step() {
			return
		}
	}
}

// goLive hands the stream to the Multiplexer's pool (modePool): from now
// on each notify runs step on a worker, and the stream ends on a
// goroutine of its own (ending may wait a moment for the client). Like
// loop, it only drives step.
func (s *session) goLive() {
	s.task.Run = func() {
		if s.over {
			return
		}
		ended := true
		func() {
			defer s.recoverPanic()
			ended = s.step()
		}()
		if ended {
			s.over = true
			go s.end()
		}
	}
	s.conn.SetNonblocking(s.notify)
	s.sw.setAsync()
	s.onPool.Store(true)
	// Whatever came during the catch-up is waiting.
	s.pool.Wake(&s.task)
}

// step writes what is due, without waiting for the client when the
// stream is live on the pool: the pending events, a heartbeat, or the
// end. It returns true, with the reason set, when the stream ends; the
// caller then ends it.
func (s *session) step() bool {
	m, sw, sub := s.m, s.sw, s.sub
	if s.ctx.Err() != nil {
		s.reason = s.ended()
		return true
	}
	if s.expiredDue.Load() {
		s.reason = EndExpired
		if waiting, _ := sw.rw.Blocked(); !waiting {
			// (A client that is not reading gets no more bytes, nor
			// more time to take them.)
			for _, t := range s.opts.Topics {
				if s.live(t) {
					sw.add(expiredFrame(t))
				}
			}
			s.send()
		}
		return true
	}
	s.settle()
	if waiting, err := sw.rw.Blocked(); err != nil || waiting {
		// What was written last still waits for the client: its
		// frames wait in the queue (which drops the subscriber if it
		// fills), and the end of the wait notifies again.
		if err != nil {
			sw.err = err
			s.reason = s.writeFailed()
			return true
		}
		return false
	}
	if s.withdrawDue.Swap(false) && s.writeWithdrawn() {
		s.reason = EndWithdrawn
		s.send()
		return true
	}
	frames, done := sub.take(s.spare)
	var start int64
	if latency.On() {
		start = latency.Now()
	}
	if len(frames) > 0 {
		s.woken = true
	}
	timed := stamped(frames, start)
	for _, f := range frames {
		s.write(f)
		if sw.full() {
			if err := s.send(); err != nil {
				s.reason = s.writeFailed()
				return true
			}
		}
	}
	clear(frames)
	s.spare = frames[:0]
	if s.pingDue.Swap(false) {
		if !s.woken {
			// A whole heartbeat without an event: let go of the
			// queue's slices and the writes', so an idle stream holds
			// no burst's worth of pointers. Nothing is buffered here.
			s.spare = nil
			sub.shrink()
			sw.out = nil
		}
		s.woken = false
		sw.add(pingFrame)
		// Set again here, not in the timer's function: once the stream
		// has ended, nothing sets it again.
		s.beat.Reset(m.cfg.Heartbeat)
	}
	if done {
		s.reason = m.reasonOf(sub)
		s.send()
		return true
	}
	if err := s.send(); err != nil {
		s.reason = s.writeFailed()
		return true
	}
	if timed != nil {
		latency.Delivered(timed, start, latency.Now())
	}
	if s.agedDue.Load() {
		// What was queued is written: the client resumes after it.
		s.reason = EndMaxAge
		return true
	}
	return false
}

// stamped returns the stage stamps of frames, taken by a step that
// started at start; nil when stages are not timed (start is 0).
func stamped(frames []*frame, start int64) []*latency.Stamps {
	if start == 0 {
		return nil
	}
	var out []*latency.Stamps
	for _, f := range frames {
		if f.stamps != nil {
			out = append(out, f.stamps)
		}
	}
	return out
}

// pingFrame is the heartbeat.
var pingFrame = AppendComment(nil, "ping")

// expiredFrame is the `expired` event of one topic.
func expiredFrame(topic string) []byte {
	b, _ := AppendEvent(nil, "", string(protocol.EventExpired), jsonData(protocol.Expired{Topic: topic, Reason: protocol.ExpiredReason}))
	return b
}

// write adds f to the response unless the client has it already: its
// position is not after s.after, the last one sent (which it then
// becomes), or it is an injected frame up to s.synced; or it is only of
// topics withdrawn (withdraw.go).
func (s *session) write(f *frame) {
	if !s.carries(f) {
		return // of a topic withdrawn since it was queued
	}
	if f.seq != 0 {
		if f.seq > s.synced {
			s.sw.addEvent(f.wire)
		}
		return
	}
	if s.m.compare(f.id, s.after) <= 0 {
		return
	}
	s.sw.addEvent(f.wire)
	s.after = f.id
}

func (m *Multiplexer) reasonOf(s *subscriber) EndReason {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s.reason == "" {
		return EndShutdown
	}
	return s.reason
}

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

// send flushes the session's writer and counts the events the socket
// took as delivered. A write on the pool that the socket did not take
// whole leaves its events in the connection's backlog: they count as
// backlogged until the backlog is written (see settle).
func (s *session) send() error {
	n, err := s.sw.flush()
	if n > 0 {
		if waiting, _ := s.sw.rw.Blocked(); waiting {
			s.unsent += n
			s.m.backlogged.Add(int64(n))
		} else {
			s.m.delivered.Add(uint64(n))
		}
	}
	return err
}

// settle counts the events of the connection's backlog once it has been
// written: delivered if the socket took it, not at all if writing it
// failed.
func (s *session) settle() {
	if s.unsent == 0 {
		return
	}
	waiting, err := s.sw.rw.Blocked()
	if waiting {
		return
	}
	if err == nil {
		s.m.delivered.Add(uint64(s.unsent))
	}
	s.m.backlogged.Add(-int64(s.unsent))
	s.unsent = 0
}
