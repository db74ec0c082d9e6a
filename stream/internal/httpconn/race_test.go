//go:build race

package httpconn

// raceEnabled says the race detector is on: sync.Pool then drops items at
// random, so a write may allocate what the pools hold.
const raceEnabled = true
