package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"changecast/cmd/internal/connlimit"
	"changecast/handlers"
	"changecast/static"
	"changecast/store"
	"changecast/store/bolt"
	"changecast/store/feed"
	"changecast/store/mongo"
	"changecast/stream"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// run is the whole program: main only calls it. It reads the environment
// once through getenv, so tests start the server in-process on port 0.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			return runToken(args[1:], getenv, stdout, stderr)
		case "tail":
			return runTail(ctx, args[1:], getenv, stdout, stderr)
		case "bench":
			return runBench(ctx, args[1:], getenv, stdout, stderr)
		}
	}
	return serve(ctx, args, getenv, stdout, stderr)
}

// serve runs the server until ctx ends, then shuts down in order: streams
// first (so open SSE responses end and Shutdown need not wait for them),
// then the HTTP server within SHUTDOWN_TIMEOUT, then the store.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	dev, done, err := parseServeFlags(args, stdout, stderr)
	if err != nil || done {
		return err
	}
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	if !dev && cfg.JWTSecret == "" {
		return errors.New("JWT_SECRET is required (at least 32 bytes); or run with -dev for local use without auth")
	}
	logger := newLogger(dev, stdout)

	maxConns, fileLimit := connectionBound(cfg, logger)
	ln, err := listen(cfg, dev, maxConns)
	if err != nil {
		return err
	}
	defer ln.Close()

	b, err := openBackend(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer b.Close()

	met := newMetrics()
	mux := newMultiplexer(cfg, b, met, logger)
	met.watch(mux, b)
	met.watchConns(ln)
	if err := startFeed(ctx, mux); err != nil {
		if errors.Is(err, errStoppedStarting) {
			logger.Info("stopped while starting")
			return nil
		}
		return err
	}
	defer mux.Close()

	srv, err := newHTTPServer(cfg, dev, b, mux, met, logger)
	if err != nil {
		return err
	}
	logger.Info("connection limits", "max_connections", maxConns, "health_reserve", connlimit.HealthReserve,
		"open_file_limit", fileLimit, "body_timeout", cfg.BodyTimeout.String(), "idle_timeout", cfg.IdleTimeout.String())

	if cfg.PprofAddr != "" {
		stop, err := servePprof(cfg.PprofAddr, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	return serveUntilDone(ctx, cfg, dev, srv, ln, mux, b, logger)
}

// parseServeFlags parses the server's flags. done is true when the
// command has nothing more to do (-version printed).
func parseServeFlags(args []string, stdout, stderr io.Writer) (dev, done bool, err error) {
	fs := flag.NewFlagSet("changecast", flag.ContinueOnError)
	fs.SetOutput(stderr)
	devFlag := fs.Bool("dev", false, "development mode: no auth, listen on 127.0.0.1 only")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return false, false, err
	}
	if fs.NArg() > 0 {
		return false, false, fmt.Errorf("unexpected argument %q (commands: token, tail, bench)", fs.Arg(0))
	}
	if *showVersion {
		fmt.Fprintln(stdout, "changecast", version)
		return false, true, nil
	}
	return *devFlag, false, nil
}

// newLogger logs as text in dev mode (with a warning that auth is off),
// as JSON otherwise.
func newLogger(dev bool, stdout io.Writer) *slog.Logger {
	if !dev {
		return slog.New(slog.NewJSONHandler(stdout, nil))
	}
	logger := slog.New(slog.NewTextHandler(stdout, nil))
	logger.Warn("DEV MODE: authentication is OFF; listening on 127.0.0.1 only; never use -dev in production")
	return logger
}

// connectionBound raises the open-file limit and returns MAX_CONNECTIONS
// (derived from that limit when unset) and the limit (0 if unknown). It
// warns when the limit cannot be raised, or when MAX_CONNECTIONS leaves
// too few descriptors for everything else.
func connectionBound(cfg config, logger *slog.Logger) (maxConns int, fileLimit uint64) {
	fileLimit, err := connlimit.RaiseFileLimit()
	if err != nil {
		logger.Warn("could not raise the open-file limit", "err", err, "limit", fileLimit)
	}
	maxConns = cfg.MaxConnections
	if maxConns == 0 {
		maxConns = connlimit.DefaultMax(fileLimit)
	} else if fileLimit > 0 && uint64(maxConns) > fileLimit-min(fileLimit, connlimit.FDHeadroom) {
		logger.Warn("MAX_CONNECTIONS leaves too few file descriptors for the store and health checks",
			"max_connections", maxConns, "open_file_limit", fileLimit, "headroom", connlimit.FDHeadroom)
	}
	return maxConns, fileLimit
}

// listen binds PORT (on 127.0.0.1 only in dev mode) and bounds the
// connections it holds to maxConns plus the health reserve.
func listen(cfg config, dev bool, maxConns int) (*connlimit.Listener, error) {
	host := ""
	if dev {
		host = "127.0.0.1"
	}
	tcpLn, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(cfg.Port)))
	if err != nil {
		return nil, fmt.Errorf("listen on port %d: %w", cfg.Port, err)
	}
	return connlimit.NewListener(tcpLn, maxConns, connlimit.HealthReserve, connlimit.ReserveProbation), nil
}

// newMultiplexer builds the multiplexer over the store's change feed,
// reporting catch-ups and ended streams to met and the log.
func newMultiplexer(cfg config, b store.Backend, met *metrics, logger *slog.Logger) *stream.Multiplexer {
	return stream.New(feed.New(b), stream.Config{
		Heartbeat: cfg.Heartbeat,
		Classify:  subscriberKind,
		Logger:    logger,
		OnCatchUp: func(d time.Duration) { met.catchUps.Observe(d.Seconds()) },
		OnStreamEnd: func(se stream.StreamEnd) {
			met.streamSecs.WithLabelValues(string(se.Reason)).Observe(se.Duration.Seconds())
			logger.Info("stream ended", "request_id", se.RequestID, "topics", se.Topics,
				"duration", se.Duration.Round(time.Millisecond).String(), "events", se.Events, "reason", se.Reason)
		},
		ShutdownRetryMin: cfg.ShutdownRetry[0], ShutdownRetryMax: cfg.ShutdownRetry[1],
	})
}

// errStoppedStarting is startFeed's error when ctx ended while the feed
// started: not a failure, the server just stops.
var errStoppedStarting = errors.New("stopped while starting")

// startFeed starts mux's change feed. A signal while it starts (a
// database slow to answer) stops it, and startFeed then returns
// errStoppedStarting.
func startFeed(ctx context.Context, mux *stream.Multiplexer) error {
	stopStarting := context.AfterFunc(ctx, mux.Close)
	err := mux.Start()
	stopStarting()
	if err != nil {
		if ctx.Err() != nil {
			return errStoppedStarting
		}
		return fmt.Errorf("start change feed: %w", err)
	}
	return nil
}

// newHTTPServer builds the HTTP server: the API's routes behind the
// connection reserve and the body guard, with the timeouts of cfg.
func newHTTPServer(cfg config, dev bool, b store.Backend, mux *stream.Multiplexer, met *metrics, logger *slog.Logger) (*http.Server, error) {
	var secret []byte
	if !dev {
		secret = []byte(cfg.JWTSecret)
	}
	e, err := handlers.New(handlers.Config{
		Store:       b,
		Streams:     mux,
		Logger:      logger,
		Dev:         dev,
		Secret:      secret,
		Static:      static.FS,
		CORSOrigins: cfg.CORSOrigins,
		Limits:      cfg.Limits,
		Metrics:     met.handler(),

		MetricsToken: cfg.MetricsToken,
	})
	if err != nil {
		return nil, err
	}
	e.Use(met.middleware)
	if !dev && cfg.MetricsToken == "" {
		logger.Info("/metrics is off (404): set METRICS_TOKEN and scrape with Authorization: Bearer <METRICS_TOKEN> to turn it on")
	}
	return &http.Server{
		Handler:           connlimit.ServeReserve(handlers.GuardBodies(e, cfg.BodyTimeout)),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		ConnContext:       connlimit.MarkReserve,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		// No WriteTimeout: it would cut SSE streams. Stream writes push their
		// own deadlines forward. No ReadTimeout either: it would end a
		// stream when it expires (its connection is read to learn when
		// the client goes); GuardBodies bounds bodies instead.
	}, nil
}

// serveUntilDone logs the address, serves srv on ln until ctx ends (or
// Serve fails), then shuts down in order: mux first (so open streams end), then srv within
// SHUTDOWN_TIMEOUT (closing what is still open past it), then the store.
func serveUntilDone(ctx context.Context, cfg config, dev bool, srv *http.Server, ln net.Listener, mux *stream.Multiplexer, b store.Backend, logger *slog.Logger) error {
	addr := ln.Addr().(*net.TCPAddr)
	shown := "127.0.0.1"
	if !dev {
		shown = "0.0.0.0"
	}
	logger.Info(fmt.Sprintf("listening on http://%s:%d", shown, addr.Port), "port", addr.Port, "version", version, "store", storeName(cfg))

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	mux.Close()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("shutdown timed out; closing open connections", "err", err)
		srv.Close()
	}
	<-errc
	if err := b.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	logger.Info("stopped")
	return nil
}

func storeName(cfg config) string {
	if cfg.MongoURI != "" {
		return "mongodb"
	}
	return "embedded"
}

// servePprof serves net/http/pprof on a loopback address, for profiling
// a running server. It returns a function that stops it and waits.
func servePprof(addr string, logger *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("PPROF_ADDR: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	logger.Info("pprof on http://" + ln.Addr().String() + "/debug/pprof/")
	return func() { srv.Close(); <-done }, nil
}

// openBackend opens MongoDB when MONGODB_URI is set, else the embedded store.
func openBackend(ctx context.Context, cfg config, logger *slog.Logger) (store.Backend, error) {
	if cfg.MongoURI != "" {
		m, err := mongo.Open(ctx, cfg.MongoURI, cfg.MongoDatabase, mongo.Options{Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("open MongoDB: %w", err)
		}
		return m, nil
	}
	b, err := bolt.Open(cfg.DataDir, bolt.Options{
		RetainCount: cfg.RetainChanges,
		RetainAge:   cfg.RetainAge,
		Logger:      logger,
	})
	if err != nil {
		return nil, fmt.Errorf("open embedded store in %s: %w", cfg.DataDir, err)
	}
	return b, nil
}

// runToken prints a token signed with JWT_SECRET.
func runToken(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("changecast token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	sub := fs.String("sub", "", "subject: the user name (required)")
	role := fs.String("role", handlers.RoleCustomer, "role: customer or staff")
	rooms := fs.String("rooms", "", "comma-separated rooms the token may use; * for all")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	secret := strings.TrimSpace(getenv("JWT_SECRET"))
	if len(secret) < 32 {
		return errors.New("JWT_SECRET must be set (at least 32 bytes) to sign a token")
	}
	if *sub == "" {
		return errors.New("-sub is required")
	}
	if *role != handlers.RoleCustomer && *role != handlers.RoleStaff {
		return fmt.Errorf("-role %q: want customer or staff", *role)
	}
	if *ttl <= 0 {
		return fmt.Errorf("-ttl %s: want a positive duration", *ttl)
	}
	var list []string
	for _, r := range strings.Split(*rooms, ",") {
		if r = strings.TrimSpace(r); r != "" {
			if r != "*" && !store.ValidRoom(r) {
				return fmt.Errorf("-rooms: %q is not a valid room name", r)
			}
			list = append(list, r)
		}
	}
	tok, err := handlers.IssueToken([]byte(secret), *sub, *role, list, *ttl, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
