package mongo

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"

	"changecast/store"
)

// codeBSONObjectTooLarge is the error of a change event over 16 MB (an
// updateLookup of a large document); the server does not resume past it.
const codeBSONObjectTooLarge = 10334

// transientLabels are the error labels of failures that say nothing about
// a position: the server or the network failed, and the same request may
// succeed later. NetworkError and the two retry labels come from the
// driver (x/mongo/driver/errors.go, mongo/change_stream.go); the server
// adds ResumableChangeStreamError (4.4+) and, when it sheds load,
// SystemOverloadedError.
var transientLabels = []string{
	"ResumableChangeStreamError",
	"RetryableError",
	"NetworkError",
	"SystemOverloadedError",
}

// transientCodes are the server error codes of failures that may pass by
// themselves: the driver's retryable-read and resumable change stream codes
// (for servers that send no labels), plus interruptions and time limits.
var transientCodes = []int{
	6,     // HostUnreachable
	7,     // HostNotFound
	43,    // CursorNotFound (the driver resumes on it)
	50,    // MaxTimeMSExpired
	63,    // StaleShardVersion
	89,    // NetworkTimeout
	91,    // ShutdownInProgress
	133,   // FailedToSatisfyReadPreference
	134,   // ReadConcernMajorityNotAvailableYet
	150,   // StaleEpoch
	189,   // PrimarySteppedDown
	202,   // NetworkInterfaceExceededTimeLimit
	234,   // RetryChangeStream
	262,   // ExceededTimeLimit
	9001,  // SocketException
	10058, // LegacyNotPrimary
	10107, // NotWritablePrimary
	11600, // InterruptedAtShutdown
	11601, // Interrupted
	11602, // InterruptedDueToReplStateChange
	13388, // StaleConfig
	13435, // NotPrimaryNoSecondaryOk
	13436, // NotPrimaryOrSecondary
}

// transient reports whether err is a failure of the server or the network
// rather than an answer about the request: an error without a server code
// (the connection, server selection, a timeout), or one with a transient
// label or code.
func transient(err error) bool {
	var se mongodrv.ServerError
	if !errors.As(err, &se) || mongodrv.IsNetworkError(err) || mongodrv.IsTimeout(err) {
		return true
	}
	for _, l := range transientLabels {
		if se.HasErrorLabel(l) {
			return true
		}
	}
	return serverCode(err, transientCodes...)
}

// catchUpErr maps an error of a catch-up that resumed after a client's
// position after. Whatever the server says about a resume other than a
// transient failure, retrying the same position would get the same answer:
// a malformed token gets 9 (FailedToParse) or one of many location codes
// (50811 "KeyString format error", 40649, 50796, ...), not only 260. So
// every non-transient error wraps ErrInvalidPosition (286, 280 and 136
// ErrHistoryLost), and the client is reset and sent a snapshot instead of
// reconnecting with the same id for ever. Transient errors are returned as
// they are: the client reconnects and tries again.
func (m *Store) catchUpErr(ctx context.Context, after string, err error) error {
	switch {
	case m.done.Err() != nil:
		return fmt.Errorf("catch up: %w", store.ErrClosed)
	case ctx.Err() != nil:
		return ctx.Err()
	case serverCode(err, codeChangeStreamHistLost, codeChangeStreamFatal, codeCappedPositionLost):
		return fmt.Errorf("catch up after %.40s: %v: %w", after, err, store.ErrHistoryLost)
	case transient(err):
		return fmt.Errorf("catch up after %.40s: %w", after, err)
	}
	return fmt.Errorf("catch up after %.40s: %v: %w", after, err, store.ErrInvalidPosition)
}

// tokenVersion returns the format version of a resume token's _data: the
// KeyString after the cluster time holds it as a small integer, type byte
// 0x2B and the value shifted left by one ("2B02" version 1, "2B04"
// version 2). ok is false when pos holds no version there.
func tokenVersion(pos string) (v int, ok bool) {
	if len(pos) < 22 || pos[18:20] != "2B" {
		return 0, false
	}
	b, err := strconv.ParseUint(pos[20:22], 16, 8)
	if err != nil {
		return 0, false
	}
	return int(b >> 1), true
}

// comparePositions compares positions a and b like strings.Compare. The
// server guarantees bytewise order only between tokens of one format
// version. Tokens start with their cluster time, so tokens of different
// times compare right whatever their versions; two tokens of the same
// time (events of one transaction, a high-water mark and an event) but of
// different versions have no known order, and comparing them is an error
// wrapping ErrInvalidPosition, so that the client holding one is reset
// rather than skipped past changes.
func comparePositions(a, b string) (int, error) {
	switch {
	case a == b:
		return 0, nil
	case len(a) >= 18 && len(b) >= 18 && a[:18] != b[:18]:
		if a < b {
			return -1, nil
		}
		return 1, nil
	}
	va, oka := tokenVersion(a)
	vb, okb := tokenVersion(b)
	// A bare cluster time (no version) sorts before every token of its
	// time in any version.
	if len(a) > 18 && len(b) > 18 && (oka != okb || va != vb) {
		return 0, fmt.Errorf("positions %.40s and %.40s have the same cluster time but different token versions: %w", a, b, store.ErrInvalidPosition)
	}
	if a < b {
		return -1, nil
	}
	return 1, nil
}
