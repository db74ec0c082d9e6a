package handlers

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// metricsRealm is the realm a refused scrape is told to authenticate in.
const metricsRealm = `Bearer realm="metrics"`

// metricsHandler guards GET and HEAD /metrics. In dev mode it is open;
// otherwise it answers 404 (as if there were no such page) unless
// Config.MetricsToken is set, and then 401 unless the request carries
// Authorization: Bearer <MetricsToken>.
func (s *server) metricsHandler(metrics http.Handler) echo.HandlerFunc {
	serve := echo.WrapHandler(metrics)
	// Hashing both sides first makes the comparison take the same time
	// whatever the length of the token presented.
	want := sha256.Sum256([]byte(s.metricsToken))
	return func(c echo.Context) error {
		if s.dev {
			return serve(c)
		}
		if s.metricsToken == "" {
			return echo.ErrNotFound
		}
		scheme, tok, _ := strings.Cut(c.Request().Header.Get(echo.HeaderAuthorization), " ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			c.Response().Header().Set(echo.HeaderWWWAuthenticate, metricsRealm)
			return errorf(http.StatusUnauthorized, "/metrics needs Authorization: Bearer <METRICS_TOKEN>")
		}
		return serve(c)
	}
}
