package loadgen

import (
	"bufio"
	"bytes"
	"changecast/internal/latency"
	"changecast/protocol"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The SSE side of `changecast bench` holds thousands of connections on the
// same machine as the server, so it must cost the server's cores as little
// as it can. Each stream is a bare TCP connection: a hand-written HTTP/1.1
// request, http.ReadResponse for the response head only, then an
// incremental decoder (chunked transfer coding and the SSE fields) that
// reuses its buffers: no allocation per event. Two readers feed the
// decoder: one goroutine per connection (-reader goroutine), or a few
// epoll loops for all of them (-reader epoll, Linux), which read each
// event with one system call instead of two and wake no goroutine.

const (
	// readBuf is a goroutine reader's buffer for live streams: a
	// few events.
	readBuf = 4 << 10
	// stormReadBuf is the buffer for catch-ups, where the server
	// writes many events at once: fewer, larger reads.
	stormReadBuf = 32 << 10
	// maxLine bounds one SSE line (a snapshot of 50 long messages
	// is about 250 KiB).
	maxLine = 4 << 20
	// defaultRetry is the reconnect delay when the server sent no
	// `retry:`; maxRetry caps what it asks.
	defaultRetry = time.Second
	maxRetry     = 3 * time.Second
)

// errStop is returned once a stream's handler asked to stop.
var errStop = errors.New("bench: handler stopped the stream")

// handler is called for each event of a stream; false ends the
// stream (no reconnect).
type handler func(*stream, *event) bool

// event is one SSE event; its slices are valid only during the
// handler call.
type event struct {
	id    []byte
	hasID bool
	name  []byte
	data  []byte
}

// stream is one SSE connection to a room (or, with path, to another
// stream route). One goroutine (or epoll loop) at a time runs its
// handler; fields other than the atomics are read by others only after
// the stream has ended.
type stream struct {
	room    string
	roomIdx int
	path    string // the request's path and query; "": the room's events
	lastID  []byte
	retry   time.Duration
	bufSize int
	dec     decoder

	ready chan struct{} // closed at the first snapshot

	events     atomic.Int64 // events dispatched, for progress lines
	idDisorder int64        // ids that did not increase
	snapshots  int64
	resets     int64 // reset events, and snapshots after the first
	unexpected int64 // events that should not be on this stream

	// fanout
	hist     *latency.Hist
	seen     []uint64 // writes received, by seq/rooms
	unique   atomic.Int64
	dups     int64
	measured int64

	// board
	versions        []uint8 // versions received, by order: bit v-1 for version v
	versionDisorder int64   // versions of an order received after a later one

	// storm
	storm *stormClient
}

// countEvent counts resets (a resume must never need one: with a valid
// Last-Event-ID the server replays, without reset or snapshot) and
// reports whether ev is a message.
func (s *stream) countEvent(ev *event) bool {
	switch protocol.EventName(ev.name) {
	case protocol.EventMessage:
		return true
	case protocol.EventSnapshot:
		s.snapshots++
		if s.snapshots > 1 {
			s.resets++
		}
	case protocol.EventReset:
		s.resets++
	}
	return false
}

// start begins s's life, counted in wg until it ends: it connects,
// streams and reconnects with its last event id after a drop (as a
// browser does) until ctx ends or h returns false.
func (b *bencher) start(ctx context.Context, wg *sync.WaitGroup, s *stream, h handler) {
	if b.poll != nil {
		wg.Add(1)
		go b.connectLoop(ctx, s, h, true, wg.Done)
		return
	}
	wg.Go(func() { b.follow(ctx, s, h) })
}

// follow is the goroutine reader: it streams s until ctx ends or h stops
// it, reconnecting after each drop.
func (b *bencher) follow(ctx context.Context, s *stream, h handler) {
	for first := true; ; first = false {
		if !first && !b.backoff(ctx, s) {
			return
		}
		err := b.session(ctx, s, h)
		if ctx.Err() != nil || errors.Is(err, errStop) {
			return
		}
		b.reconnects.Add(1)
		if err != nil {
			b.fail(err)
		}
	}
}

// backoff waits before a reconnect (the server's `retry:`, capped, with
// jitter to spread a crowd); false if ctx ended first.
func (b *bencher) backoff(ctx context.Context, s *stream) bool {
	wait := s.retry
	if wait <= 0 {
		wait = defaultRetry
	}
	wait = min(wait, maxRetry)
	wait += rand.N(wait/2 + 1)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// session is one connection read by this goroutine until it ends. A
// clean end of the stream returns nil.
func (b *bencher) session(ctx context.Context, s *stream, h handler) error {
	conn, err := b.handshake(ctx, s, h)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer func() {
		stop()
		conn.Close()
		b.open.Add(-1)
	}()
	buf := make([]byte, max(s.bufSize, readBuf))
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			if ferr := b.feed(s, h, buf[:n]); ferr != nil {
				if errors.Is(ferr, io.EOF) {
					return nil
				}
				return ferr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil // the server ended the stream: reconnect
			}
			return fmt.Errorf("stream %s: %w", s.room, err)
		}
	}
}

// handshake dials, sends the request and reads the response head; it
// feeds the body bytes read with the head to the decoder. On success the
// connection counts as open (b.open) and the caller must close it.
func (b *bencher) handshake(ctx context.Context, s *stream, h handler) (net.Conn, error) {
	conn, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	fail := func(err error) (net.Conn, error) {
		conn.Close()
		return nil, err
	}
	if _, err := conn.Write(b.streamRequest(s)); err != nil {
		return fail(fmt.Errorf("stream %s: %w", s.room, err))
	}
	br := bufio.NewReaderSize(conn, 1<<10)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fail(fmt.Errorf("stream %s: %w", s.room, err))
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && ra > 0 {
			s.retry = time.Duration(ra) * time.Second
		}
		return fail(fmt.Errorf("stream %s: status %d: %s", s.room, resp.StatusCode, bytes.TrimSpace(msg)))
	}
	if ct := resp.Header.Get("Content-Type"); len(ct) < 17 || ct[:17] != "text/event-stream" {
		return fail(fmt.Errorf("stream %s: Content-Type %q", s.room, ct))
	}
	// resp.Body is not used (its Close would read the endless stream to
	// its end): the decoder takes the bytes from here on.
	chunked := len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked"
	s.resetDecoder(chunked)
	b.open.Add(1)
	if n := br.Buffered(); n > 0 {
		head, _ := br.Peek(n)
		if err := b.feed(s, h, head); err != nil {
			conn.Close()
			b.open.Add(-1)
			return nil, err
		}
	}
	return conn, nil
}

// streamRequest is the GET for s's room (or s.path), resuming after
// s.lastID.
func (b *bencher) streamRequest(s *stream) []byte {
	r := make([]byte, 0, 256+len(s.path)+len(s.lastID)+len(b.cfg.Token))
	r = append(r, "GET "...)
	r = append(r, b.basePath...)
	if s.path != "" {
		r = append(r, s.path...)
	} else {
		r = append(r, "/api/rooms/"...)
		r = append(r, s.room...)
		r = append(r, "/events"...)
	}
	r = append(r, " HTTP/1.1\r\nHost: "...)
	r = append(r, b.host...)
	r = append(r, "\r\nUser-Agent: changecast-bench\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"...)
	if b.cfg.Token != "" {
		r = append(r, "Authorization: Bearer "...)
		r = append(r, b.cfg.Token...)
		r = append(r, "\r\n"...)
	}
	if len(s.lastID) > 0 {
		r = append(r, "Last-Event-ID: "...)
		r = append(r, s.lastID...)
		r = append(r, "\r\n"...)
	}
	return append(r, "\r\n"...)
}

// dial opens a TCP connection to the server, from the next of
// cfg.Sources loopback addresses (127.0.0.1, 127.0.0.2, ...): each source
// address has its own ephemeral ports, so many sources pass the ~28,000
// connections one address can make to one server port.
func (b *bencher) dial(ctx context.Context) (net.Conn, error) {
	d := net.Dialer{Timeout: 15 * time.Second}
	if n := b.cfg.Sources; n > 1 {
		i := b.nextSource.Add(1) % uint32(n)
		d.LocalAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))}
	}
	return d.DialContext(ctx, "tcp", b.hostPort)
}
