package latency

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Report is what the stages handler answers.
type Report struct {
	Stages []Summary `json:"stages"`
	// SlowestMs is the server time of the delivery whose trace is kept
	// (0: none), when a FlightRecorder runs.
	SlowestMs float64 `json:"slowestTracedMs,omitempty"`
}

// Handler serves the stage histograms as a JSON Report at its path
// (`?reset=1` starts them over after answering, and forgets the kept
// trace) and, when fr is not nil, the trace kept around the slowest
// delivery at path + "/trace" (404 while there is none). It belongs on a
// debug listener, not the public one.
func Handler(path string, fr *FlightRecorder) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
		reset, _ := strconv.ParseBool(r.URL.Query().Get("reset"))
		rep := Report{Stages: Summaries(reset)}
		if fr != nil {
			_, d := fr.Slowest()
			rep.SlowestMs = float64(d.Microseconds()) / 1000
			if reset {
				fr.Reset()
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep)
	})
	mux.HandleFunc("GET "+path+"/trace", func(w http.ResponseWriter, r *http.Request) {
		var b []byte
		if fr != nil {
			b, _ = fr.Slowest()
		}
		if b == nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
	})
	return mux
}
