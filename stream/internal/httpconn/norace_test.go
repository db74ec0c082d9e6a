//go:build !race

package httpconn

// raceEnabled says the race detector is on.
const raceEnabled = false
