package stream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// ErrBadField means an SSE id or event name holds CR, LF or NUL, which
// the wire format cannot carry (a client would split the line, or ignore
// an id holding NUL).
var ErrBadField = errors.New("sse field holds CR, LF or NUL")

// AppendEvent appends one SSE event to dst: an `id:` line (if id is not
// empty), an `event:` line (if name is not empty), one `data:` line per
// line of data (split on CRLF, LF and lone CR, as a parser joins them back
// with LF), and the blank line that dispatches it. It returns an error
// wrapping ErrBadField, and dst unchanged, if id or name holds CR, LF or
// NUL. Data is written as given: a client reads it as UTF-8. AppendEvent
// does not allocate when dst has room.
func AppendEvent(dst []byte, id, name string, data []byte) ([]byte, error) {
	if strings.ContainsAny(id, "\r\n\x00") {
		return dst, fmt.Errorf("id %q: %w", id, ErrBadField)
	}
	if strings.ContainsAny(name, "\r\n\x00") {
		return dst, fmt.Errorf("event %q: %w", name, ErrBadField)
	}
	if id != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, id...)
		dst = append(dst, '\n')
	}
	if name != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, name...)
		dst = append(dst, '\n')
	}
	for {
		i := bytes.IndexAny(data, "\r\n")
		dst = append(dst, "data: "...)
		if i < 0 {
			dst = append(dst, data...)
			dst = append(dst, '\n')
			break
		}
		dst = append(dst, data[:i]...)
		dst = append(dst, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	return append(dst, '\n'), nil
}

// Encode writes ev's SSE frame (see AppendEvent; ev.Topic and ev.Time are
// not sent) to w in one Write. It returns an error wrapping ErrBadField
// for an id or name that cannot be sent, or w's error.
func Encode(w io.Writer, ev Event) error {
	b, err := AppendEvent(make([]byte, 0, len(ev.ID)+len(ev.Name)+len(ev.Data)+32), ev.ID, string(ev.Name), ev.Data)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// AppendComment appends text as comment lines (`: text`) and a blank line
// to dst and returns the extended slice. CRLF, LF or CR in text start a
// new comment line, so a comment can never carry a field. Clients ignore
// comments; they keep idle connections open through proxies.
func AppendComment(dst []byte, text string) []byte {
	for {
		i := strings.IndexAny(text, "\r\n")
		dst = append(dst, ": "...)
		if i < 0 {
			dst = append(dst, text...)
			return append(dst, "\n\n"...)
		}
		dst = append(dst, text[:i]...)
		dst = append(dst, '\n')
		if text[i] == '\r' && i+1 < len(text) && text[i+1] == '\n' {
			i++
		}
		text = text[i+1:]
	}
}

// AppendRetry appends a `retry:` line giving d in whole milliseconds
// (negative counts as zero) and a blank line to dst and returns the
// extended slice.
func AppendRetry(dst []byte, d time.Duration) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, max(d.Milliseconds(), 0), 10)
	return append(dst, "\n\n"...)
}
