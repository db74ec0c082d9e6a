package main

import (
	"bufio"
	"bytes"
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
	// benchReadBuf is a goroutine reader's buffer for live streams: a
	// few events.
	benchReadBuf = 4 << 10
	// benchStormReadBuf is the buffer for catch-ups, where the server
	// writes many events at once: fewer, larger reads.
	benchStormReadBuf = 32 << 10
	// benchMaxLine bounds one SSE line (a snapshot of 50 long messages
	// is about 250 KiB).
	benchMaxLine = 4 << 20
	// benchDefaultRetry is the reconnect delay when the server sent no
	// `retry:`; benchMaxRetry caps what it asks.
	benchDefaultRetry = time.Second
	benchMaxRetry     = 3 * time.Second
)

// errBenchStop is returned once a stream's handler asked to stop.
var errBenchStop = errors.New("bench: handler stopped the stream")

// benchHandler is called for each event of a stream; false ends the
// stream (no reconnect).
type benchHandler func(*benchStream, *benchEvent) bool

// benchEvent is one SSE event; its slices are valid only during the
// handler call.
type benchEvent struct {
	id    []byte
	hasID bool
	name  []byte
	data  []byte
}

// benchStream is one SSE connection to a room. One goroutine (or epoll
// loop) at a time runs its handler; fields other than the atomics are
// read by others only after the stream has ended.
type benchStream struct {
	room    string
	roomIdx int
	lastID  []byte
	retry   time.Duration
	bufSize int
	dec     benchDecoder

	ready chan struct{} // closed at the first snapshot

	events     atomic.Int64 // events dispatched, for progress lines
	idDisorder int64        // ids that did not increase
	snapshots  int64
	resets     int64 // reset events, and snapshots after the first
	unexpected int64 // events that should not be on this stream

	// fanout
	hist     *benchHist
	seen     []uint64 // writes received, by seq/rooms
	unique   atomic.Int64
	dups     int64
	measured int64

	// storm
	storm *benchStormClient
}

// countEvent counts resets (a resume must never need one: with a valid
// Last-Event-ID the server replays, without reset or snapshot) and
// reports whether ev is a message.
func (s *benchStream) countEvent(ev *benchEvent) bool {
	switch string(ev.name) {
	case "message":
		return true
	case "snapshot":
		s.snapshots++
		if s.snapshots > 1 {
			s.resets++
		}
	case "reset":
		s.resets++
	}
	return false
}

// start begins s's life, counted in wg until it ends: it connects,
// streams and reconnects with its last event id after a drop (as a
// browser does) until ctx ends or h returns false.
func (b *bencher) start(ctx context.Context, wg *sync.WaitGroup, s *benchStream, h benchHandler) {
	if b.poll != nil {
		wg.Add(1)
		go b.connectLoop(ctx, s, h, true, wg.Done)
		return
	}
	wg.Go(func() { b.follow(ctx, s, h) })
}

// follow is the goroutine reader: it streams s until ctx ends or h stops
// it, reconnecting after each drop.
func (b *bencher) follow(ctx context.Context, s *benchStream, h benchHandler) {
	for first := true; ; first = false {
		if !first && !b.backoff(ctx, s) {
			return
		}
		err := b.session(ctx, s, h)
		if ctx.Err() != nil || errors.Is(err, errBenchStop) {
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
func (b *bencher) backoff(ctx context.Context, s *benchStream) bool {
	wait := s.retry
	if wait <= 0 {
		wait = benchDefaultRetry
	}
	wait = min(wait, benchMaxRetry)
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
func (b *bencher) session(ctx context.Context, s *benchStream, h benchHandler) error {
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
	buf := make([]byte, max(s.bufSize, benchReadBuf))
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
func (b *bencher) handshake(ctx context.Context, s *benchStream, h benchHandler) (net.Conn, error) {
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
	s.dec.reset(chunked)
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

// benchDecoder turns the bytes of a response body into SSE events,
// across reads of any size: the chunked transfer coding (if used), then
// lines, then fields (the WHATWG rules: id, event, data, retry; comments;
// a blank line dispatches).
type benchDecoder struct {
	chunked bool
	state   int // benchChunk*
	remain  int // bytes left in the current chunk
	size    []byte
	body    []byte // a partial line, waiting for the rest
	ev      benchEvent
	idBuf   []byte
	nameBuf []byte
	dataBuf []byte
	dataRef []byte // the event's one data line, still in the caller's bytes
	isRef   bool   // the data is dataRef, not dataBuf
	hasData bool
}

const (
	benchChunkSize = iota // reading a chunk-size line
	benchChunkData        // reading chunk data
	benchChunkEnd         // reading the CRLF after chunk data
	benchChunkDone        // the last chunk was read
)

// benchMaxChunkLine bounds a chunk-size line with its extensions.
const benchMaxChunkLine = 4 << 10

func (d *benchDecoder) reset(chunked bool) {
	d.chunked, d.state, d.remain = chunked, benchChunkSize, 0
	d.size, d.body = d.size[:0], d.body[:0]
	d.idBuf, d.nameBuf, d.dataBuf = d.idBuf[:0], d.nameBuf[:0], d.dataBuf[:0]
	d.ev, d.hasData, d.dataRef, d.isRef = benchEvent{}, false, nil, false
}

// keep copies an event's data out of the caller's bytes, which are about
// to be reused.
func (d *benchDecoder) keep() {
	if d.isRef {
		d.dataBuf = append(d.dataBuf[:0], d.dataRef...)
		d.dataRef, d.isRef = nil, false
	}
}

// feed decodes data, calling h for each complete event. It returns
// io.EOF at the end of a chunked body, errBenchStop when h stops, and
// other errors for a malformed stream.
func (b *bencher) feed(s *benchStream, h benchHandler, data []byte) error {
	d := &s.dec
	end := false
	for len(data) > 0 && !end {
		if !d.chunked {
			if err := b.consume(s, h, data); err != nil {
				return err
			}
			break
		}
		switch d.state {
		case benchChunkSize:
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				d.size = append(d.size, data...)
				if len(d.size) > benchMaxChunkLine {
					return fmt.Errorf("stream %s: chunk size line too long", s.room)
				}
				data = nil
				continue
			}
			line := data[:i]
			if len(d.size) > 0 {
				d.size = append(d.size, line...)
				line = d.size
			}
			data = data[i+1:]
			line = bytes.TrimRight(line, "\r")
			if j := bytes.IndexByte(line, ';'); j >= 0 {
				line = line[:j]
			}
			n, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 31)
			if err != nil {
				return fmt.Errorf("stream %s: bad chunk size %q", s.room, line)
			}
			d.size = d.size[:0]
			if n == 0 {
				d.state, end = benchChunkDone, true
			} else {
				d.state, d.remain = benchChunkData, int(n)
			}
		case benchChunkData:
			k := min(d.remain, len(data))
			if err := b.consume(s, h, data[:k]); err != nil {
				return err
			}
			data, d.remain = data[k:], d.remain-k
			if d.remain == 0 {
				d.state = benchChunkEnd
			}
		case benchChunkEnd:
			c := data[0]
			data = data[1:]
			if c == '\n' {
				d.state = benchChunkSize
			} else if c != '\r' {
				return fmt.Errorf("stream %s: no CRLF after a chunk", s.room)
			}
		case benchChunkDone:
			data = nil
		}
	}
	if end || d.state == benchChunkDone {
		return io.EOF
	}
	return nil
}

// consume parses decoded body bytes: complete lines where they lie, a
// partial last line kept for the next call.
func (b *bencher) consume(s *benchStream, h benchHandler, seg []byte) error {
	d := &s.dec
	if len(d.body) > 0 {
		i := bytes.IndexByte(seg, '\n')
		if i < 0 {
			d.body = append(d.body, seg...)
			if len(d.body) > benchMaxLine {
				return fmt.Errorf("stream %s: line longer than %d bytes", s.room, benchMaxLine)
			}
			return nil
		}
		d.body = append(d.body, seg[:i]...)
		seg = seg[i+1:]
		if !b.line(s, h, d.body) {
			return errBenchStop
		}
		d.keep()
		d.body = d.body[:0]
	}
	for {
		i := bytes.IndexByte(seg, '\n')
		if i < 0 {
			break
		}
		if !b.line(s, h, seg[:i]) {
			return errBenchStop
		}
		seg = seg[i+1:]
	}
	d.keep()
	d.body = append(d.body, seg...)
	return nil
}

// line handles one SSE line (without its LF); false when h stopped.
func (b *bencher) line(s *benchStream, h benchHandler, line []byte) bool {
	d := &s.dec
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if len(line) == 0 {
		ev := &d.ev
		if d.hasData {
			ev.name, ev.data = d.nameBuf, d.dataBuf
			if d.isRef {
				ev.data = d.dataRef
			}
			if ev.hasID {
				if len(s.lastID) > 0 && bytes.Compare(ev.id, s.lastID) <= 0 {
					s.idDisorder++
				}
				s.lastID = append(s.lastID[:0], ev.id...)
			}
			s.events.Add(1)
			if !h(s, ev) {
				return false
			}
		} else if ev.hasID {
			s.lastID = append(s.lastID[:0], ev.id...)
		}
		*ev = benchEvent{}
		d.dataBuf, d.nameBuf = d.dataBuf[:0], d.nameBuf[:0]
		d.hasData, d.dataRef, d.isRef = false, nil, false
		return true
	}
	if line[0] == ':' {
		return true // a comment: heartbeat
	}
	field, value := line, line[:0]
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		switch {
		case !d.hasData:
			d.dataRef, d.isRef = value, true // copied only if the event spans reads
		default:
			d.keep()
			d.dataBuf = append(d.dataBuf, '\n')
			d.dataBuf = append(d.dataBuf, value...)
		}
		d.hasData = true
	case "event":
		d.nameBuf = append(d.nameBuf[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			d.idBuf = append(d.idBuf[:0], value...)
			d.ev.id, d.ev.hasID = d.idBuf, true
		}
	case "retry":
		if ms, err := strconv.Atoi(string(value)); err == nil && ms >= 0 {
			s.retry = time.Duration(ms) * time.Millisecond
		}
	}
	return true
}

// streamRequest is the GET for s's room, resuming after s.lastID.
func (b *bencher) streamRequest(s *benchStream) []byte {
	r := make([]byte, 0, 256+len(s.lastID)+len(b.cfg.Token))
	r = append(r, "GET "...)
	r = append(r, b.basePath...)
	r = append(r, "/api/rooms/"...)
	r = append(r, s.room...)
	r = append(r, "/events HTTP/1.1\r\nHost: "...)
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
