package handlers

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"changecast/store"
)

// msgInternal is all a client learns of a 5xx.
const msgInternal = "internal error"

// errorBody is the JSON shape of every error answer.
type errorBody struct {
	Error string `json:"error"`
}

// storeErrors maps the store's errors to statuses. An empty message means
// the error's own text is shown: the store's validation and transition
// errors name the field or the transition and carry nothing internal.
var storeErrors = []struct {
	err    error
	status int
	msg    string
}{
	{store.ErrNotFound, http.StatusNotFound, msgOrderNotFound},
	{store.ErrVersionMismatch, http.StatusPreconditionFailed, "version mismatch"},
	{store.ErrConflict, http.StatusConflict, ""},
	{store.ErrInvalid, http.StatusBadRequest, ""},
	{store.ErrClosed, http.StatusServiceUnavailable, "service unavailable"},
}

// msgOrderNotFound answers both an unknown order and another customer's
// order, so a customer cannot tell them apart.
const msgOrderNotFound = "order not found"

// errorf returns the error a handler returns for a client mistake: status
// and a message for the client.
func errorf(status int, format string, args ...any) *echo.HTTPError {
	return echo.NewHTTPError(status, fmt.Sprintf(format, args...))
}

// errOrderNotFound is the answer for an unknown or foreign order.
var errOrderNotFound = echo.NewHTTPError(http.StatusNotFound, msgOrderNotFound)

// classify returns the status and client message for err, and whether err
// is unexpected (to be logged).
func classify(err error) (status int, msg string, unexpected bool) {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		msg, ok := he.Message.(string)
		if !ok || msg == "" {
			msg = http.StatusText(he.Code)
		}
		if he.Code >= 500 && he.Internal != nil {
			return he.Code, msgInternal, true
		}
		return he.Code, msg, false
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooLarge.Limit), false
	}
	for _, m := range storeErrors {
		if errors.Is(err, m.err) {
			if m.msg == "" {
				return m.status, err.Error(), false
			}
			return m.status, m.msg, false
		}
	}
	return http.StatusInternalServerError, msgInternal, true
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
	status, msg, unexpected := classify(err)
	if unexpected && req.Context().Err() != nil {
		// The client has gone; nobody reads the answer, and the failure
		// is the cancellation, not the service.
		status, msg, unexpected = http.StatusServiceUnavailable, "request cancelled", false
	}
	if unexpected {
		s.log.Error("request failed",
			"err", err, "method", clip(req.Method, maxLoggedValue), "path", clip(req.URL.Path, maxLoggedPath),
			"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
	}
	// HEAD too: it gets GET's headers, and net/http drops the body.
	if err := c.JSON(status, errorBody{Error: msg}); err != nil {
		s.log.Debug("writing error answer", "err", err)
	}
}
