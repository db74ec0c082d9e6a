package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"changecast/protocol"
	"changecast/store"
)

// msgInternal is all a client learns of a 5xx.
const msgInternal = "internal error"

// errorBody is the JSON shape of every error answer: a sentence for
// the client, and detail where it helps.
type errorBody struct {
	Error string `json:"error"`
	// Allowed lists the statuses the caller may move the order to from
	// its current status (a refused status change); empty when none.
	Allowed []string `json:"allowed,omitzero"`
	// Refused lists each topic of an /api/events request that every
	// topic of was refused.
	Refused []protocol.Refused `json:"refused,omitzero"`
}

// apiError is an error answer with detail beyond its message.
type apiError struct {
	status int
	body   errorBody
}

func (e *apiError) Error() string { return e.body.Error }

// storeErrors maps the store's errors to statuses and sentences. The
// handlers check what the store validates before they call it, so a
// store's own text (a wrapped chain) is never shown.
var storeErrors = []struct {
	err    error
	status int
	msg    string
}{
	{store.ErrNotFound, http.StatusNotFound, msgOrderNotFound},
	{store.ErrVersionMismatch, http.StatusPreconditionFailed, msgVersionMismatch},
	{store.ErrConflict, http.StatusConflict, "this status change is not allowed"},
	{store.ErrInvalid, http.StatusBadRequest, "the request has an invalid value"},
	{store.ErrClosed, http.StatusServiceUnavailable, "the service is shutting down; try again"},
}

// msgVersionMismatch answers an If-Match (or a customer's read) that no
// longer names the order's version.
const msgVersionMismatch = "version mismatch: the order has changed; read it again"

// invalidText returns the sentence of a store validation error (see
// store.ValidateOrder): its text without the sentinel's suffix.
func invalidText(err error) string {
	return strings.TrimSuffix(err.Error(), ": "+store.ErrInvalid.Error())
}

// routeErrors are the sentences for Echo's own answers, which say only
// the status text.
var routeErrors = map[int]string{
	http.StatusNotFound:         "no such route",
	http.StatusMethodNotAllowed: "this method is not allowed on this route",
}

// msgOrderNotFound answers both an unknown order and another customer's
// order, so a customer cannot tell them apart.
const msgOrderNotFound = "order not found"

// msgCustomerNotFound answers a customer asking for another customer's
// list topic, as a foreign order is answered: no existence leak.
const msgCustomerNotFound = "customer not found"

// msgOrdersStaffOnly answers a customer asking for the list of every order.
const msgOrdersStaffOnly = "the orders list is for staff only"

// errorf returns the error a handler returns for a client mistake: status
// and a message for the client.
func errorf(status int, format string, args ...any) *echo.HTTPError {
	return echo.NewHTTPError(status, fmt.Sprintf(format, args...))
}

// errOrderNotFound is the answer for an unknown or foreign order.
var errOrderNotFound = echo.NewHTTPError(http.StatusNotFound, msgOrderNotFound)

// classify returns the status and client answer for err, and whether err
// is unexpected (to be logged). A 5xx says only msgInternal unless its
// message was written for the client.
func classify(err error) (status int, body errorBody, unexpected bool) {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.status, ae.body, false
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		if he.Code >= 500 && he.Internal != nil {
			return he.Code, errorBody{Error: msgInternal}, true
		}
		msg, ok := he.Message.(string)
		if !ok || msg == "" || msg == http.StatusText(he.Code) {
			msg = routeErrors[he.Code]
			if msg == "" {
				msg = strings.ToLower(http.StatusText(he.Code))
			}
		}
		return he.Code, errorBody{Error: msg}, false
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return http.StatusRequestEntityTooLarge, errorBody{Error: fmt.Sprintf("request body is larger than %d bytes", tooLarge.Limit)}, false
	}
	for _, m := range storeErrors {
		if errors.Is(err, m.err) {
			return m.status, errorBody{Error: m.msg}, false
		}
	}
	return http.StatusInternalServerError, errorBody{Error: msgInternal}, true
}

// handleError is the Echo HTTPErrorHandler: it answers err as JSON with
// the status classify gives, and logs unexpected errors once. If the
// response has begun (a stream), it writes nothing.
func (s *server) handleError(err error, c echo.Context) {
	req := c.Request()
	if c.Response().Committed {
		if !errors.Is(err, context.Canceled) {
			s.log.Debug("error after the response began",
				"err", err, "method", clip(req.Method, maxLoggedValue), "path", clip(req.URL.Path, maxLoggedPath),
				"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
		}
		return
	}
	status, body, unexpected := classify(err)
	if unexpected && req.Context().Err() != nil {
		// The client has gone; nobody reads the answer, and the failure
		// is the cancellation, not the service.
		status, body, unexpected = http.StatusServiceUnavailable, errorBody{Error: "request cancelled"}, false
	}
	if unexpected {
		s.log.Error("request failed",
			"err", err, "method", clip(req.Method, maxLoggedValue), "path", clip(req.URL.Path, maxLoggedPath),
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
	}
	// HEAD too: it gets GET's headers, and net/http drops the body.
	if err := writeJSON(c, status, body); err != nil {
		s.log.Debug("writing error answer", "err", err)
	}
}

// writeJSON answers v as JSON with status. Unlike Echo's encoder it
// leaves <, > and & as they are: messages name forms like orders/<id>,
// and the answer is JSON (with nosniff), never HTML.
func writeJSON(c echo.Context, status int, v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	return c.Blob(status, echo.MIMEApplicationJSON, b.Bytes())
}
