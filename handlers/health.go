package handlers

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
)

// readyTimeout bounds the store ping of /readyz: a platform's readiness
// probe gives up after a few seconds, and a slower store is not ready.
const readyTimeout = 2 * time.Second

// readiness is the answer of /readyz; Error is set when not ready.
type readiness struct {
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	Store  string `json:"store"`
	Feed   string `json:"feed"`
}

// healthz handles GET /healthz: the process is alive.
func (s *server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz handles GET /readyz: 200 when the store answers a ping and the
// change feed runs, else 503 saying which is down.
func (s *server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), readyTimeout)
	defer cancel()
	body := readiness{Store: "ok", Feed: "ok"}
	if err := s.store.Ping(ctx); err != nil {
		s.log.Warn("readiness: store ping failed", "err", err)
		body.Store = "down"
	}
	if !s.streams.Ready() {
		body.Feed = "down"
	}
	switch {
	case body.Store == "ok" && body.Feed == "ok":
		body.Status = "ready"
		return c.JSON(http.StatusOK, body)
	case body.Store != "ok" && body.Feed != "ok":
		body.Error = "not ready: store and change feed are down"
	case body.Store != "ok":
		body.Error = "not ready: store is down"
	default:
		body.Error = "not ready: change feed is down"
	}
	return c.JSON(http.StatusServiceUnavailable, body)
}
