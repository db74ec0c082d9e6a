package handlers

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"changecast/store"
	"changecast/stream"
)

// Resume-point sources: browsers send the header on a reconnect; a first
// EventSource connection can only use the query parameter.
const (
	headerLastEventID = "Last-Event-ID"
	queryLastEventID  = "lastEventId"
)

// streamHeaders are the headers stream.Multiplexer.Serve answers a
// stream with, sent alone to a HEAD request (TestHeadAnswersLikeGet
// checks they match a real stream's).
var streamHeaders = map[string]string{
	echo.HeaderContentType: "text/event-stream",
	"Cache-Control":        "no-cache",
	"X-Accel-Buffering":    "no",
}

// orderEvents handles GET /api/orders/:id/events: the stream of one order
// the principal may see (else 404).
func (s *server) orderEvents(c echo.Context) error {
	p := principal(c)
	o, err := s.loadOrder(c, p, c.Param("id"))
	if err != nil {
		return err
	}
	return s.serveStream(c, p, []string{store.OrderTopic(o.ID)})
}

// roomEvents handles GET /api/rooms/:room/events: the stream of one room
// the principal may use (else 403).
func (s *server) roomEvents(c echo.Context) error {
	p := principal(c)
	room, err := roomParam(c, p)
	if err != nil {
		return err
	}
	return s.serveStream(c, p, []string{store.RoomTopic(room)})
}

// events handles GET /api/events?topic=...&topic=...: one stream for
// several topics, each orders/<id> or rooms/<room>. Repeated topics count
// once. No topic, a malformed one, or more than Limits.TopicsPerRequest is
// a 400; then each topic is authorized in the order given: an unknown or
// foreign order is a 404 (naming no topic), a room not granted a 403.
func (s *server) events(c echo.Context) error {
	p := principal(c)
	raw := c.QueryParams()["topic"]
	if len(raw) == 0 {
		return errorf(http.StatusBadRequest, "at least one topic parameter is required")
	}
	seen := make(map[string]bool, len(raw))
	topics := make([]string, 0, len(raw))
	for _, t := range raw {
		if _, _, ok := store.ParseTopic(t); !ok {
			return errorf(http.StatusBadRequest, "topic %s is not orders/<id> or rooms/<room>", strconv.QuoteToASCII(clip(t, 100)))
		}
		if !seen[t] {
			seen[t] = true
			topics = append(topics, t)
		}
	}
	if len(topics) > s.limits.TopicsPerRequest {
		return errorf(http.StatusBadRequest, "at most %d topics per stream", s.limits.TopicsPerRequest)
	}
	for _, t := range topics {
		kind, key, _ := store.ParseTopic(t)
		switch kind {
		case store.KindOrder:
			if _, err := s.loadOrder(c, p, key); err != nil {
				return err
			}
		case store.KindRoom:
			if !p.CanRoom(key) {
				return errorf(http.StatusForbidden, "room %s is not granted to this token", key)
			}
		}
	}
	return s.serveStream(c, p, topics)
}

// serveStream hands the response to the multiplexer for topics, which the
// caller has validated and authorized, within the principal's bound on
// open streams.
func (s *server) serveStream(c echo.Context, p Principal, topics []string) error {
	release, err := s.openStream(c, p)
	if err != nil {
		return err
	}
	if c.Request().Method == http.MethodHead {
		// HEAD: what GET would answer, without opening the stream.
		release()
		h := c.Response().Header()
		for k, v := range streamHeaders {
			h.Set(k, v)
		}
		return c.NoContent(http.StatusOK)
	}

	r := c.Request()
	opts := stream.StreamOptions{
		Topics:      topics,
		LastEventID: lastEventID(c),
		Expires:     p.Expires,
		// The stream may outlive this call: it gives its slot back
		// when it ends.
		Done: release,
	}
	err = s.streams.Serve(c.Response(), r, opts)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, stream.ErrNoTopics), errors.Is(err, stream.ErrNotStarted):
		// Nothing was written: answer with an error status.
		if r.Context().Err() != nil {
			return nil
		}
		return err
	}
	// The stream ran and ended on an error (the Source failed): the
	// response has ended, there is nothing left to answer.
	s.log.Debug("stream ended", "err", err, "topics", len(topics),
		"request_id", c.Response().Header().Get(echo.HeaderXRequestID))
	return nil
}

// lastEventID is the resume point: the Last-Event-ID header, else the
// lastEventId query parameter.
func lastEventID(c echo.Context) string {
	if id := c.Request().Header.Get(headerLastEventID); id != "" {
		return id
	}
	return c.QueryParam(queryLastEventID)
}

// clip shortens s to at most n bytes for an error message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
