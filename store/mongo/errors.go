package mongo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"

	"go.mongodb.org/mongo-driver/v2/bson"
	mongodrv "go.mongodb.org/mongo-driver/v2/mongo"

	"changecast/store"
)

// Change events over 16 MB.
//
// The server raises 10334 (BSONObjectTooLarge) when it serializes a
// change event into a batch (plan_executor_pipeline.cpp), in the opening
// aggregate as well as in a getMore, and resuming from the same point
// meets the same event again. The size check is made on the event as the
// pipeline leaves it, so every change stream of the store that reads
// events (the feed and catch-ups alike) ends with largeEvents.stages: it
// drops updateDescription, which changecast never reads and which can be
// as large as the document itself, and, on servers that have it (7.0,
// 6.0.9 and later), $changeStreamSplitLargeEvent splits an event still
// over the limit into fragments that splitEvents joins again. The store
// learns whether the server has the stage by asking for it: a server
// without it refuses the pipeline with 40324 ("Unrecognized pipeline
// stage name", document_source.cpp), or 224 (QueryFeatureNotAllowed)
// while the feature compatibility version is older than the stage, and
// the stream is opened again without it.
//
// An event too large all the same (a server without the stage) is
// stepped over, one way for every stream: the stream is opened again
// from the last whole event read with batch size 1 and read one event a
// batch, so that every ordinary event before the large one arrives; when
// a batch fails again, the failing event is the next one, and it is read
// once without its document (fullDocument projected away, so that it
// fits), left out, and the stream opened again in whole batches after
// it. This needs nothing from the error's message.

// codeBSONObjectTooLarge is the error of a change event the server cannot
// send, over 16 MB.
const codeBSONObjectTooLarge = 10334

// Codes of a server that lacks $changeStreamSplitLargeEvent.
const (
	codeUnknownStage           = 40324
	codeQueryFeatureNotAllowed = 224
)

// readMode is how a change stream of the store reads its events.
type readMode int

const (
	// readBatches reads whole batches.
	readBatches readMode = iota
	// readOne reads one event a batch: after a batch failed with 10334,
	// it reads the ordinary events up to the one over 16 MB.
	readOne
	// readStripped reads that one event without its document, so that
	// it fits, to step over it.
	readStripped
)

// largeEvents is what a change stream of the store has learnt about
// events over 16 MB: whether the server lacks $changeStreamSplitLargeEvent,
// and how to read past an event it cannot send. The zero value asks for
// the split and reads whole batches. Each stream that reads events keeps
// one, and opens again while retry says so.
type largeEvents struct {
	noSplit bool
	read    readMode
}

// stages returns the stages that end a change stream pipeline of the
// store: updateDescription projected away (and in readStripped the
// document too), and the split of events over 16 MB (which must be the
// last stage) unless the server lacks it.
func (l *largeEvents) stages() bson.A {
	project := bson.D{{Key: "updateDescription", Value: 0}}
	if l.read == readStripped {
		project = append(project, bson.E{Key: "fullDocument", Value: 0})
	}
	stages := bson.A{bson.D{{Key: "$project", Value: project}}}
	if !l.noSplit {
		stages = append(stages, bson.D{{Key: "$changeStreamSplitLargeEvent", Value: bson.D{}}})
	}
	return stages
}

// batchSize returns the batch size of a stream read as l says, given the
// one wanted otherwise (0: the server's default).
func (l *largeEvents) batchSize(size int32) int32 {
	if l.read != readBatches {
		return 1
	}
	return size
}

// retry reports whether opening the stream again as l now says, from the
// last whole event read, gets past err: a server without the split stage,
// or a batch that failed with 10334 (read one event a batch, then the
// failing event without its document). It logs the latter.
func (l *largeEvents) retry(log *slog.Logger, err error) bool {
	if !l.noSplit && noSplitStage(err) {
		l.noSplit = true
		return true
	}
	if l.read == readStripped || !serverCode(err, codeBSONObjectTooLarge) {
		return false
	}
	if l.read == readBatches {
		l.read = readOne
	} else {
		l.read = readStripped
	}
	log.Warn("a change event over 16 MB the server cannot send; reading past it one event at a time", "err", err)
	return true
}

// leftOut reports whether the whole event just read is the one over 16 MB,
// read without its document: it is then left out, and the stream must be
// opened again after it to read whole batches.
func (l *largeEvents) leftOut() bool {
	if l.read != readStripped {
		return false
	}
	l.read = readBatches
	return true
}

// noSplitStage reports whether err is a server's refusal of
// $changeStreamSplitLargeEvent: open the stream again without it.
func noSplitStage(err error) bool {
	return serverCode(err, codeUnknownStage, codeQueryFeatureNotAllowed)
}

// splitEvents joins the fragments of events split by
// $changeStreamSplitLargeEvent. Each fragment carries its own _id and
// splitEvent {fragment: n, of: N} and some of the event's top-level
// fields; the joined event has them all and the last fragment's _id, the
// position to resume after the whole event. The zero value is ready.
type splitEvents struct {
	fields bson.D
	next   int64 // the number of the fragment expected next, 0 for none
}

// add takes one event off a change stream (it copies what it keeps). It
// returns the whole event with done true for an event that was not split
// or for an event's last fragment, done false for an earlier fragment.
func (s *splitEvents) add(raw bson.Raw) (event bson.Raw, done bool, err error) {
	sv, lerr := raw.LookupErr("splitEvent")
	if lerr != nil {
		if s.next != 0 {
			return nil, false, fmt.Errorf("change event: an event after fragment %d of a split event", s.next-1)
		}
		return raw, true, nil
	}
	frag, ok1 := sv.Document().Lookup("fragment").AsInt64OK()
	of, ok2 := sv.Document().Lookup("of").AsInt64OK()
	if !ok1 || !ok2 || frag < 1 || frag > of || frag != max(s.next, 1) {
		return nil, false, fmt.Errorf("change event: fragment %v after fragment %d", sv, s.next-1)
	}
	elems, err := raw.Elements()
	if err != nil {
		return nil, false, fmt.Errorf("change event fragment: %w", err)
	}
	for _, e := range elems {
		if k := e.Key(); k == "splitEvent" || (k == "_id" && frag < of) {
			continue
		}
		v := e.Value()
		s.fields = append(s.fields, bson.E{Key: e.Key(), Value: bson.RawValue{Type: v.Type, Value: slices.Clone(v.Value)}})
	}
	if frag < of {
		s.next = frag + 1
		return nil, false, nil
	}
	out, err := bson.Marshal(s.fields)
	s.fields, s.next = nil, 0
	if err != nil {
		return nil, false, fmt.Errorf("join a split change event: %w", err)
	}
	return out, true, nil
}

// midEvent reports whether the fragments of an event have been read but
// not its last one: no position in between is one to resume after.
func (s *splitEvents) midEvent() bool { return s.next != 0 }

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

// comparePositions compares positions a and b in log order, as
// comparePositionOrder does, where the log has an order. The server
// guarantees bytewise order only between tokens of one format version;
// tokens of different times order by their times, and a high-water mark
// comes before every event of its time. Two events of the same time (a
// transaction's) in different versions have no known order: comparing
// them is an error wrapping ErrInvalidPosition, so that the client holding
// one is reset rather than skipped past changes.
func comparePositions(a, b string) (int, error) {
	if a != b && clusterTimeOf(a) == clusterTimeOf(b) && !isHighWaterMark(a) && !isHighWaterMark(b) {
		va, oka := tokenVersion(a)
		vb, okb := tokenVersion(b)
		if oka != okb || va != vb {
			return 0, fmt.Errorf("positions %.40s and %.40s have the same cluster time but different token versions: %w", a, b, store.ErrInvalidPosition)
		}
	}
	return comparePositionOrder(a, b), nil
}
