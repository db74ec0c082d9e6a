package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// MaxBodyBytes is the largest request body the API reads (64 KiB): a
// full order of store.MaxItems lines or a message of store.MaxTextLen
// four-byte characters fits with room to spare.
const MaxBodyBytes = 64 << 10

// decodeJSON reads the request body as exactly one JSON value into v. It
// answers 415 unless the body is declared application/json (a charset
// parameter must be UTF-8), 413 past MaxBodyBytes, and 400 for anything
// else wrong: bad syntax, a field of the wrong type, an unknown field (a
// field name is matched exactly, case included), a key given twice,
// data after the value, or no body; 408 when the body stops arriving past
// the connection's read deadline.
func decodeJSON(c echo.Context, v any) error {
	r := c.Request()
	if err := checkJSONType(r.Header.Get(echo.HeaderContentType)); err != nil {
		return err
	}
	if r.ContentLength > MaxBodyBytes {
		return &http.MaxBytesError{Limit: MaxBodyBytes}
	}
	raw, err := io.ReadAll(http.MaxBytesReader(c.Response().Writer, r.Body, MaxBodyBytes))
	if err != nil {
		if isTooLarge(err) {
			return err
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The server's bound on how long a body may take to arrive.
			return errorf(http.StatusRequestTimeout, "the request body did not arrive in time")
		}
		return errorf(http.StatusBadRequest, "could not read the request body")
	}
	// The JSON decoder would quietly turn invalid UTF-8 into U+FFFD.
	if !utf8.Valid(raw) {
		return errorf(http.StatusBadRequest, "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	switch _, err := dec.Token(); {
	case err == io.EOF:
		// The decoder would also quietly turn a lone surrogate into U+FFFD.
		if at := loneSurrogate(raw); at >= 0 {
			return errorf(http.StatusBadRequest, "request body has a lone UTF-16 surrogate escape (at byte %d)", at)
		}
		// And match field names whatever their case, and keep the last
		// of a key given twice.
		return strictKeys(raw, reflect.TypeOf(v))
	case isTooLarge(err):
		return err
	default:
		return errorf(http.StatusBadRequest, "request body has data after the JSON value")
	}
}

// loneSurrogate returns the offset in raw, a body that decoded as JSON,
// of the first \u escape of a UTF-16 surrogate that is not half of a
// high-low pair, or -1 if there is none. In valid JSON a backslash
// appears only inside strings and starts an escape, so walking escape by
// escape finds every \u escape and never mistakes an escaped backslash
// followed by "u" for one.
func loneSurrogate(raw []byte) int {
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			continue
		}
		r, ok := uEscape(raw, i)
		switch {
		case !ok:
			i++ // a one-character escape: skip the character escaped
		case utf16.IsSurrogate(r):
			lo, ok := uEscape(raw, i+6)
			if r >= 0xdc00 || !ok || lo < 0xdc00 || lo > 0xdfff {
				return i
			}
			i += 11 // the pair, less the loop's own step
		default:
			i += 5
		}
	}
	return -1
}

// uEscape returns the code unit of the \uXXXX escape at raw[i:], if there
// is one.
func uEscape(raw []byte, i int) (rune, bool) {
	if i+6 > len(raw) || raw[i] != '\\' || raw[i+1] != 'u' {
		return 0, false
	}
	n, err := strconv.ParseUint(string(raw[i+2:i+6]), 16, 16)
	if err != nil {
		return 0, false
	}
	return rune(n), true
}

// refuseControl answers 400 if name, the value of the name field (a
// customer, author or SKU), has a control character: C0, DEL or C1
// (U+0080-U+009F). Such a character is invisible or moves the cursor
// wherever a name is shown, and no real name holds one.
func refuseControl(field, name string) error {
	if hasControl(name) {
		return errorf(http.StatusBadRequest, "%s has a control character", field)
	}
	return nil
}

// hasControl reports whether s has a C0, DEL or C1 control character.
func hasControl(s string) bool { return strings.IndexFunc(s, unicode.IsControl) >= 0 }

// checkJSONType answers 415 unless contentType is application/json with
// at most a UTF-8 charset.
func checkJSONType(contentType string) error {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != echo.MIMEApplicationJSON {
		return errorf(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return errorf(http.StatusUnsupportedMediaType, "the body must be UTF-8 JSON")
	}
	return nil
}

func isTooLarge(err error) bool {
	var tooLarge *http.MaxBytesError
	return errors.As(err, &tooLarge)
}

// bodyError turns a decoding error into a client answer.
func bodyError(err error) error {
	var (
		syntax    *json.SyntaxError
		fieldType *json.UnmarshalTypeError
	)
	switch {
	case isTooLarge(err):
		return err
	case errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, "request body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, "request body is not complete JSON")
	case errors.As(err, &syntax):
		return errorf(http.StatusBadRequest, "request body is not valid JSON (at byte %d)", syntax.Offset)
	case errors.As(err, &fieldType):
		if fieldType.Field == "" {
			return errorf(http.StatusBadRequest, "request body must be a JSON %s", kindName(fieldType.Type.Kind().String()))
		}
		return errorf(http.StatusBadRequest, "field %q must be a JSON %s", fieldType.Field, kindName(fieldType.Type.Kind().String()))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return errorf(http.StatusBadRequest, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	// A read error: the client broke the body off.
	return errorf(http.StatusBadRequest, "cannot read request body")
}

// kindName names a Go kind as JSON calls it.
func kindName(kind string) string {
	switch kind {
	case "struct", "map":
		return "object"
	case "slice", "array":
		return "array"
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "integer"
	case "float32", "float64":
		return "number"
	}
	return fmt.Sprint("value of kind ", kind)
}
