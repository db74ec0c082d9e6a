package handlers

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"changecast/protocol"
	"changecast/store"
	"changecast/stream"
)

// Store is what the routes need of a store: the reads and writes of
// store.Backend, without its change log, which only the stream reads.
// It must be safe for concurrent use.
type Store interface {
	// Ping reports whether the database is reachable.
	Ping(ctx context.Context) error
	// CreateOrder stores a new order with status placed and version 1.
	CreateOrder(ctx context.Context, customer string, items []store.Item) (store.Order, error)
	// GetOrder returns an order, or an error wrapping store.ErrNotFound.
	GetOrder(ctx context.Context, id string) (store.Order, error)
	// UpdateOrderStatus moves an order to status; ifVersion 0 means any version.
	UpdateOrderStatus(ctx context.Context, id, status string, ifVersion int64) (store.Order, error)
	// PostMessage stores a message in room.
	PostMessage(ctx context.Context, room, author, text string) (store.Message, error)
	// ListMessages returns up to limit messages of room just before message
	// id before ("" = newest), oldest first.
	ListMessages(ctx context.Context, room, before string, limit int) ([]store.Message, error)
	// ListOrders returns a page of orders selected by q, newest first;
	// a bad query is an error wrapping store.ErrInvalid.
	ListOrders(ctx context.Context, q store.OrderQuery) ([]store.Order, error)
}

// Streamer serves Server-Sent Events streams; *stream.Multiplexer
// implements it. It must be safe for concurrent use.
type Streamer interface {
	// Serve writes a whole SSE response for opts.Topics. It returns when
	// the stream ends or, if it took the connection over from net/http
	// (HTTP/1.x), as soon as the stream is live, whichever comes first;
	// in every case opts.Done is called once, when the stream has ended.
	Serve(w http.ResponseWriter, r *http.Request, opts stream.StreamOptions) error
	// Ready reports whether the upstream change feed is running.
	Ready() bool
	// Presence returns who has a stream open on topic, by user.
	Presence(topic string) []protocol.Member
}

// Config is what New needs. Store and Streams are required; Secret is
// required unless Dev is set.
type Config struct {
	// Store keeps orders and messages. If it also has a method
	// Backup(ctx, w io.Writer) (int64, error), as the embedded store
	// does, GET /api/backup streams its copies to staff.
	Store Store
	// Streams serves the SSE routes.
	Streams Streamer
	// Logger receives one line per request and every unexpected error;
	// nil discards them.
	Logger *slog.Logger
	// Dev turns authentication off: every request is made by
	// Principal{Subject: "dev", Role: RoleStaff, Rooms: ["*"], Dev: true},
	// and the per-subject bounds of Limits do not apply.
	Dev bool
	// Secret is the HS256 key tokens are signed with; required unless Dev
	// or IdP is on.
	Secret []byte
	// SecretPrevious, when set, is an older HS256 key still accepted
	// during a rotation of Secret.
	SecretPrevious []byte
	// IdP, when on, is an identity provider whose tokens are accepted too.
	IdP IdP
	// RoomAuth, when on, is the app's backend, asked about the rooms a
	// token does not list (not in dev mode, where every room is open).
	RoomAuth RoomAuth
	// Ctx ends the background work of New (the IdP's key refreshes, the
	// questions to RoomAuth); nil is context.Background.
	Ctx context.Context
	// Static is served at GET / (its index.html) and below; nil serves nothing.
	Static fs.FS
	// CORSOrigins are the origins allowed to make credentialed
	// cross-origin requests, each exactly as a browser sends it in the
	// Origin header (scheme://host[:port]). Empty allows none.
	CORSOrigins []string
	// Limits bound what one subject may use; zero fields take defaults.
	Limits Limits
	// Metrics, when not nil, is served at GET and HEAD /metrics: to
	// everyone in dev mode; otherwise only to requests with
	// Authorization: Bearer <MetricsToken>, and to nobody (404) when
	// MetricsToken is empty.
	Metrics http.Handler
	// MetricsToken is the bearer token a scraper of /metrics must show
	// outside dev mode; empty turns /metrics off there.
	MetricsToken string
	// Now returns the current time (token expiry, write rates); nil means
	// time.Now.
	Now func() time.Time
	// TrustedProxies are the peers whose Forwarded or X-Forwarded-For
	// header names the client (the request log's client address); any
	// other peer is the client itself. Empty trusts none.
	TrustedProxies []netip.Prefix
}

// server holds what the route handlers share. Its methods are safe for
// concurrent use.
type server struct {
	store   Store
	streams Streamer
	log     *slog.Logger
	dev     bool
	auth    *authenticator
	rooms   *roomAsker // nil: a token's rooms are all it may use
	now     func() time.Time
	limits  Limits
	open    *subjectCounter
	writes  *writeLimiter
	backups chan struct{} // one slot: the backup running, if any

	metricsToken string
}

// New returns the Echo instance serving every route of changecast's HTTP
// API. It starts nothing; the caller serves it (e.g. as an
// http.Server's Handler) and stops the Streamer before shutting the server
// down, so that open streams end. New returns an error if a required field
// of cfg is missing or a CORS origin is malformed.
func New(cfg Config) (*echo.Echo, error) {
	if cfg.Store == nil {
		return nil, errors.New("handlers: Config.Store is required")
	}
	if cfg.Streams == nil {
		return nil, errors.New("handlers: Config.Streams is required")
	}
	if !cfg.Dev && len(cfg.Secret) == 0 && !cfg.IdP.On() {
		return nil, errors.New("handlers: a token secret is required unless in dev mode")
	}
	limits, err := cfg.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	cors, err := corsMiddleware(cfg.CORSOrigins)
	if err != nil {
		return nil, err
	}
	s := &server{
		store:   cfg.Store,
		streams: cfg.Streams,
		log:     cfg.Logger,
		dev:     cfg.Dev,
		now:     cfg.Now,
		limits:  limits,

		metricsToken: cfg.MetricsToken,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	ctx := cfg.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if !cfg.Dev {
		s.auth = newAuthenticator(cfg.Secret, s.now)
		s.auth.previous = cfg.SecretPrevious
		if cfg.IdP.On() {
			s.auth.withIdP(ctx, cfg.IdP, s.now)
		}
		if cfg.RoomAuth.On() {
			s.rooms = newRoomAsker(ctx, cfg.RoomAuth, s.now, s.log)
		}
	}
	s.open = newSubjectCounter(limits.StreamsPerSubject)
	s.writes = newWriteLimiter(limits.WritesPerSecond, limits.WriteBurst)
	s.backups = make(chan struct{}, 1)

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	e.IPExtractor = clientIP(cfg.TrustedProxies)
	// Nothing here buffers, compresses or times out a response: the stream
	// routes need their writes to reach the client at once (FACTS.md).
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{
		RequestIDHandler: func(c echo.Context, id string) {
			if len(id) > maxRequestIDLen {
				c.Response().Header().Set(echo.HeaderXRequestID, id[:maxRequestIDLen])
			}
		},
	}))
	e.Use(s.logRequests)
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{
		LogErrorFunc: s.logPanic,
	}))
	e.Use(securityHeaders)
	e.Use(limitQueryParams)
	if cors != nil {
		e.Use(cors)
	}
	s.routes(e, cfg.Static, cfg.Metrics)
	return e, nil
}

// maxRequestIDLen bounds an incoming X-Request-ID echoed and logged: ids
// from routers are far shorter, and a client cannot fill the logs with one.
const maxRequestIDLen = 128

// maxQueryParams is the most query parameters a request may carry. It is
// net/url's own bound (GODEBUG urlmaxqueryparams, default 10000), counted
// the way net/url counts: past it url.ParseQuery returns no parameter at
// all, and a handler would answer as if none had been sent. The API
// needs a few dozen at most.
const maxQueryParams = 10000

// limitQueryParams answers 400 to a request with more than
// maxQueryParams query parameters, saying so.
func limitQueryParams(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if strings.Count(c.Request().URL.RawQuery, "&")+1 > maxQueryParams {
			return errorf(http.StatusBadRequest, "too many query parameters (at most %d)", maxQueryParams)
		}
		return next(c)
	}
}

// securityHeaders keeps browsers from guessing content types.
func securityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderXContentTypeOptions, "nosniff")
		return next(c)
	}
}

// logPanic logs a recovered panic with its stack once and returns the
// error the client sees: a plain 500.
func (s *server) logPanic(c echo.Context, err error, stack []byte) error {
	s.log.Error("panic serving request",
		"err", err,
		"method", clip(c.Request().Method, maxLoggedValue),
		"path", clip(c.Request().URL.Path, maxLoggedPath),
		"request_id", c.Response().Header().Get(echo.HeaderXRequestID),
		"stack", string(stack))
	return echo.NewHTTPError(http.StatusInternalServerError, msgInternal)
}

// String makes a Config safe to print: it never shows the secret.
func (c Config) String() string {
	return fmt.Sprintf("handlers.Config{Dev:%t Secret:%d bytes MetricsToken:%d bytes RoomAuth:%t CORSOrigins:%q Limits:%+v}",
		c.Dev, len(c.Secret), len(c.MetricsToken), c.RoomAuth.On(), c.CORSOrigins, c.Limits)
}

// corsMiddleware allows credentialed cross-origin requests from exactly
// the listed origins: the request's Origin is echoed (never "*"), with
// Access-Control-Allow-Credentials and Vary: Origin. It returns nil for no
// origins (same-origin use only), and an error for an origin that is not
// scheme://host[:port].
func corsMiddleware(origins []string) (echo.MiddlewareFunc, error) {
	if len(origins) == 0 {
		return nil, nil
	}
	allowed := make(map[string]bool, len(origins))
	for _, o := range origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || strings.Contains(o, "*") {
			return nil, fmt.Errorf("handlers: CORS origin %q is not scheme://host[:port]", o)
		}
		allowed[strings.ToLower(u.Scheme+"://"+u.Host)] = true
	}
	return middleware.CORSWithConfig(middleware.CORSConfig{
		AllowOriginFunc: func(origin string) (bool, error) {
			return allowed[strings.ToLower(origin)], nil
		},
		AllowCredentials: true,
		AllowMethods:     []string{http.MethodGet, http.MethodPost, http.MethodPatch},
		AllowHeaders: []string{echo.HeaderAuthorization, echo.HeaderContentType, headerIfMatch,
			headerLastEventID, echo.HeaderXRequestID},
		ExposeHeaders: []string{echo.HeaderLocation, headerETag, echo.HeaderRetryAfter, echo.HeaderXRequestID},
		MaxAge:        int(corsMaxAge / time.Second),
	}), nil
}

// corsMaxAge is how long a browser may cache a preflight answer; browsers
// cap it at 2 hours (Chromium) or 24 hours (Firefox) anyway.
const corsMaxAge = 10 * time.Minute
