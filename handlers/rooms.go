package handlers

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"changecast/store"
)

// postMessageRequest is the body of POST /api/rooms/:room/messages.
type postMessageRequest struct {
	Text string `json:"text"`
	// Author is honoured only in dev mode; with auth the author is the
	// token's subject, and a different author is a 400.
	Author string `json:"author"`
}

// messagesPage is the answer of GET /api/rooms/:room/messages.
type messagesPage struct {
	Messages []store.Message `json:"messages"`
}

// defaultListLimit is the page size when the client names none; it
// matches what a snapshot holds.
const defaultListLimit = store.SnapshotMessages

// postMessage handles POST /api/rooms/:room/messages: 201 with the message.
func (s *server) postMessage(c echo.Context) error {
	p := principal(c)
	room, _, err := s.roomParam(c, p, roomPost)
	if err != nil {
		return err
	}
	if err := s.allowWrite(c, p); err != nil {
		return err
	}
	var req postMessageRequest
	if err := decodeJSON(c, &req); err != nil {
		return err
	}
	if err := refuseControl("author", req.Author); err != nil {
		return err
	}
	author := p.Subject
	switch {
	case p.Dev && req.Author != "":
		author = req.Author
	case !p.Dev && req.Author != "" && req.Author != p.Subject:
		return errorf(http.StatusBadRequest, "author must be the token's subject (or left out)")
	}
	if err := store.ValidateMessage(room, author, req.Text); err != nil {
		return errorf(http.StatusBadRequest, "%s", invalidText(err))
	}
	m, err := s.store.PostMessage(c.Request().Context(), room, author, req.Text)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, m)
}

// listMessages handles GET /api/rooms/:room/messages?limit=&before=: up
// to limit (1 to store.MaxListLimit, default 50) messages just before
// message id before (default: the newest), oldest first.
func (s *server) listMessages(c echo.Context) error {
	room, _, err := s.roomParam(c, principal(c), roomRead)
	if err != nil {
		return err
	}
	limit := defaultListLimit
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxListLimit {
			return errorf(http.StatusBadRequest, "limit must be an integer from 1 to %d", store.MaxListLimit)
		}
		limit = n
	}
	before := c.QueryParam("before")
	if before != "" && !store.ValidOrderID(before) {
		// Message ids have the same shape as order ids.
		return errorf(http.StatusBadRequest, "before must be a message id")
	}
	msgs, err := s.store.ListMessages(c.Request().Context(), room, before, limit)
	if err != nil {
		return err
	}
	if msgs == nil {
		msgs = []store.Message{}
	}
	return c.JSON(http.StatusOK, messagesPage{Messages: msgs})
}

// roomParam returns the :room path parameter if it is a valid room name
// (else 400) that p may use for action (else 403, or 503 with
// Retry-After when the app's backend could not be asked), and how p may.
func (s *server) roomParam(c echo.Context, p Principal, action roomAction) (string, roomGrant, error) {
	room := c.Param("room")
	if !store.ValidRoom(room) {
		return "", grantRefused, errorf(http.StatusBadRequest, "%s", msgBadRoom)
	}
	g := s.roomAccess(c.Request().Context(), p, room, action)
	if !g.ok() {
		status, msg := g.refusal(room)
		if status == http.StatusServiceUnavailable {
			retryAfter(c.Response().Header())
		}
		return "", g, errorf(status, "%s", msg)
	}
	return room, g, nil
}

// msgRoomNotGranted says that the token does not grant room.
func msgRoomNotGranted(room string) string {
	return "room " + room + " is not granted to this token"
}

// msgBadRoom says what a room name is (the pattern of store.ValidRoom).
const msgBadRoom = "a room name is 1 to 64 characters of a-z, 0-9, _ and -, and starts with a-z or 0-9"
