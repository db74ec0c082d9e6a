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
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"changecast/handlers"
	"changecast/internal/connlimit"
	"changecast/internal/latency"
	"changecast/static"
	"changecast/store"
	"changecast/store/bolt"
	"changecast/store/mongo"
	"changecast/store/streamsource"
	"changecast/stream"
)

// run is the whole program: main only calls it, through runMain. It
// reads the environment once through getenv, so tests start the server
// in-process on port 0.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "token":
			return runToken(args[1:], getenv, stdout, stderr)
		case "tail":
			return runTail(ctx, args[1:], getenv, stdout, stderr)
		case "bench":
			return runBench(ctx, args[1:], getenv, stdout, stderr)
		case "backup":
			return runBackup(ctx, args[1:], getenv, stdout)
		case "check":
			return runCheck(args[1:], stdout)
		case "help":
			return runHelp(ctx, args[1:], stdout)
		case "version":
			if len(args) > 1 {
				return usagef("", "version takes no arguments, got %q", args[1:])
			}
			fmt.Fprintln(stdout, versionLine())
			return nil
		case "-h", "-help", "--help":
			printHelp(ctx, stdout)
			return flag.ErrHelp
		}
	}
	return serve(ctx, args, getenv, stdout, stderr)
}

// serve runs the server until ctx ends, then shuts down in order: streams
// first (so open SSE responses end and Shutdown need not wait for them),
// then the HTTP server within SHUTDOWN_TIMEOUT, then the store.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	dev, done, err := parseServeFlags(ctx, args, stdout)
	if err != nil || done {
		return err
	}
	cfg, err := loadConfig(getenv)
	if !dev && strings.TrimSpace(getenv("JWT_SECRET")) == "" && strings.TrimSpace(getenv("JWKS_URL")) == "" && strings.TrimSpace(getenv("JWT_ISSUER")) == "" {
		err = errors.Join(err, errors.New("JWT_SECRET is required (at least 32 bytes) unless JWKS_URL or JWT_ISSUER is set; or run with -dev for local use without auth"))
	}
	if err != nil {
		return err
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
	mux := newMultiplexer(cfg, streamsource.New(b), met, logger)
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
	stopPresence := sharePresence(ctx, b, mux)
	defer stopPresence()

	srv, err := newHTTPServer(ctx, cfg, dev, b, mux, met, logger)
	if err != nil {
		return err
	}
	logger.Info("connection limits", "max_connections", maxConns, "health_reserve", connlimit.HealthReserve,
		"open_file_limit", fileLimit, "body_timeout", cfg.BodyTimeout.String(), "idle_timeout", cfg.IdleTimeout.String())

	if cfg.PprofAddr != "" {
		stop, err := servePprof(cfg.PprofAddr, cfg.TraceSlow, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	return serveUntilDone(ctx, cfg, dev, srv, ln, mux, b, stopPresence, logger)
}

// serverFlags are the server's command-line flags.
type serverFlags struct{ dev, version bool }

// serverCommand returns the server's flags.
func serverCommand() (*command, *serverFlags) {
	var f serverFlags
	c := &command{
		synopsis: "[-dev]",
		about:    "Run the server, configured by the environment (see 'changecast help').",
		fs:       flag.NewFlagSet("changecast", flag.ContinueOnError),
	}
	c.fs.BoolVar(&f.dev, "dev", false, "development mode: no auth, listen on 127.0.0.1 only")
	c.fs.BoolVar(&f.version, "version", false, "print the version and exit")
	return c, &f
}

// parseServeFlags parses the server's flags. done is true when the
// command has nothing more to do (-version printed). -h prints the whole
// help, as `changecast help` does.
func parseServeFlags(ctx context.Context, args []string, stdout io.Writer) (dev, done bool, err error) {
	c, f := serverCommand()
	c.fs.SetOutput(io.Discard)
	c.fs.Usage = func() {}
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(ctx, stdout)
			return false, true, err
		}
		return false, false, &usageError{err: err}
	}
	if c.fs.NArg() > 0 {
		return false, false, usagef("", "unknown command %q (commands: token, tail, bench, backup, check, help, version)", c.fs.Arg(0))
	}
	if f.version {
		fmt.Fprintln(stdout, versionLine())
		return false, true, nil
	}
	return f.dev, false, nil
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
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("port %d is in use: set PORT to another port, or stop what listens on it", cfg.Port)
	}
	if err != nil {
		return nil, fmt.Errorf("listen on port %d: %w", cfg.Port, err)
	}
	return connlimit.NewListener(tcpLn, maxConns, connlimit.HealthReserve, connlimit.ReserveProbation, connlimit.Grace, connlimit.IdleGrace), nil
}

// newMultiplexer builds the multiplexer over src, the store's change feed,
// reporting catch-ups and ended streams to met and the log.
func newMultiplexer(cfg config, src stream.Source, met *metrics, logger *slog.Logger) *stream.Multiplexer {
	return stream.New(src, stream.Config{
		Heartbeat: cfg.Heartbeat,
		Classify:  subscriberKind,
		Presence:  handlers.PresenceTopic,
		Logger:    logger,
		OnCatchUp: func(d time.Duration) { met.catchUps.Observe(d.Seconds()) },
		OnStreamEnd: func(se stream.StreamEnd) {
			met.streamSecs.WithLabelValues(string(se.Reason)).Observe(se.Duration.Seconds())
			logger.Info("stream ended", "request_id", se.RequestID, "topics", se.Topics,
				"duration", se.Duration.Round(time.Millisecond).String(), "events", se.Events, "reason", se.Reason)
		},
		ShutdownRetryMin: cfg.ShutdownRetry[0], ShutdownRetryMax: cfg.ShutdownRetry[1],
		MaxAge: cfg.StreamMaxAge,
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

// h2MaxStreams is how many streams (requests, SSE streams included) one
// HTTP/2 connection may have open at once; past it the client opens
// another connection (a new stream is refused with REFUSED_STREAM, which
// clients retry). MAX_CONNECTIONS counts the connection once whatever it
// carries, so this bounds what one place can hold: Go's default, which a
// proxy multiplexing many browsers (Caddy or Envoy with an h2c upstream,
// Cloud Run's front end) fills before it opens a second connection,
// while a user's own streams stay bounded by STREAMS_PER_SUBJECT.
const h2MaxStreams = 250

// newHTTPServer builds the HTTP server: the API's routes behind the
// connection bound (which learns from it which connections serve
// requests) and the body guard, with the timeouts of cfg.
func newHTTPServer(ctx context.Context, cfg config, dev bool, b store.Backend, mux *stream.Multiplexer, met *metrics, logger *slog.Logger) (*http.Server, error) {
	var secret, previous []byte
	if !dev && cfg.JWTSecret != "" {
		secret, previous = []byte(cfg.JWTSecret), []byte(cfg.JWTSecretPrevious)
	}
	if dev {
		cfg.IdP = handlers.IdP{}
	}
	e, err := handlers.New(handlers.Config{
		Store:       b,
		Streams:     mux,
		Logger:      logger,
		Dev:         dev,
		Secret:      secret,
		IdP:         cfg.IdP,
		RoomAuth:    cfg.RoomAuth,
		Ctx:         ctx,
		Static:      static.FS,
		CORSOrigins: cfg.CORSOrigins,
		Limits:      cfg.Limits,
		Metrics:     met.handler(),

		MetricsToken:   cfg.MetricsToken,
		TrustedProxies: cfg.TrustedProxies,
		SecretPrevious: previous,
	})
	if err != nil {
		return nil, err
	}
	e.Use(met.middleware)
	if !dev && cfg.MetricsToken == "" {
		logger.Info("/metrics is off (404): set METRICS_TOKEN and scrape with Authorization: Bearer <METRICS_TOKEN> to turn it on")
	}
	// HTTP/2 without TLS (h2c, with prior knowledge) beside HTTP/1.1 on
	// the same port, for a proxy or platform that speaks HTTP/2 to the
	// app; browsers reach it through TLS at the edge.
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Server{
		Protocols: &protocols,
		// WriteByteTimeout closes an HTTP/2 connection whose client
		// reads nothing at all (the stream deadlines only reset streams
		// that wait for its window).
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: h2MaxStreams, WriteByteTimeout: connlimit.WriteTimeout},
		Handler:           connlimit.Serve(handlers.GuardBodies(e, cfg.BodyTimeout), connlimit.WriteTimeout),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       cfg.IdleTimeout,
		ConnContext:       connlimit.ConnContext,
		ConnState:         connlimit.ConnState,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		// No WriteTimeout: it would cut SSE streams. connlimit.Serve sets
		// a write deadline per request instead; stream and backup writes
		// push it forward. No ReadTimeout either: it would end a
		// stream when it expires (its connection is read to learn when
		// the client goes); GuardBodies bounds bodies instead.
	}, nil
}

// serveUntilDone logs the address, serves srv on ln until ctx ends (or
// Serve fails), then shuts down in order: mux first (so open streams end), then srv within
// SHUTDOWN_TIMEOUT (closing what is still open past it), then the store.
func serveUntilDone(ctx context.Context, cfg config, dev bool, srv *http.Server, ln net.Listener, mux *stream.Multiplexer, b store.Backend, stopPresence func(), logger *slog.Logger) error {
	addr := ln.Addr().(*net.TCPAddr)
	shown := "127.0.0.1"
	if !dev {
		shown = "0.0.0.0"
	}
	logger.Info(fmt.Sprintf("listening on http://%s:%d", shown, addr.Port), "port", addr.Port, "version", versionLine(), "store", storeName(cfg))
	demo := fmt.Sprintf("http://127.0.0.1:%d/", addr.Port)
	logger.Info("demo page: "+demo, "url", demo)
	data := dataLocation(cfg)
	logger.Info("data: "+data, "data", data)

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
	stopPresence() // before the store closes: it says goodbye through it
	if err := b.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	logger.Info("stopped")
	return nil
}

// dataLocation says where the data lives: the embedded store's file (an
// absolute path) or the MongoDB database.
func dataLocation(cfg config) string {
	if cfg.MongoURI != "" {
		return "MongoDB database " + cfg.MongoDatabase
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		dir = cfg.DataDir
	}
	return filepath.Join(dir, "changecast.db")
}

// storeName names the backend in the start-up log line.
func storeName(cfg config) string {
	if cfg.MongoURI != "" {
		return "mongodb"
	}
	return "embedded"
}

// servePprof serves net/http/pprof on a loopback address, for profiling
// a running server. It returns a function that stops it and waits.
func servePprof(addr string, traceSlow time.Duration, logger *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("PPROF_ADDR: listen on %s: %w", addr, err)
	}
	latency.Enable()
	var fr *latency.FlightRecorder
	if traceSlow > 0 {
		if fr, err = latency.StartFlightRecorder(traceSlow); err != nil {
			ln.Close()
			return nil, fmt.Errorf("TRACE_SLOW: %w", err)
		}
	}
	mux := http.NewServeMux()
	stages := latency.Handler("/debug/stages", fr)
	mux.Handle("/debug/stages", stages)
	mux.Handle("/debug/stages/", stages)
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
	return func() {
		srv.Close()
		<-done
		if fr != nil {
			fr.Stop()
		}
	}, nil
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
