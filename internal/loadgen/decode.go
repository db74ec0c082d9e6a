package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"changecast/stream/sseparse"
)

// decoder turns the bytes of a response body into SSE events, across
// reads of any size: the chunked transfer coding (if used), then the
// event stream (package sseparse: the WHATWG rules, no allocation per
// event).
type decoder struct {
	chunked bool
	state   int // state*
	remain  int // bytes left in the current chunk
	size    []byte
	sse     sseparse.Decoder
	s       *stream // the stream decoded
	h       handler // its handler, for the bytes being fed
	ev      event
}

const (
	stateSize = iota // reading a chunk-size line
	stateData        // reading chunk data
	stateEnd         // reading the CRLF after chunk data
	stateDone        // the last chunk was read
)

// maxChunkLine bounds a chunk-size line with its extensions.
const maxChunkLine = 4 << 10

// resetDecoder readies s's decoder for a new response body; the first
// call binds the decoder to s.
func (s *stream) resetDecoder(chunked bool) {
	d := &s.dec
	d.chunked, d.state, d.remain = chunked, stateSize, 0
	d.size = d.size[:0]
	if d.s != s {
		d.s = s
		d.sse.MaxLine = maxLine
		d.sse.OnEvent = d.dispatch
		d.sse.OnRetry = func(r time.Duration) { s.retry = r }
	}
	// The id of a last block without data counts for the reconnect.
	if id := d.sse.LastEventID(); len(id) > 0 {
		s.lastID = append(s.lastID[:0], id...)
	}
	d.sse.Reset()
}

// feed decodes data, calling h for each complete event. It returns
// io.EOF at the end of a chunked body, errStop when h stops, and
// other errors for a malformed stream.
func (b *bencher) feed(s *stream, h handler, data []byte) error {
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
		case stateSize:
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				d.size = append(d.size, data...)
				if len(d.size) > maxChunkLine {
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
				d.state, end = stateDone, true
			} else {
				d.state, d.remain = stateData, int(n)
			}
		case stateData:
			k := min(d.remain, len(data))
			if err := b.consume(s, h, data[:k]); err != nil {
				return err
			}
			data, d.remain = data[k:], d.remain-k
			if d.remain == 0 {
				d.state = stateEnd
			}
		case stateEnd:
			c := data[0]
			data = data[1:]
			if c == '\n' {
				d.state = stateSize
			} else if c != '\r' {
				return fmt.Errorf("stream %s: no CRLF after a chunk", s.room)
			}
		case stateDone:
			data = nil
		}
	}
	if end || d.state == stateDone {
		return io.EOF
	}
	return nil
}

// consume decodes body bytes (after the chunked coding) as the event
// stream, calling h for each event.
func (b *bencher) consume(s *stream, h handler, seg []byte) error {
	s.dec.h = h
	err := s.dec.sse.Feed(seg)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sseparse.ErrStopped):
		return errStop
	case errors.Is(err, sseparse.ErrLineTooLong):
		return fmt.Errorf("stream %s: line longer than %d bytes", s.room, maxLine)
	}
	return err
}

// dispatch passes one event to the stream's handler, after checking that
// its id follows the last one; false when the handler stopped.
func (d *decoder) dispatch(e *sseparse.Event) bool {
	s := d.s
	if e.HasID && len(s.lastID) > 0 && bytes.Compare(e.ID, s.lastID) <= 0 {
		s.idDisorder++
	}
	if e.HasID || len(e.ID) > 0 {
		s.lastID = append(s.lastID[:0], e.ID...)
	}
	d.ev = event{name: e.Name, data: e.Data, hasID: e.HasID}
	if e.HasID {
		d.ev.id = e.ID
	}
	s.events.Add(1)
	return d.h(s, &d.ev)
}
