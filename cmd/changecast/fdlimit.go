package main

// fdHeadroom is how many file descriptors MAX_CONNECTIONS leaves free by
// default, whatever the connections do: the store's files, MongoDB's two
// connection pools (100 each by default), the listeners, logs and the
// health reserve.
const fdHeadroom = 256

// unknownFileLimitConns is MAX_CONNECTIONS by default where the limit on
// open files cannot be read.
const unknownFileLimitConns = 10_000

// defaultMaxConnections derives MAX_CONNECTIONS from the limit on open
// files: all but fdHeadroom of them, or half of a limit too small for
// that headroom.
func defaultMaxConnections(fileLimit uint64) int {
	switch {
	case fileLimit == 0:
		return unknownFileLimitConns
	case fileLimit > 2*fdHeadroom:
		return int(min(fileLimit-fdHeadroom, 1<<31-1))
	default:
		return max(int(fileLimit/2), 1)
	}
}
