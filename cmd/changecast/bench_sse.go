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
	"sync/atomic"
	"time"
)

// The SSE side of `changecast bench` holds thousands of connections on the
// same machine as the server, so it must cost the server's cores as little
// as it can: each connection is a bare TCP connection with one goroutine,
// a hand-written HTTP/1.1 request, http.ReadResponse for the head and the
// chunked body, and a small line parser that reuses its buffers (no
// allocation per event). http.Client would add two goroutines and a
// channel hand-off per connection.

const (
	// benchConnBuf is the connection's read buffer: it holds the response
	// head and the chunk headers; chunk payloads of a buffer's size or
	// more are read past it, straight into the line buffer.
	benchConnBuf = 1 << 10
	// benchLineBuf is the line buffer for live streams: a few events.
	benchLineBuf = 4 << 10
	// benchStormLineBuf is the line buffer for catch-ups, where the server
	// writes many events at once: fewer, larger reads.
	benchStormLineBuf = 32 << 10
	// benchMaxLine bounds one SSE line (a snapshot of 50 long messages
	// is about 250 KiB).
	benchMaxLine = 4 << 20
	// benchDefaultRetry is the reconnect delay when the server sent no
	// `retry:`; benchMaxRetry caps what it asks.
	benchDefaultRetry = time.Second
	benchMaxRetry     = 3 * time.Second
)

// errBenchStop is returned by a session whose handler asked to stop.
var errBenchStop = errors.New("bench: handler stopped the stream")

// benchEvent is one SSE event; its slices are valid only during the
// handler call.
type benchEvent struct {
	id    []byte
	hasID bool
	name  []byte
	data  []byte
}

// benchStream is one SSE connection to a room, owned by one goroutine
// (follow). Fields other than the atomics are read by others only after
// that goroutine is done.
type benchStream struct {
	room    string
	roomIdx int
	lastID  []byte
	retry   time.Duration
	bufSize int

	ready  chan struct{} // closed at the first snapshot
	isOpen bool

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

// follow streams s's room until ctx ends or h returns false, reconnecting
// with the last event id after a drop, as a browser would.
func (b *bencher) follow(ctx context.Context, s *benchStream, h func(*benchStream, *benchEvent) bool) {
	p := &benchParser{line: bufio.NewReaderSize(nil, max(s.bufSize, benchLineBuf))}
	for {
		err := b.session(ctx, s, p, h)
		if ctx.Err() != nil || errors.Is(err, errBenchStop) {
			return
		}
		b.reconnects.Add(1)
		if err != nil {
			b.fail(err)
		}
		wait := s.retry
		if wait <= 0 {
			wait = benchDefaultRetry
		}
		wait = min(wait, benchMaxRetry)
		wait += rand.N(wait/2 + 1) // spread a crowd of reconnects
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// benchParser holds one stream's reusable read state.
type benchParser struct {
	line    *bufio.Reader
	long    []byte // a line longer than the buffer
	ev      benchEvent
	idBuf   []byte
	nameBuf []byte
	dataBuf []byte
}

// session is one connection: request, response head, events until the
// connection ends. A clean end of the stream returns nil.
func (b *bencher) session(ctx context.Context, s *benchStream, p *benchParser, h func(*benchStream, *benchEvent) bool) error {
	conn, err := b.dial(ctx)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer func() {
		stop()
		conn.Close()
	}()
	req := b.streamRequest(s)
	if _, err := conn.Write(req); err != nil {
		return fmt.Errorf("stream %s: %w", s.room, err)
	}
	br := bufio.NewReaderSize(conn, benchConnBuf)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return fmt.Errorf("stream %s: %w", s.room, err)
	}
	// resp.Body is not closed: its Close would read the endless stream
	// to its end. Closing conn ends it.
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			s.retry = time.Duration(ra) * time.Second
		}
		return fmt.Errorf("stream %s: status %d: %s", s.room, resp.StatusCode, bytes.TrimSpace(msg))
	}
	if ct := resp.Header.Get("Content-Type"); len(ct) < 17 || ct[:17] != "text/event-stream" {
		return fmt.Errorf("stream %s: Content-Type %q", s.room, ct)
	}
	b.open.Add(1)
	s.isOpen = true
	defer func() {
		s.isOpen = false
		b.open.Add(-1)
	}()
	p.line.Reset(resp.Body)
	return b.readEvents(s, p, h)
}

// readEvents parses the event stream (the WHATWG rules: fields id, event,
// data, retry; comments; a blank line dispatches) and calls h for each
// event.
func (b *bencher) readEvents(s *benchStream, p *benchParser, h func(*benchStream, *benchEvent) bool) error {
	ev := &p.ev
	*ev = benchEvent{}
	p.dataBuf, p.nameBuf = p.dataBuf[:0], p.nameBuf[:0]
	hasData := false
	for {
		line, err := p.line.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			p.long = append(p.long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(p.long) < benchMaxLine {
				line, err = p.line.ReadSlice('\n')
				p.long = append(p.long, line...)
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				return fmt.Errorf("stream %s: line longer than %d bytes", s.room, benchMaxLine)
			}
			line = p.long
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil // the server ended the stream: reconnect
			}
			return fmt.Errorf("stream %s: %w", s.room, err)
		}
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			if hasData {
				ev.name, ev.data = p.nameBuf, p.dataBuf
				if ev.hasID {
					if len(s.lastID) > 0 && bytes.Compare(ev.id, s.lastID) <= 0 {
						s.idDisorder++
					}
					s.lastID = append(s.lastID[:0], ev.id...)
				}
				s.events.Add(1)
				if !h(s, ev) {
					return errBenchStop
				}
			} else if ev.hasID {
				s.lastID = append(s.lastID[:0], ev.id...)
			}
			*ev = benchEvent{}
			p.dataBuf, p.nameBuf = p.dataBuf[:0], p.nameBuf[:0]
			hasData = false
			continue
		}
		if line[0] == ':' {
			continue // a comment: heartbeat
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
			if hasData {
				p.dataBuf = append(p.dataBuf, '\n')
			}
			p.dataBuf = append(p.dataBuf, value...)
			hasData = true
		case "event":
			p.nameBuf = append(p.nameBuf[:0], value...)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				p.idBuf = append(p.idBuf[:0], value...)
				ev.id, ev.hasID = p.idBuf, true
			}
		case "retry":
			if ms, err := strconv.Atoi(string(value)); err == nil && ms >= 0 {
				s.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
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
