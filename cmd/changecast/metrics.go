package main

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"changecast/store"
	"changecast/stream"
)

// statser is what the metrics read of the multiplexer.
type statser interface{ Stats() stream.Stats }

// The kinds of subscriber counted by changecast_subscribers.
const (
	subsOrders = "orders" // one order (any single topic that is not a room)
	subsRooms  = "rooms"  // one room
	subsMulti  = "multi"  // several topics
)

// subscriberKind is the multiplexer's Config.Classify: the kind a
// stream's subscriber is counted under, from its topics.
func subscriberKind(topics []string) string {
	if len(topics) > 1 {
		return subsMulti
	}
	if room, ok := strings.CutPrefix(topics[0], store.RoomTopicPrefix); ok && room != "" {
		return subsRooms
	}
	return subsOrders
}

// oldester is a backend that can tell how far back its log reaches.
type oldester interface {
	Oldest(ctx context.Context) (time.Time, bool, error)
}

// The rule for every label of every metric here: its values come from a
// small set fixed by the code, never from what a client sends. Each label
// value is a route pattern, a method, a status, a reason or a kind that
// the program itself names; anything a client could choose (a made-up
// method, an unknown path, a topic, a user) is folded into one value such
// as "other" or "unmatched" before it becomes a label. A label taken
// straight from a request would let one client grow /metrics and the
// process's memory without bound (one series per distinct value).

// labelOther is the method label of every method the API does not use.
const labelOther = "other"

// labelUnmatched is the route label of every request that matched no route.
const labelUnmatched = "unmatched"

// methodLabel returns method if the API serves it, else labelOther.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPatch, http.MethodOptions:
		return method
	}
	return labelOther
}

// statusLabel returns the status as a label: a status the server sends
// (100-599), else labelOther.
func statusLabel(status int) string {
	if status < 100 || status > 599 {
		return labelOther
	}
	return strconv.Itoa(status)
}

// metrics holds changecast's Prometheus registry and the instruments
// that are observed as things happen (the rest are read at scrape time).
type metrics struct {
	reg        *prometheus.Registry
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	catchUps   prometheus.Histogram
	streamSecs *prometheus.HistogramVec

	routesOnce sync.Once
	routes     map[string]bool // the route patterns registered, read once
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "changecast_http_requests_total",
			Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "changecast_http_request_duration_seconds",
			Help:    "Latency of non-streaming HTTP requests by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route", "method"}),
		catchUps: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "changecast_catchup_duration_seconds",
			Help:    "Duration of catch-ups read from the database log.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10),
		}),
		// reason is one of the fixed reasons stream.StreamEnd names.
		streamSecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "changecast_stream_duration_seconds",
			Help:    "How long SSE streams stayed open, by why they ended.",
			Buckets: []float64{1, 10, 60, 300, 900, 3600, 4 * 3600},
		}, []string{"reason"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.catchUps, m.streamSecs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// watch registers the gauges and counters read from the multiplexer and
// the store at scrape time; the feed lag compares the position the
// multiplexer has applied (Stats.Applied) with b.
func (m *metrics) watch(mux statser, b store.Backend) {
	m.reg.MustRegister(&streamCollector{mux: mux, b: b})
}

// errProbed ends feedLag's Follow.
var errProbed = errors.New("probed")

// headSeer is a backend whose running feed can say how far it has read
// without reading the log again: the MongoDB store, where reading it
// again means opening a change stream.
type headSeer interface {
	SeenHead() (pos string, pending time.Time, ok bool)
}

// feedLag returns how far the feed is behind the store: 0 when the
// position applied is the store's head or nothing was committed after
// it, else now minus the commit time of the oldest change committed after
// it (not yet applied). ok is false when it cannot tell (the feed has not
// started, or the store did not answer within ctx).
//
// A backend that is a headSeer answers from what its feed has read: 0
// when the feed has handed over everything it read, else now minus the
// oldest change it holds. A scrape then opens no change stream and leaves
// the feed's bookkeeping alone. Any other backend (bolt, whose log is a
// local file) is asked for its head and, when that differs from applied,
// followed from applied just long enough to see its first batch after the
// opening one.
func feedLag(ctx context.Context, b store.Backend, applied string, now time.Time) (lag float64, ok bool) {
	if applied == "" {
		return 0, false
	}
	if hs, isSeer := b.(headSeer); isSeer {
		head, pending, running := hs.SeenHead()
		if !running {
			return 0, false
		}
		if head == applied || pending.IsZero() {
			return 0, true
		}
		return max(0, now.Sub(pending).Seconds()), true
	}
	head, err := b.Head(ctx)
	if err != nil {
		return 0, false
	}
	if head == applied {
		return 0, true
	}
	var oldest time.Time
	opened := false
	err = b.Follow(ctx, applied, func(bt store.Batch) error {
		if len(bt.Changes) > 0 {
			oldest = bt.Changes[0].Time
			return errProbed
		}
		if !opened { // the opening batch, at applied itself
			opened = true
			return nil
		}
		return errProbed // a quiet batch: nothing after applied
	})
	if !errors.Is(err, errProbed) {
		return 0, false
	}
	if oldest.IsZero() {
		return 0, true
	}
	return max(0, now.Sub(oldest).Seconds()), true
}

// handler serves the registry.
func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// middleware counts every request by its route pattern and status, and
// times those that are not streams.
func (m *metrics) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil && !c.Response().Committed {
			// Answer through the error table now, so the status counted is
			// the one the client gets.
			c.Error(err)
			err = nil
		}
		route := m.routeLabel(c)
		status := statusLabel(c.Response().Status)
		method := methodLabel(c.Request().Method)
		m.requests.WithLabelValues(route, method, status).Inc()
		if !strings.HasSuffix(route, "/events") {
			m.latency.WithLabelValues(route, method).Observe(time.Since(start).Seconds())
		}
		return err
	}
}

// routeLabel returns the request's route pattern if it is one of the
// routes registered (every route is registered before the server
// serves), else labelUnmatched.
func (m *metrics) routeLabel(c echo.Context) string {
	m.routesOnce.Do(func() {
		m.routes = make(map[string]bool)
		for _, r := range c.Echo().Routes() {
			m.routes[r.Path] = true
		}
	})
	if route := c.Path(); m.routes[route] {
		return route
	}
	return labelUnmatched
}

// streamCollector reads the multiplexer's counters at scrape time.
type streamCollector struct {
	mux statser
	b   store.Backend
}

var (
	descOpen       = prometheus.NewDesc("changecast_streams_open", "SSE streams being served.", nil, nil)
	descSubs       = prometheus.NewDesc("changecast_subscribers", "Subscribers by kind of topic (orders, rooms, multi).", []string{"kind"}, nil)
	descDelivered  = prometheus.NewDesc("changecast_events_delivered_total", "Events whose bytes the clients' sockets took.", nil, nil)
	descBacklogged = prometheus.NewDesc("changecast_events_backlogged", "Events written to streams whose clients have not taken them yet (waiting in the connections' backlogs).", nil, nil)
	descDropped    = prometheus.NewDesc("changecast_subscribers_dropped_slow_total", "Subscribers disconnected because their queue was full.", nil, nil)
	descCatchUpRun = prometheus.NewDesc("changecast_catchups_running", "Catch-ups reading the database log now.", nil, nil)
	descCatchUps   = prometheus.NewDesc("changecast_catchups_total", "Catch-ups read from the database log.", nil, nil)
	descLag        = prometheus.NewDesc("changecast_change_feed_lag_seconds", "How far the change feed is behind the store: 0 when caught up, else now minus the commit time of the oldest change not yet applied.", nil, nil)
	descFeedUp     = prometheus.NewDesc("changecast_change_feed_up", "1 if the change feed is running.", nil, nil)
	descTopics     = prometheus.NewDesc("changecast_buffered_topics", "Topics with recent events held in memory.", nil, nil)
	descHeld       = prometheus.NewDesc("changecast_buffered_bytes", "Bytes of recent events held in memory for replay.", nil, nil)
	descWindow     = prometheus.NewDesc("changecast_log_replay_window_seconds", "How far back the database log can replay: now minus its oldest change.", nil, nil)
)

func (s *streamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOpen, descSubs, descDelivered, descBacklogged, descDropped, descCatchUpRun, descCatchUps, descLag, descFeedUp, descTopics, descHeld, descWindow} {
		ch <- d
	}
}

func (s *streamCollector) Collect(ch chan<- prometheus.Metric) {
	st := s.mux.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(descOpen, float64(st.OpenStreams))
	for _, kind := range []string{subsOrders, subsRooms, subsMulti} {
		gauge(descSubs, float64(st.SubscribersByClass[kind]), kind)
	}
	counter(descDelivered, float64(st.Delivered))
	gauge(descBacklogged, float64(st.Backlogged))
	counter(descDropped, float64(st.DroppedSlow))
	gauge(descCatchUpRun, float64(st.CatchUpsRunning))
	counter(descCatchUps, float64(st.CatchUps))
	if s.b != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if lag, ok := feedLag(ctx, s.b, st.Applied, time.Now()); ok {
			gauge(descLag, lag)
		}
		cancel()
	}
	up := 0.0
	if st.Ready {
		up = 1
	}
	gauge(descFeedUp, up)
	gauge(descTopics, float64(st.Topics))
	gauge(descHeld, float64(st.BufferedBytes))
	if o, ok := s.b.(oldester); ok {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if t, ok, err := o.Oldest(ctx); err == nil && ok {
			gauge(descWindow, time.Since(t).Seconds())
		}
	}
}

// connCounter is what the connection metrics read of the listener.
type connCounter interface {
	Open() int64
	Refused() uint64
	Evicted() uint64
}

// watchConns registers the connection gauge and the refusal and eviction
// counters, read from l at scrape time. None has labels.
func (m *metrics) watchConns(l connCounter) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "changecast_connections_open",
			Help: "Client connections open, the health reserve included.",
		}, func() float64 { return float64(l.Open()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "changecast_connections_refused_total",
			Help: "Connections closed on arrival because every place, the health reserve included, served a request.",
		}, func() float64 { return float64(l.Refused()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "changecast_connections_evicted_total",
			Help: "Connections that served no request (silent or idle past the grace) closed to make room for a new one.",
		}, func() float64 { return float64(l.Evicted()) }),
	)
}
