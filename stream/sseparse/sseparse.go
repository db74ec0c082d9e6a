// Package sseparse decodes a Server-Sent Events byte stream incrementally,
// by the WHATWG event-stream parsing rules: lines end in CRLF, LF or a
// lone CR (also when a CRLF is split between two reads); one leading
// U+FEFF byte order mark is ignored; a line starting with a colon is a
// comment; `field: value` loses one space after the colon, a line
// without a colon is a field with an empty value; `data` lines are
// joined with LF, `event` names the event, `id` (unless it holds NUL)
// sets the last event ID, which carries over to later events, and
// `retry` (ASCII digits only) sets the reconnection time; a blank line
// dispatches the event if it has data; other fields are ignored; a
// partial line or event at the end of the stream is dropped.
//
// A Decoder takes bytes as they arrive, in pieces of any size, and
// reuses its buffers: once warmed up it does not allocate per line or
// per event, and an event whose lines all lie in one piece is passed on
// without copying its data. It is used by the load generator and by the
// tests that read the server's streams; it imports nothing from the
// server.
package sseparse

import (
	"bytes"
	"errors"
	"io"
	"time"
)

// ErrStopped is returned by Feed and Decode when OnEvent returned false.
var ErrStopped = errors.New("sseparse: stopped by the event handler")

// ErrLineTooLong is returned by Feed and Decode for a line longer than
// Decoder.MaxLine.
var ErrLineTooLong = errors.New("sseparse: line too long")

// Event is one dispatched event. Its slices point into the Decoder's
// buffers or the bytes being fed, and are valid only during the OnEvent
// call that receives it.
type Event struct {
	// ID is the last event ID when the event was dispatched: the value
	// of the latest id field since the stream began, this event's or an
	// earlier one's (as EventSource's lastEventId).
	ID []byte
	// HasID reports whether this event itself had an id field.
	HasID bool
	// Name is the value of the event's event field; empty if it had
	// none (EventSource then calls it "message").
	Name []byte
	// Data is the values of the event's data fields joined with LF.
	Data []byte
}

// A Decoder decodes one stream at a time; Reset starts the next. The
// zero value is ready to use (set OnEvent to see events). A Decoder is
// not safe for concurrent use.
type Decoder struct {
	// OnEvent is called for each dispatched event. Returning false
	// stops the decoding: Feed returns ErrStopped and the rest of its
	// bytes are not read.
	OnEvent func(*Event) bool
	// OnRetry, if not nil, is called with each valid retry field's
	// duration when its line is read.
	OnRetry func(time.Duration)
	// OnComment, if not nil, is called with each comment line's text
	// after the colon (a leading space included).
	OnComment func(text []byte)
	// MaxLine, if positive, bounds the length of a line (without its
	// end); a longer one makes Feed return ErrLineTooLong.
	MaxLine int

	begun   bool   // past the byte order mark, if any
	bom     int    // bytes of a byte order mark matched so far
	skipLF  bool   // the last piece ended in CR: a leading LF ends no line
	partial []byte // a line not yet ended, waiting for the rest
	ev      Event
	idBuf   []byte // the last event ID buffer
	lastID  []byte // the last event ID, as of the latest blank line
	idDirty bool   // idBuf changed since it was copied to lastID
	name    []byte
	data    []byte
	dataRef []byte // the event's one data line, still in the fed bytes
	isRef   bool   // the data is dataRef, not data
	hasData bool
}

// bomBytes is U+FEFF in UTF-8.
const bomBytes = "\xEF\xBB\xBF"

// Reset forgets the stream decoded so far (a partial line or event, the
// last event ID) to decode a new one. The callbacks, MaxLine and the
// buffers are kept.
func (d *Decoder) Reset() {
	d.begun, d.bom, d.skipLF = false, 0, false
	d.partial, d.idBuf, d.lastID = d.partial[:0], d.idBuf[:0], d.lastID[:0]
	d.idDirty = false
	d.clearEvent()
}

// LastEventID returns the last event ID as of the latest blank line: what
// a client resuming the stream sends as Last-Event-ID. It is valid until
// the next call to Feed or Reset.
func (d *Decoder) LastEventID() []byte { return d.lastID }

func (d *Decoder) clearEvent() {
	d.ev = Event{}
	d.name, d.data = d.name[:0], d.data[:0]
	d.dataRef, d.isRef, d.hasData = nil, false, false
}

// Decode reads r to its end, feeding d; it returns nil at io.EOF (a
// partial event at the end is dropped), ErrStopped or ErrLineTooLong, or
// r's error.
func (d *Decoder) Decode(r io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if ferr := d.Feed(buf[:n]); ferr != nil {
				return ferr
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Feed decodes the next bytes of the stream, calling the callbacks for
// what they complete. A line or event that p leaves unfinished waits for
// the next call. It returns ErrStopped or ErrLineTooLong, or nil.
func (d *Decoder) Feed(p []byte) error {
	if !d.begun {
		if p = d.skipBOM(p); !d.begun {
			return nil
		}
	}
	if d.skipLF && len(p) > 0 {
		d.skipLF = false
		if p[0] == '\n' {
			p = p[1:]
		}
	}
	if len(d.partial) > 0 {
		end, next := lineEnd(p)
		if end < 0 {
			return d.hold(p)
		}
		d.partial = append(d.partial, p[:end]...)
		d.skipLF = next > len(p)
		p = p[min(next, len(p)):]
		if err := d.checkLen(d.partial); err != nil {
			return err
		}
		if err := d.line(d.partial); err != nil {
			return err
		}
		d.keep()
		d.partial = d.partial[:0]
	}
	rest, err := d.lines(p)
	if err != nil {
		return err
	}
	d.keep()
	return d.hold(rest)
}

// skipBOM drops a byte order mark at the start of the stream, which may
// arrive split over several pieces; bytes that turn out not to be one are
// put back as the start of the first line.
func (d *Decoder) skipBOM(p []byte) []byte {
	for len(p) > 0 && d.bom < len(bomBytes) {
		if p[0] != bomBytes[d.bom] {
			d.partial = append(d.partial, bomBytes[:d.bom]...)
			d.begun = true
			return p
		}
		d.bom++
		p = p[1:]
	}
	d.begun = d.bom == len(bomBytes)
	return p
}

// hold keeps an unfinished line for the next call.
func (d *Decoder) hold(p []byte) error {
	d.partial = append(d.partial, p...)
	return d.checkLen(d.partial)
}

func (d *Decoder) checkLen(line []byte) error {
	if d.MaxLine > 0 && len(line) > d.MaxLine {
		return ErrLineTooLong
	}
	return nil
}

// lineEnd returns where p's first line ends and where the next begins
// (len(p)+1 when p ends in CR, whose LF may be in the next piece), or
// -1, -1 if p holds no line end.
func lineEnd(p []byte) (end, next int) {
	lf := bytes.IndexByte(p, '\n')
	search := p
	if lf >= 0 {
		search = p[:lf]
	}
	if cr := bytes.IndexByte(search, '\r'); cr >= 0 {
		switch {
		case cr+1 == len(p):
			return cr, cr + 2
		case p[cr+1] == '\n':
			return cr, cr + 2
		}
		return cr, cr + 1
	}
	if lf < 0 {
		return -1, -1
	}
	return lf, lf + 1
}

// lines processes the complete lines at the start of p and returns the
// unfinished rest. It looks for CR once per stretch without one, so a
// stream of LF line ends costs one scan for LF per line.
func (d *Decoder) lines(p []byte) ([]byte, error) {
	cr := bytes.IndexByte(p, '\r')
	if cr < 0 {
		cr = len(p)
	}
	for len(p) > 0 {
		var end, next int
		if lf := bytes.IndexByte(p[:cr], '\n'); lf >= 0 {
			end, next = lf, lf+1
		} else if cr < len(p) {
			end, next = cr, cr+1
			switch {
			case next == len(p):
				d.skipLF = true
			case p[next] == '\n':
				next++
			}
		} else {
			break
		}
		if err := d.checkLen(p[:end]); err != nil {
			return nil, err
		}
		if err := d.line(p[:end]); err != nil {
			return nil, err
		}
		p = p[next:]
		if cr -= next; cr < 0 {
			if cr = bytes.IndexByte(p, '\r'); cr < 0 {
				cr = len(p)
			}
		}
	}
	return p, nil
}

// keep copies an event's data out of the fed bytes, which the caller is
// about to reuse.
func (d *Decoder) keep() {
	if d.isRef {
		d.data = append(d.data[:0], d.dataRef...)
		d.dataRef, d.isRef = nil, false
	}
}

// line handles one line, without its end.
func (d *Decoder) line(line []byte) error {
	if len(line) == 0 {
		return d.dispatch()
	}
	if line[0] == ':' {
		if d.OnComment != nil {
			d.OnComment(line[1:])
		}
		return nil
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
			d.dataRef, d.isRef = value, true // copied only if the event spans pieces
		default:
			d.keep()
			d.data = append(d.data, '\n')
			d.data = append(d.data, value...)
		}
		d.hasData = true
	case "event":
		d.name = append(d.name[:0], value...)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			d.idBuf = append(d.idBuf[:0], value...)
			d.idDirty, d.ev.HasID = true, true
		}
	case "retry":
		if ms, ok := parseMillis(value); ok && d.OnRetry != nil {
			d.OnRetry(time.Duration(ms) * time.Millisecond)
		}
	}
	return nil
}

// dispatch handles a blank line: it sets the last event ID and passes
// the event on if it has data.
func (d *Decoder) dispatch() error {
	if d.idDirty {
		d.lastID = append(d.lastID[:0], d.idBuf...)
		d.idDirty = false
	}
	if !d.hasData {
		d.clearEvent()
		return nil
	}
	ev := &d.ev
	ev.ID, ev.Name, ev.Data = d.lastID, d.name, d.data
	if d.isRef {
		ev.Data = d.dataRef
	}
	ok := d.OnEvent == nil || d.OnEvent(ev)
	d.clearEvent()
	if !ok {
		return ErrStopped
	}
	return nil
}

// maxRetryMillis bounds a retry value so that it fits a time.Duration.
const maxRetryMillis = int64(1<<63-1) / int64(time.Millisecond)

// parseMillis parses a retry value: ASCII digits only, and small enough
// for a time.Duration.
func parseMillis(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
		if n > maxRetryMillis {
			return 0, false
		}
	}
	return n, true
}
