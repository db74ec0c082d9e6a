// Package bolt is the embedded backend of changecast's store: one process,
// one data directory, orders, messages and their change log in one bbolt
// file (go.etcd.io/bbolt, imported here as bbolt). Its Store implements
// store.Backend.
package bolt

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"changecast/store"
)

// Defaults for the zero fields of Options.
const (
	defaultRetainCount   = 1_000_000
	defaultRetainAge     = 7 * 24 * time.Hour
	defaultPruneInterval = time.Minute
)

const (
	// fileName is the database file inside the data directory.
	fileName = "changecast.db"
	// formatVersion is the on-disk layout version kept in the meta bucket.
	// Version 2 added the list topics to the log's index and the order
	// indexes by customer and of active orders; a version 1 file is
	// brought up to it when opened (see migrate).
	formatVersion = 2
	// openTimeout bounds the wait for the file lock, so a second process
	// on the same data directory fails at once instead of hanging.
	openTimeout = time.Second
	// queueSize is how many writes may wait for the committer. It is
	// well above the number of requests one process writes at once, so a
	// writer practically never waits to enqueue; it also caps one group.
	queueSize = 1024
	// probeInterval is the least time between two probe writes by Ping
	// while the last write failed: often enough that readiness comes back
	// within a probe period or two of the disk recovering, rarely enough
	// that a flood of /readyz requests cannot turn into a flood of fsyncs.
	probeInterval = time.Second
)

// Buckets and meta keys. The bucket names are storage names, fixed by the
// files already written, not topic kinds, so they stay literals even where
// they equal one (orders, rooms).
var (
	metaBucket    = []byte("meta")
	logBucket     = []byte("log")                // uint64 seq, big-endian → record JSON
	topicBucket   = []byte("topics")             // topic, 0x00, uint64 seq → empty
	orderBucket   = []byte("orders")             // order id → Order JSON
	messageBucket = []byte("rooms")              // room, 0x00, message id → Message JSON
	byCustomer    = []byte("orders-by-customer") // customer, 0x00, order id → empty
	activeBucket  = []byte("orders-active")      // order id of an active order → empty

	keyFormat     = []byte("format")
	keyDeployment = []byte("deployment") // 8 hex characters, random, made with the database
	keySeq        = []byte("seq")        // newest sequence number in the log
	keyPruned     = []byte("pruned")     // every seq up to this one may be pruned
	keyClock      = []byte("clock")      // unix seconds of the newest id, never decreases
	keyProbe      = []byte("probe")      // unix nanoseconds of Ping's last probe write
	keyRestore    = []byte("restore")    // set in a backup copy (MarkRestore); the next open moves the log on
	keyLost       = []byte("lost")       // after, upTo: the positions a restore left with no change behind them
)

// restoreGap is how far a store opened from a backup copy moves its log's
// sequence on: every position the original store may have made after the
// copy was taken is then behind the new head, in a range no change of the
// restored store will ever hold.
const restoreGap = 1 << 40

// Options configures an embedded store. The zero value of every field
// selects its default.
type Options struct {
	// RetainCount is the most changes the log keeps: older ones are
	// pruned. Default 1,000,000.
	RetainCount int
	// RetainAge is the longest the log keeps a change. A change is pruned
	// once it is beyond either limit. Default 7 days.
	RetainAge time.Duration
	// PruneInterval is how often the log is pruned. Default 1 minute.
	PruneInterval time.Duration
	// Logger receives the pruner's reports. Default slog.Default().
	Logger *slog.Logger
}

// Store is the embedded store: orders, messages and their change log in one
// bbolt file. Concurrent writes are grouped into one transaction and one
// fsync; a change is in the log exactly when its write committed. A Store is
// safe for concurrent use. It owns two goroutines (the committer and the
// pruner), which Close stops.
type Store struct {
	db         *bbolt.DB
	deployment string // 8 hex characters; the prefix of every position
	log        *slog.Logger
	opts       Options
	now        func() time.Time

	queue         chan *write
	closing       chan struct{} // closed by Close
	closeOnce     sync.Once
	committerDone chan struct{} // closed when the committer has answered its last write
	stopPruner    context.CancelFunc
	wg            sync.WaitGroup

	head    atomic.Uint64 // newest committed seq; may lag the database by one commit
	commits atomic.Uint64 // write transactions the committer committed
	taken   atomic.Int64  // writes the committer has taken from the queue

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after every commit

	// ahead keeps zeros written past the last page (ahead.go); nil if
	// the file could not be opened for it. The committer's alone.
	ahead *ahead

	writeMu    sync.Mutex
	writeErr   error     // error of the latest write transaction; nil once one succeeds
	writeErrAt time.Time // when it failed
}

// Store keeps the contract of every backend.
var _ store.Backend = (*Store)(nil)

// Open opens (creating if needed) the embedded store in directory dir,
// in the file changecast.db, and starts its committer and pruner. Only one
// process may have a directory open; another gets an error after a second.
// The caller must Close the store.
func Open(dir string, opts Options) (*Store, error) {
	return open(dir, opts, time.Now)
}

// open is Open with a clock, for tests.
func open(dir string, opts Options, now func() time.Time) (*Store, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	path := filepath.Join(dir, fileName)
	db, err := openDB(path, opts.Logger)
	if err != nil {
		return nil, err
	}
	b := &Store{
		db:            db,
		log:           opts.Logger,
		opts:          opts,
		now:           now,
		queue:         make(chan *write, queueSize),
		closing:       make(chan struct{}),
		committerDone: make(chan struct{}),
		notify:        make(chan struct{}),
	}
	if err := b.initMeta(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if b.ahead, err = openAhead(path); err != nil {
		b.log.Warn("commits write into new blocks of the file", "err", err)
	}

	pruneCtx, cancel := context.WithCancel(context.Background())
	b.stopPruner = cancel
	b.wg.Add(2)
	go b.runCommitter()
	go b.runPruner(pruneCtx)
	return b, nil
}

// withDefaults returns opts with every zero field set to its default, or
// an error wrapping store.ErrInvalid for a negative one.
func (opts Options) withDefaults() (Options, error) {
	if opts.RetainCount < 0 || opts.RetainAge < 0 || opts.PruneInterval < 0 {
		return opts, fmt.Errorf("open store: negative retention option: %w", store.ErrInvalid)
	}
	if opts.RetainCount == 0 {
		opts.RetainCount = defaultRetainCount
	}
	if opts.RetainAge == 0 {
		opts.RetainAge = defaultRetainAge
	}
	if opts.PruneInterval == 0 {
		opts.PruneInterval = defaultPruneInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return opts, nil
}

// openDB checks the file at path and opens it with bbolt. An unfinished
// file (see unfinished.go) is replaced by a new store, and log says so.
func openDB(path string, log *slog.Logger) (*bbolt.DB, error) {
	// bbolt cannot survive a damaged file (see check.go): check it
	// first, with plain reads.
	if err := checkFile(path); errors.Is(err, errUnfinished) {
		log.Warn("replacing a store file that holds no data, left by a start that never completed", "path", path)
		if err := removeUnfinished(path); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	// Every commit is fsynced (no NoSync). The free-page list is not
	// written at each commit but rebuilt when the file is opened: pruning
	// frees many pages, and writing that list each commit would make every
	// write pay for it. Recovery after a crash is unaffected.
	var db *bbolt.DB
	err := guard(func() error {
		var err error
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{
			Timeout:        openTimeout,
			FreelistType:   bbolt.FreelistMapType,
			NoFreelistSync: true,
		})
		return err
	})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: in use by another process: %w", path, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return db, nil
}

// initMeta creates the buckets and the meta keys of a new file, checks
// those of an existing one, and loads the deployment id and the head.
func (b *Store) initMeta() error {
	var head uint64
	err := b.update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{metaBucket, logBucket, topicBucket, orderBucket, messageBucket, byCustomer, activeBucket} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(metaBucket)
		if v := meta.Get(keyFormat); v != nil {
			switch f := decodeUint(v); f {
			case formatVersion:
			case 1:
				if err := migrate(tx); err != nil {
					return fmt.Errorf("migrate format 1 to %d: %w", formatVersion, err)
				}
				if err := meta.Put(keyFormat, seqKey(formatVersion)); err != nil {
					return err
				}
			default:
				return fmt.Errorf("unsupported format %d (want %d)", f, formatVersion)
			}
		} else if err := meta.Put(keyFormat, seqKey(formatVersion)); err != nil {
			return err
		}
		dep := meta.Get(keyDeployment)
		if dep == nil {
			var r [4]byte
			if _, err := rand.Read(r[:]); err != nil {
				return err
			}
			dep = []byte(hex.EncodeToString(r[:]))
			if err := meta.Put(keyDeployment, dep); err != nil {
				return err
			}
		}
		if len(dep) != deploymentLen || !isHex(string(dep)) {
			return fmt.Errorf("corrupt deployment id %q", dep)
		}
		b.deployment = string(dep)
		head = decodeUint(meta.Get(keySeq))
		if meta.Get(keyRestore) != nil {
			moved, err := moveOn(meta, head)
			if err != nil {
				return err
			}
			b.log.Warn("store opened from a backup copy: positions after the copy are lost; clients holding one are reset",
				"copy", b.pos(head), "next", b.pos(moved+1))
			head = moved
		}
		return nil
	})
	if err != nil {
		return err
	}
	b.head.Store(head)
	return nil
}

// Close stops the committer and the pruner, waits for them, and closes the
// database. Writes still queued fail with ErrClosed; a Follow in progress
// returns ErrClosed. Calls after Close return errors wrapping ErrClosed.
func (b *Store) Close() error {
	err := fmt.Errorf("close store: %w", store.ErrClosed)
	b.closeOnce.Do(func() {
		close(b.closing)
		b.stopPruner()
		b.wg.Wait()
		err = b.db.Close()
		if err != nil {
			err = fmt.Errorf("close store: %w", err)
		}
		if b.ahead != nil {
			b.ahead.close()
		}
	})
	return err
}

// isClosed reports whether Close has been called.
func (b *Store) isClosed() bool {
	select {
	case <-b.closing:
		return true
	default:
		return false
	}
}

// Ping returns nil if the database can be read and its latest write
// succeeded, or an error (wrapping ErrClosed after Close). While the latest
// write failed (a full disk, say), Ping itself tries a small write at most
// every probeInterval, so the store reports healthy again once writes
// succeed, even if nobody else writes.
func (b *Store) Ping(ctx context.Context) error {
	err := b.view(ctx, func(tx *bbolt.Tx) error {
		if tx.Bucket(metaBucket) == nil {
			return errors.New("meta bucket missing")
		}
		return nil
	})
	if err == nil {
		err = b.probe()
	}
	if err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// probe returns nil if the latest write succeeded. Otherwise it tries a
// probe write, unless the latest failure is younger than
// probeInterval, and returns its error.
func (b *Store) probe() error {
	b.writeMu.Lock()
	werr, at := b.writeErr, b.writeErrAt
	b.writeMu.Unlock()
	if werr == nil {
		return nil
	}
	if b.now().Sub(at) < probeInterval {
		return fmt.Errorf("latest write failed: %w", werr)
	}
	err := b.update(func(tx *bbolt.Tx) error {
		return tx.Bucket(metaBucket).Put(keyProbe, seqKey(uint64(b.now().UnixNano())))
	})
	if err != nil {
		return fmt.Errorf("probe write failed: %w", err)
	}
	return nil
}

// update runs fn in a write transaction, turning damage met on the way into
// an error, and records whether the write failed, for Ping.
func (b *Store) update(fn func(*bbolt.Tx) error) error {
	err := guard(func() error { return b.db.Update(fn) })
	if errors.Is(err, errNoChange) {
		return err
	}
	b.writeMu.Lock()
	b.writeErr, b.writeErrAt = err, b.now()
	b.writeMu.Unlock()
	return err
}

// view runs fn in a read transaction, mapping a closed database to ErrClosed.
func (b *Store) view(ctx context.Context, fn func(*bbolt.Tx) error) error {
	if b.isClosed() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := guard(func() error { return b.db.View(fn) })
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return store.ErrClosed
	}
	return err
}

// seqKey encodes a sequence number so keys sort like numbers.
func seqKey(seq uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, seq)
}

// decodeUint decodes a seqKey; a missing value is 0.
func decodeUint(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// isHex reports whether s is lower-case hex.
func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
