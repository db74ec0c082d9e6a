package handlers

import (
	"net/http"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"changecast/protocol"
	"changecast/store"
)

// PresenceTopic reports whether topic tracks who is on it: the rooms do.
// It is the multiplexer's stream.Config.Presence.
func PresenceTopic(topic string) bool {
	kind, _, ok := store.ParseTopic(topic)
	return ok && kind == store.KindRoom
}

// presencePage is the answer of GET /api/rooms/:room/presence.
type presencePage struct {
	Room  string            `json:"room"`
	Users []protocol.Member `json:"users"`
}

// roomPresence handles GET /api/rooms/:room/presence: who has a stream
// open on a room the principal may read (else 403 or 503, see
// roomParam), by user.
func (s *server) roomPresence(c echo.Context) error {
	room, _, err := s.roomParam(c, principal(c), roomRead)
	if err != nil {
		return err
	}
	users := s.streams.Presence(store.RoomTopic(room))
	if users == nil {
		users = []protocol.Member{}
	}
	return c.JSON(http.StatusOK, presencePage{Room: room, Users: users})
}

// queryUser is the parameter by which a dev-mode stream says who it is.
const queryUser = "user"

// streamUser is who a stream counts as on presence topics: the token's
// subject; in dev mode the `user` query parameter, validated like a
// name (else 400), or anonymous ("") without one. With auth the
// parameter is ignored: the token says who it is.
func streamUser(c echo.Context, p Principal) (string, error) {
	if !p.Dev {
		return p.Subject, nil
	}
	u := c.QueryParam(queryUser)
	switch {
	case u == "":
		return "", nil
	case len(u) > store.MaxNameLen || !utf8.ValidString(u):
		return "", errorf(http.StatusBadRequest, "user must be 1 to %d bytes of UTF-8", store.MaxNameLen)
	case hasControl(u):
		return "", errorf(http.StatusBadRequest, "user has a control character")
	}
	return u, nil
}
