package loadgen

import (
	"fmt"
	"io"
	"time"

	"changecast/internal/latency"
)

// Result is what a run measured; -json prints it. Deliveries count
// events received by the SSE connections; "expected" is what the writes
// that succeeded should have produced (each write reaches every
// connection watching its room).
type Result struct {
	Mode  string `json:"mode"`
	Conns int    `json:"conns"`
	Rooms int    `json:"rooms"`
	// Streams is how many connections were open at the end (idle,
	// fanout) or took part (storm).
	Streams          int64   `json:"streamsOpen"`
	ConnectSeconds   float64 `json:"connectSeconds"`
	RateAsked        float64 `json:"writeRateAsked,omitempty"`
	Writes           int64   `json:"writes"`
	WriteErrors      int64   `json:"writeErrors"`
	WritesSkipped    int64   `json:"writesSkipped"`
	WritesPerS       float64 `json:"writesPerSecond,omitempty"`
	WriteP50ms       float64 `json:"writeP50ms,omitempty"`
	WriteP99ms       float64 `json:"writeP99ms,omitempty"`
	Expected         int64   `json:"expectedDeliveries"`
	Delivered        int64   `json:"deliveries"`
	Lost             int64   `json:"lost"`
	Duplicates       int64   `json:"duplicates"`
	OutOfOrder       int64   `json:"outOfOrder"`
	Unexpected       int64   `json:"unexpected"`
	Resets           int64   `json:"resets"`
	Errors           int64   `json:"errors"`
	Reconnects       int64   `json:"reconnects"`
	WarmupSeconds    float64 `json:"warmupSeconds,omitempty"`
	Seconds          float64 `json:"seconds"`
	MeasuredWrites   int64   `json:"measuredWrites,omitempty"`
	MeasuredDelivers int64   `json:"measuredDeliveries,omitempty"`
	DeliveriesPerS   float64 `json:"deliveriesPerSecond"`
	P50ms            float64 `json:"p50ms"`
	P90ms            float64 `json:"p90ms"`
	P99ms            float64 `json:"p99ms"`
	P999ms           float64 `json:"p999ms"`
	MaxMs            float64 `json:"maxMs"`
	CaughtUpSeconds  float64 `json:"caughtUpSeconds,omitempty"`
	CaughtUp         int64   `json:"caughtUpClients,omitempty"`

	ServerCPUSecs     float64 `json:"serverCpuSeconds,omitempty"`
	CPUPerDelivery    float64 `json:"serverCpuMicrosPerDelivery,omitempty"`
	SysPerDelivery    float64 `json:"serverKernelCpuMicrosPerDelivery,omitempty"`
	ServerCPUPercent  float64 `json:"serverCpuPercent,omitempty"`
	ClientCPUSecs     float64 `json:"clientCpuSeconds,omitempty"`
	ClientPerDelivery float64 `json:"clientCpuMicrosPerDelivery,omitempty"`
	RSSBeforeKiB      int64   `json:"serverRssBeforeKiB,omitempty"`
	RSSAfterKiB       int64   `json:"serverRssAfterKiB,omitempty"`
	KiBPerStream      float64 `json:"serverRssKiBPerStream,omitempty"`
	HeapBeforeKiB     int64   `json:"serverHeapBeforeKiB,omitempty"`
	HeapAfterKiB      int64   `json:"serverHeapAfterKiB,omitempty"`
	HeapKiBPerStream  float64 `json:"serverHeapKiBPerStream,omitempty"`
	StackAfterKiB     int64   `json:"serverStackKiB,omitempty"`
	StackKiBPerStream float64 `json:"serverStackKiBPerStream,omitempty"`
	Goroutines        int64   `json:"serverGoroutines,omitempty"`
	ServerStreams     int64   `json:"serverStreamsOpen,omitempty"`
	ServerSource      string  `json:"serverStatsFrom,omitempty"`
	// Stages are the server's stage histograms over the measured window
	// (-stages); SlowestTracedMs the delay of the delivery whose trace
	// the server kept.
	Stages          []latency.Summary `json:"stages,omitempty"`
	SlowestTracedMs float64           `json:"slowestTracedMs,omitempty"`
}

// applyServerStats fills the result's server figures from the stats
// before and after a measured window in which delivered events arrived
// over streams connections.
func (r *Result) applyServerStats(before, after serverSample, delivered int64, streams int64, window time.Duration) {
	if !before.ok || !after.ok {
		return
	}
	r.ServerSource = after.from
	r.RSSBeforeKiB, r.RSSAfterKiB = before.rssKiB, after.rssKiB
	r.HeapBeforeKiB, r.HeapAfterKiB = before.heapKiB, after.heapKiB
	r.Goroutines, r.ServerStreams = after.goroutines, after.streams
	r.ServerCPUSecs = after.cpuSecs - before.cpuSecs
	if window > 0 {
		r.ServerCPUPercent = 100 * r.ServerCPUSecs / window.Seconds()
	}
	if delivered > 0 {
		r.CPUPerDelivery = r.ServerCPUSecs * 1e6 / float64(delivered)
		if after.sysSecs > 0 {
			r.SysPerDelivery = (after.sysSecs - before.sysSecs) * 1e6 / float64(delivered)
		}
	}
	if streams > 0 {
		r.KiBPerStream = float64(after.rssKiB) / float64(streams)
		if r.Mode == "idle" {
			r.KiBPerStream = float64(after.rssKiB-before.rssKiB) / float64(streams)
		}
		if after.heapKiB > 0 {
			r.HeapKiBPerStream = float64(after.heapKiB-before.heapKiB) / float64(streams)
			r.StackAfterKiB = after.stackKiB
			r.StackKiBPerStream = float64(after.stackKiB-before.stackKiB) / float64(streams)
		}
	}
}

// applyClientCPU fills the result's client CPU figures.
func (r *Result) applyClientCPU(before, after float64, delivered int64) {
	r.ClientCPUSecs = after - before
	if delivered > 0 {
		r.ClientPerDelivery = r.ClientCPUSecs * 1e6 / float64(delivered)
	}
}

func printTable(w io.Writer, r Result) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format+"\n", a...) }
	p("mode                %s", r.Mode)
	where := fmt.Sprintf("over %d rooms", r.Rooms)
	if r.Mode == "board" {
		where = "on topic orders"
	}
	p("streams             %d %s (%d open at the end), connected in %.2f s", r.Conns, where, r.Streams, r.ConnectSeconds)
	if r.Mode != "idle" {
		p("writes              %d ok, %d failed, %d skipped (generator behind)", r.Writes, r.WriteErrors, r.WritesSkipped)
	}
	if r.Mode == "fanout" || r.Mode == "board" {
		verb := "POST"
		if r.Mode == "board" {
			verb = "POST/PATCH"
		}
		p("write rate          %.0f/s of %.0f/s asked; %s p50 %.2f ms, p99 %.2f ms", r.WritesPerS, r.RateAsked, verb, r.WriteP50ms, r.WriteP99ms)
		p("measured            %.1f s after %.1f s warm-up: %d writes, %d deliveries", r.Seconds, r.WarmupSeconds, r.MeasuredWrites, r.MeasuredDelivers)
	}
	if r.Mode != "idle" {
		p("deliveries          %d of %d expected, %.0f/s", r.Delivered, r.Expected, r.DeliveriesPerS)
		p("lost/dup/order      %d / %d / %d (unexpected %d, resets %d)", r.Lost, r.Duplicates, r.OutOfOrder, r.Unexpected, r.Resets)
	}
	p("errors, reconnects  %d, %d", r.Errors, r.Reconnects)
	if r.Mode == "fanout" || r.Mode == "board" {
		p("latency             p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms (write to delivery)", r.P50ms, r.P90ms, r.P99ms, r.MaxMs)
	}
	if r.Mode == "storm" {
		p("caught up           %d of %d clients in %.2f s; per client p50 %.0f ms, p90 %.0f ms, p99 %.0f ms", r.CaughtUp, r.Conns, r.CaughtUpSeconds, r.P50ms, r.P90ms, r.P99ms)
	}
	if r.ServerSource != "" {
		p("server (%s)", r.ServerSource)
		if r.Mode != "idle" {
			kernel := ""
			if r.SysPerDelivery > 0 {
				kernel = fmt.Sprintf(" (%.2f µs of it in the kernel)", r.SysPerDelivery)
			}
			p("  CPU               %.2f s (%.0f%% of a core), %.2f µs per delivery%s", r.ServerCPUSecs, r.ServerCPUPercent, r.CPUPerDelivery, kernel)
		}
		p("  RSS               %d KiB -> %d KiB, %.1f KiB per stream", r.RSSBeforeKiB, r.RSSAfterKiB, r.KiBPerStream)
		if r.HeapAfterKiB > 0 {
			p("  heap in use       %d KiB -> %d KiB, %.1f KiB per stream", r.HeapBeforeKiB, r.HeapAfterKiB, r.HeapKiBPerStream)
			p("  goroutine stacks  %d KiB, %.1f KiB per stream", r.StackAfterKiB, r.StackKiBPerStream)
			p("  goroutines        %d; streams open %d", r.Goroutines, r.ServerStreams)
		}
	}
	printStages(p, r)
	if r.ClientCPUSecs > 0 && r.Mode != "idle" {
		p("client CPU          %.2f s, %.2f µs per delivery", r.ClientCPUSecs, r.ClientPerDelivery)
	}
}
