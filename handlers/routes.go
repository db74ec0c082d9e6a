package handlers

import (
	"io/fs"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// routes registers every route of the service. Routes under /api
// authenticate each request (in dev mode everyone is the dev principal);
// the others are public.
func (s *server) routes(e *echo.Echo, static fs.FS, metrics http.Handler) {
	auth := s.authenticate
	// Every GET route answers HEAD too, as load balancers and `curl -I`
	// expect: like GET, and net/http sends no body. A stream route answers
	// HEAD with a stream's headers and opens no stream.
	getHead := []string{http.MethodGet, http.MethodHead}

	e.POST("/api/orders", s.createOrder, auth)
	e.Match(getHead, "/api/orders", s.listOrders, auth)
	e.Match(getHead, "/api/orders/:id", s.getOrder, auth)
	e.PATCH("/api/orders/:id", s.patchOrder, auth)
	e.Match(getHead, "/api/orders/:id/events", s.orderEvents, auth)

	e.POST("/api/rooms/:room/messages", s.postMessage, auth)
	e.Match(getHead, "/api/rooms/:room/messages", s.listMessages, auth)
	e.Match(getHead, "/api/rooms/:room/events", s.roomEvents, auth)
	e.Match(getHead, "/api/rooms/:room/presence", s.roomPresence, auth)

	e.Match(getHead, "/api/events", s.events, auth)

	// Staff only, checked by the handler: to anyone else the route does
	// not exist. GET only: its answer is the copy itself.
	e.GET("/api/backup", s.backup)

	e.Match(getHead, "/healthz", s.healthz)
	e.Match(getHead, "/readyz", s.readyz)
	if metrics != nil {
		e.Match(getHead, "/metrics", s.metricsHandler(metrics))
	}
	if static != nil {
		files := echo.WrapHandler(http.FileServerFS(static))
		e.Match(getHead, "/*", func(c echo.Context) error {
			if strings.HasPrefix(c.Request().URL.Path, "/api/") {
				return echo.ErrNotFound // a JSON 404, not a file server's page
			}
			return files(c)
		})
	}
}
