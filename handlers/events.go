package handlers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"changecast/protocol"
	"changecast/store"
	"changecast/stream"
)

// Resume-point sources: browsers send the header on a reconnect; a first
// EventSource connection can only use the query parameter.
const (
	headerLastEventID = "Last-Event-ID"
	queryLastEventID  = "lastEventId"
)

// orderEvents handles GET /api/orders/:id/events: the stream of one order
// the principal may see (else 404).
func (s *server) orderEvents(c echo.Context) error {
	p := principal(c)
	o, err := s.loadOrder(c, p, c.Param("id"))
	if err != nil {
		return err
	}
	return s.serveStream(c, p, []string{store.OrderTopic(o.ID)}, nil, nil)
}

// roomEvents handles GET /api/rooms/:room/events: the stream of one room
// the principal may read (else 403 or 503, see roomParam). A room the
// app's backend granted is asked about again while the stream runs.
func (s *server) roomEvents(c echo.Context) error {
	p := principal(c)
	room, g, err := s.roomParam(c, p, roomRead)
	if err != nil {
		return err
	}
	topic := store.RoomTopic(room)
	var asked []string
	if g == grantBackend {
		asked = []string{topic}
	}
	return s.serveStream(c, p, []string{topic}, nil, asked)
}

// events handles GET /api/events?topic=...&topic=...: one stream for
// several topics, each orders/<id>, rooms/<room>, orders (the list of
// every order) or customers/<sub> (the list of one customer's orders).
// Repeated topics count once. No topic, or more than
// Limits.TopicsPerRequest, is a 400 for the whole request. Then each
// topic is checked on its own: a malformed one (400), an unknown or
// foreign order (the same answer, 404), a room not granted (403, or 503
// when the app's backend could not be asked), the orders list for a
// customer (403) or another customer's list (404) is refused. The rooms
// the token does not list are asked of the backend at once (see
// roomsAccess), and those it granted are asked about again while the
// stream runs. The stream carries the other topics and starts, on every
// connection, with one `refused` event per refused topic. When every
// topic is refused the answer is an error: see allRefused.
func (s *server) events(c echo.Context) error {
	p := principal(c)
	raw := c.QueryParams()["topic"]
	if len(raw) == 0 {
		return errorf(http.StatusBadRequest, "at least one topic is required: topic=orders/<id>, rooms/<room>, orders or customers/<sub>")
	}
	seen := make(map[string]bool, len(raw))
	topics := make([]string, 0, len(raw))
	for _, t := range raw {
		if !seen[t] {
			seen[t] = true
			topics = append(topics, t)
		}
	}
	if len(topics) > s.limits.TopicsPerRequest {
		return errorf(http.StatusBadRequest, "a stream carries at most %d topics", s.limits.TopicsPerRequest)
	}
	// The rooms first, asked of the app's backend all at once.
	var rooms []string
	for _, t := range topics {
		if kind, key, ok := store.ParseTopic(t); ok && kind == store.KindRoom {
			rooms = append(rooms, key)
		}
	}
	grants := s.roomsAccess(c.Request().Context(), p, rooms, roomRead)
	allowed := make([]string, 0, len(topics))
	var refused []protocol.Refused
	var asked []string // rooms the app's backend granted
	for _, t := range topics {
		kind, key, ok := store.ParseTopic(t)
		if !ok {
			refused = append(refused, protocol.Refused{Topic: t, Status: http.StatusBadRequest,
				Error: fmt.Sprintf("topic %s is not orders/<id>, rooms/<room>, orders or customers/<sub>", strconv.QuoteToASCII(clip(t, 100)))})
			continue
		}
		switch kind {
		case store.KindOrder:
			if _, err := s.loadOrder(c, p, key); err != nil {
				if err != errOrderNotFound && !errors.Is(err, store.ErrNotFound) {
					return err // the store failed: not the topic's fault
				}
				refused = append(refused, protocol.Refused{Topic: t, Status: http.StatusNotFound, Error: msgOrderNotFound})
				continue
			}
		case store.KindRoom:
			g := grants[0] // rooms' order is topics'
			grants = grants[1:]
			if !g.ok() {
				status, msg := g.refusal(key)
				refused = append(refused, protocol.Refused{Topic: t, Status: status, Error: msg})
				continue
			}
			if g == grantBackend {
				asked = append(asked, t)
			}
		case store.KindOrderList:
			if !p.IsStaff() {
				refused = append(refused, protocol.Refused{Topic: t, Status: http.StatusForbidden, Error: msgOrdersStaffOnly})
				continue
			}
		case store.KindCustomer:
			if !p.CanOrder(key) {
				refused = append(refused, protocol.Refused{Topic: t, Status: http.StatusNotFound, Error: msgCustomerNotFound})
				continue
			}
		}
		allowed = append(allowed, t)
	}
	if len(allowed) == 0 {
		err := allRefused(refused)
		if err.status == http.StatusServiceUnavailable {
			retryAfter(c.Response().Header())
		}
		return err
	}
	notices := make([]stream.Event, 0, len(refused))
	for _, r := range refused {
		notices = append(notices, refusedEvent(r))
	}
	return s.serveStream(c, p, allowed, notices, asked)
}

// refusedEvent is the `refused` event of r, its data encoded as the error
// answers are: <, > and & as they are (orders/<id>).
func refusedEvent(r protocol.Refused) stream.Event {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(r) // strings and an int: it always encodes
	data := bytes.TrimSuffix(b.Bytes(), []byte("\n"))
	return stream.Event{Topic: r.Topic, Name: protocol.EventRefused, Data: data}
}

// allRefused is the answer when every topic of /api/events is refused:
// 503 if the app's backend could not be asked about a room (a retry may
// stream it: the caller adds Retry-After), else 400 if every topic is
// malformed, else 404 if any topic is 404 (so a customer learns no more
// than from the single-topic routes), else 403 (malformed topics beside
// refused ones do not make it a 400); the message is the topic's own
// when there is one topic, and every refusal is listed.
func allRefused(refused []protocol.Refused) *apiError {
	status := http.StatusBadRequest
	for _, r := range refused {
		switch {
		case r.Status == http.StatusServiceUnavailable || status == http.StatusServiceUnavailable:
			status = http.StatusServiceUnavailable
		case r.Status == http.StatusNotFound:
			status = http.StatusNotFound
		case r.Status == http.StatusForbidden && status == http.StatusBadRequest:
			status = http.StatusForbidden
		}
	}
	msg := "none of these topics may be streamed"
	if len(refused) == 1 {
		msg = refused[0].Error
	}
	return &apiError{status: status, body: errorBody{Error: msg, Refused: refused}}
}

// serveStream hands the response to the multiplexer for topics, which the
// caller has validated and authorized, within the principal's bound on
// open streams.
// Notices are sent first on every connection. The topics of asked, rooms
// the app's backend granted, are asked about again while the stream
// runs, and withdrawn when no longer granted.
func (s *server) serveStream(c echo.Context, p Principal, topics []string, notices []stream.Event, asked []string) error {
	user, err := streamUser(c, p)
	if err != nil {
		return err
	}
	release, err := s.openStream(c, p)
	if err != nil {
		return err
	}
	if c.Request().Method == http.MethodHead {
		// HEAD: what GET would answer, without opening the stream.
		release()
		protocol.SetStreamHeaders(c.Response().Header())
		return c.NoContent(http.StatusOK)
	}

	r := c.Request()
	recheck, every := s.recheckRooms(p, asked)
	opts := stream.StreamOptions{
		Topics:        topics,
		LastEventID:   lastEventID(c),
		Notices:       notices,
		User:          user,
		Expires:       p.Expires,
		Recheck:       recheck,
		RecheckEvery:  every,
		RecheckTopics: asked,
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
