package loadgen

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// parsePromText reads the Prometheus text exposition format from r into a
// map of its unlabelled samples (name to value); comments, labelled
// samples and lines it cannot read are skipped.
func parsePromText(r io.Reader) map[string]float64 {
	m := make(map[string]float64)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || strings.ContainsRune(line, '{') {
			continue
		}
		name, val, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			m[name] = f
		}
	}
	return m
}
