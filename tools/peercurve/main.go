// Command peercurve turns runs of the development workspace's ssebench
// (../shared/peers, the reader compare.sh uses) at rising write rates
// into the JSON of a `changecast bench -mode curve` run, so that
// `changecast bench -mode curve -compare` plots a peer (the bare net/http
// fan-out, Centrifugo) beside changecast:
//
//	go run ./tools/peercurve -name floor -conns 5000 -rooms 50 -d 10s 100=floor-100.json 300=floor-300.json ... > floor.json
//
// Each argument is a rate asked (writes per second) and the file holding
// ssebench's -json line for it. ssebench reports no p99.9; the plot then
// shows the peer's p50 and p99.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"changecast/internal/loadgen"
)

// run is one ssebench -json line, the fields used.
type run struct {
	Conns      int64   `json:"conns"`
	Publishes  int64   `json:"publishes"`
	Errors     int64   `json:"publish_errors"`
	Deliveries int64   `json:"deliveries"`
	Expected   int64   `json:"expected_deliveries"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
	CPUPer     float64 `json:"server_cpu_us_per_delivery"`
	KiB        float64 `json:"kib_per_stream"`
}

func main() {
	name := flag.String("name", "peer", "the curve's name in the plot")
	conns := flag.Int("conns", 5000, "streams of the runs")
	rooms := flag.Int("rooms", 50, "rooms of the runs")
	d := flag.Duration("d", 10*time.Second, "ssebench -d of the runs")
	flag.Parse()
	c := loadgen.Curve{Mode: "curve", Name: *name, Conns: *conns, Rooms: *rooms}
	for _, arg := range flag.Args() {
		rate, file, ok := strings.Cut(arg, "=")
		r, err := strconv.ParseFloat(rate, 64)
		if !ok || err != nil {
			fail(fmt.Errorf("%q: want RATE=FILE", arg))
		}
		b, err := os.ReadFile(file)
		if err != nil {
			fail(err)
		}
		var x run
		if err := json.Unmarshal(b, &x); err != nil {
			fail(fmt.Errorf("%s: %w", file, err))
		}
		c.Steps = append(c.Steps, loadgen.Result{
			Mode: "fanout", Conns: *conns, Rooms: *rooms, Streams: x.Conns,
			RateAsked: r, Writes: x.Publishes, WritesSkipped: x.Errors, WritesPerS: float64(x.Publishes) / d.Seconds(),
			Expected: x.Expected, Delivered: x.Deliveries, Lost: max(0, x.Expected-x.Deliveries),
			Seconds: d.Seconds(), DeliveriesPerS: float64(x.Deliveries) / d.Seconds(),
			P50ms: x.P50, P99ms: x.P99, MaxMs: x.Max, CPUPerDelivery: x.CPUPer, KiBPerStream: x.KiB,
		})
	}
	if len(c.Steps) == 0 {
		fail(fmt.Errorf("no run given"))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(c); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "peercurve:", err)
	os.Exit(1)
}
