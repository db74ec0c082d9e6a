package connlimit

// FDHeadroom is how many file descriptors MAX_CONNECTIONS leaves free by
// default, whatever the connections do: the store's files, MongoDB's two
// connection pools (100 each by default), the listeners, logs and the
// health reserve.
const FDHeadroom = 256

// unknownFileLimitConns is MAX_CONNECTIONS by default where the limit on
// open files cannot be read.
const unknownFileLimitConns = 10_000

// DefaultMax derives MAX_CONNECTIONS from fileLimit, the limit on open
// files as RaiseFileLimit reports it: all but FDHeadroom of them, half of
// a limit too small for that headroom (at least 1), or 10,000 when the
// limit is unknown (0). It is a pure function.
func DefaultMax(fileLimit uint64) int {
	switch {
	case fileLimit == 0:
		return unknownFileLimitConns
	case fileLimit > 2*FDHeadroom:
		return int(min(fileLimit-FDHeadroom, 1<<31-1))
	default:
		return max(int(fileLimit/2), 1)
	}
}
