// Package bolt is the embedded backend of changecast's store: one process,
// one data directory, orders, messages and their change log in one bbolt
// file (go.etcd.io/bbolt, imported here as bbolt). Its Store implements
// store.Backend.
package bolt

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
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
	formatVersion = 1
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
	logBucket     = []byte("log")    // uint64 seq, big-endian → record JSON
	topicBucket   = []byte("topics") // topic, 0x00, uint64 seq → empty
	orderBucket   = []byte("orders") // order id → Order JSON
	messageBucket = []byte("rooms")  // room, 0x00, message id → Message JSON

	keyFormat     = []byte("format")
	keyDeployment = []byte("deployment") // 8 hex characters, random, made with the database
	keySeq        = []byte("seq")        // newest sequence number in the log
	keyPruned     = []byte("pruned")     // every seq up to this one may be pruned
	keyClock      = []byte("clock")      // unix seconds of the newest id, never decreases
	keyProbe      = []byte("probe")      // unix nanoseconds of Ping's last probe write
)

// errNoChange rolls back a transaction that wrote nothing, sparing a
// commit and its fsync.
var errNoChange = errors.New("no change")

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
	if opts.RetainCount < 0 || opts.RetainAge < 0 || opts.PruneInterval < 0 {
		return nil, fmt.Errorf("open store: negative retention option: %w", store.ErrInvalid)
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
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	path := filepath.Join(dir, fileName)
	// bbolt cannot survive a damaged file (see bolt_check.go): check it
	// first, with plain reads.
	if err := checkFile(path); err != nil {
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
	var head uint64
	err = b.update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{metaBucket, logBucket, topicBucket, orderBucket, messageBucket} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket(metaBucket)
		if v := meta.Get(keyFormat); v != nil {
			if f := decodeUint(v); f != formatVersion {
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
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	b.head.Store(head)

	pruneCtx, cancel := context.WithCancel(context.Background())
	b.stopPruner = cancel
	b.wg.Add(2)
	go b.runCommitter()
	go b.runPruner(pruneCtx)
	return b, nil
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

// CreateOrder stores a new order for customer with status placed and
// version 1, and logs an insert change. It returns an error wrapping
// ErrInvalid if a field is bad.
func (b *Store) CreateOrder(ctx context.Context, customer string, items []store.Item) (store.Order, error) {
	if err := store.ValidateOrder(customer, items); err != nil {
		return store.Order{}, fmt.Errorf("create order: %w", err)
	}
	items = slices.Clone(items)
	var o store.Order
	err := b.submit(ctx, func(t *txn) error {
		seq := t.alloc()
		o = store.Order{
			ID:        t.id(seq),
			Customer:  customer,
			Items:     items,
			Status:    store.StatusPlaced,
			Version:   1,
			CreatedAt: t.now,
			UpdatedAt: t.now,
		}
		t.putJSON(orderBucket, []byte(o.ID), &o)
		t.append(seq, &record{Topic: store.OrderTopic(o.ID), Op: store.OpInsert, Order: &o})
		return nil
	})
	if err != nil {
		return store.Order{}, fmt.Errorf("create order: %w", err)
	}
	return o, nil
}

// GetOrder returns the order with id, or an error wrapping ErrNotFound
// (also for a malformed id).
func (b *Store) GetOrder(ctx context.Context, id string) (store.Order, error) {
	if !store.ValidOrderID(id) {
		return store.Order{}, fmt.Errorf("get order %.40q: %w", id, store.ErrNotFound)
	}
	var o store.Order
	err := b.view(ctx, func(tx *bbolt.Tx) error {
		var err error
		o, err = getOrder(tx, id)
		return err
	})
	if err != nil {
		return store.Order{}, fmt.Errorf("get order %s: %w", id, err)
	}
	return o, nil
}

// getOrder reads an order, or returns ErrNotFound.
func getOrder(tx *bbolt.Tx, id string) (store.Order, error) {
	v := tx.Bucket(orderBucket).Get([]byte(id))
	if v == nil {
		return store.Order{}, store.ErrNotFound
	}
	var o store.Order
	if err := json.Unmarshal(v, &o); err != nil {
		return store.Order{}, fmt.Errorf("decode order: %w", err)
	}
	return o, nil
}

// UpdateOrderStatus moves order id to status, increments its version, sets
// UpdatedAt and logs an update change. ifVersion 0 accepts any current
// version. Errors wrap, checked in this order: ErrNotFound (unknown or
// malformed id), ErrVersionMismatch (ifVersion is not the current version),
// ErrInvalid (unknown status or negative ifVersion), ErrConflict (transition
// not allowed).
func (b *Store) UpdateOrderStatus(ctx context.Context, id, status string, ifVersion int64) (store.Order, error) {
	if !store.ValidOrderID(id) {
		return store.Order{}, fmt.Errorf("update order %.40q: %w", id, store.ErrNotFound)
	}
	if ifVersion < 0 {
		return store.Order{}, fmt.Errorf("update order %s: version %d: %w", id, ifVersion, store.ErrInvalid)
	}
	var o store.Order
	err := b.submit(ctx, func(t *txn) error {
		var err error
		if o, err = getOrder(t.tx, id); err != nil {
			return err
		}
		if ifVersion != 0 && ifVersion != o.Version {
			return fmt.Errorf("have version %d, want %d: %w", o.Version, ifVersion, store.ErrVersionMismatch)
		}
		if err := store.CheckTransition(o.Status, status); err != nil {
			return err
		}
		o.Status = status
		o.Version++
		o.UpdatedAt = t.now
		t.putJSON(orderBucket, []byte(o.ID), &o)
		t.append(t.alloc(), &record{Topic: store.OrderTopic(o.ID), Op: store.OpUpdate, Order: &o})
		return nil
	})
	if err != nil {
		return store.Order{}, fmt.Errorf("update order %s: %w", id, err)
	}
	return o, nil
}

// PostMessage stores a new message in room and logs an insert change. Its
// id is greater than every id made before it. It returns an error wrapping
// ErrInvalid if a field is bad.
func (b *Store) PostMessage(ctx context.Context, room, author, text string) (store.Message, error) {
	if err := store.ValidateMessage(room, author, text); err != nil {
		return store.Message{}, fmt.Errorf("post message: %w", err)
	}
	var m store.Message
	err := b.submit(ctx, func(t *txn) error {
		seq := t.alloc()
		m = store.Message{ID: t.id(seq), Room: room, Author: author, Text: text, CreatedAt: t.now}
		t.putJSON(messageBucket, messageKey(room, m.ID), &m)
		t.append(seq, &record{Topic: store.RoomTopic(room), Op: store.OpInsert, Message: &m})
		return nil
	})
	if err != nil {
		return store.Message{}, fmt.Errorf("post message to %s: %w", room, err)
	}
	return m, nil
}

// ListMessages returns up to limit messages of room, oldest first: the
// newest ones if before is "", else the newest with an id less than before.
// It returns an error wrapping ErrInvalid for a bad room, a limit outside
// 1..MaxListLimit or a malformed before. An unknown room has no messages.
func (b *Store) ListMessages(ctx context.Context, room, before string, limit int) ([]store.Message, error) {
	if !store.ValidRoom(room) {
		return nil, fmt.Errorf("list messages: room %.70q: %w", room, store.ErrInvalid)
	}
	if limit < 1 || limit > store.MaxListLimit {
		return nil, fmt.Errorf("list messages: limit must be 1 to %d: %w", store.MaxListLimit, store.ErrInvalid)
	}
	if before != "" && !store.ValidOrderID(before) {
		return nil, fmt.Errorf("list messages: before %.40q is not a message id: %w", before, store.ErrInvalid)
	}
	var out []store.Message
	err := b.view(ctx, func(tx *bbolt.Tx) error {
		var err error
		out, err = lastMessages(tx, room, before, limit)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list messages in %s: %w", room, err)
	}
	return out, nil
}

// lastMessages returns the last limit messages of room before id before
// ("" = newest), oldest first; never nil.
func lastMessages(tx *bbolt.Tx, room, before string, limit int) ([]store.Message, error) {
	prefix := messageKey(room, "")
	seek := messageKey(room, before)
	if before == "" {
		seek[len(seek)-1]++ // just past every key of the room
	}
	c := tx.Bucket(messageBucket).Cursor()
	k, v := c.Seek(seek)
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	out := make([]store.Message, 0, min(limit, store.SnapshotMessages))
	for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Prev() {
		var m store.Message
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("decode message %s: %w", k[len(prefix):], err)
		}
		out = append(out, m)
	}
	slices.Reverse(out)
	return out, nil
}

// Snapshot returns the current state of each topic, in the order given, and
// the position of the newest change it reflects, all read in one
// transaction: every change up to the position and none after it. An
// order topic holds the order (nil if it does not exist); a room topic its
// last SnapshotMessages messages, oldest first. It returns an error
// wrapping ErrInvalid for a malformed topic.
func (b *Store) Snapshot(ctx context.Context, topics []string) ([]store.Snapshot, string, error) {
	for _, topic := range topics {
		if _, _, ok := store.ParseTopic(topic); !ok {
			return nil, "", fmt.Errorf("snapshot: topic %.80q: %w", topic, store.ErrInvalid)
		}
	}
	out := make([]store.Snapshot, 0, len(topics))
	var seq uint64
	err := b.view(ctx, func(tx *bbolt.Tx) error {
		seq = decodeUint(tx.Bucket(metaBucket).Get(keySeq))
		for _, topic := range topics {
			kind, key, _ := store.ParseTopic(topic)
			s := store.Snapshot{Topic: topic}
			if kind == store.KindOrder {
				o, err := getOrder(tx, key)
				switch {
				case err == nil:
					s.Order = &o
				case !errors.Is(err, store.ErrNotFound):
					return fmt.Errorf("%s: %w", topic, err)
				}
			} else {
				msgs, err := lastMessages(tx, key, "", store.SnapshotMessages)
				if err != nil {
					return fmt.Errorf("%s: %w", topic, err)
				}
				s.Messages = msgs
			}
			out = append(out, s)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("snapshot: %w", err)
	}
	return out, b.pos(seq), nil
}

// messageKey is a message's key: room, 0x00, id. No room name contains
// 0x00, so one room's keys are contiguous and ordered by id.
func messageKey(room, id string) []byte {
	k := make([]byte, 0, len(room)+1+len(id))
	k = append(k, room...)
	k = append(k, 0)
	return append(k, id...)
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

// write is one write waiting for the committer.
type write struct {
	ctx context.Context
	// apply validates and then writes, within the group's transaction. It
	// returns the write's own error (the write is then skipped and must have
	// written nothing); storage failures go to txn.err.
	apply func(t *txn) error
	done  chan error // buffered; receives exactly one answer
}

// txn is the state of one group transaction.
type txn struct {
	tx    *bbolt.Tx
	now   time.Time // commit time of every change in the group
	seq   uint64    // newest seq allocated
	clock uint64    // unix seconds used in ids; never decreases
	err   error     // first storage error; aborts the group
}

// alloc returns the next sequence number.
func (t *txn) alloc() uint64 {
	t.seq++
	return t.seq
}

// id returns the id for the document written by change seq: 8 hex of unix
// seconds then 16 hex of seq. Seconds never decrease, even if the wall
// clock does, so ids increase strictly.
func (t *txn) id(seq uint64) string {
	t.clock = max(t.clock, uint64(max(t.now.Unix(), 0)))
	return fmt.Sprintf("%08x%016x", uint32(t.clock), seq)
}

func (t *txn) put(bucket, key, value []byte) {
	if t.err != nil {
		return
	}
	if err := t.tx.Bucket(bucket).Put(key, value); err != nil {
		t.err = fmt.Errorf("put %s: %w", bucket, err)
	}
}

func (t *txn) putJSON(bucket, key []byte, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		if t.err == nil {
			t.err = fmt.Errorf("encode %s: %w", bucket, err)
		}
		return
	}
	t.put(bucket, key, data)
}

// submit queues a write for the committer and waits for its answer. A
// write whose ctx ends before its group starts is not applied; once queued,
// it is answered whatever happens to ctx, so a nil error always means
// committed and a non-nil one means not applied.
func (b *Store) submit(ctx context.Context, apply func(*txn) error) error {
	if b.isClosed() {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &write{ctx: ctx, apply: apply, done: make(chan error, 1)}
	select {
	case b.queue <- w:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.closing:
		return store.ErrClosed
	}
	select {
	case err := <-w.done:
		return err
	case <-b.committerDone:
		select {
		case err := <-w.done:
			return err
		default:
			return store.ErrClosed
		}
	}
}

// runCommitter takes every queued write and commits them together, until
// Close. While one group commits, new writes queue for the next.
func (b *Store) runCommitter() {
	defer b.wg.Done()
	defer close(b.committerDone)
	group := make([]*write, 0, queueSize)
	for {
		select {
		case <-b.closing:
			return
		case w := <-b.queue:
			group = append(group[:0], w)
		drain:
			for len(group) < queueSize {
				select {
				case w := <-b.queue:
					group = append(group, w)
				default:
					break drain
				}
			}
			b.taken.Add(int64(len(group)))
			b.commit(group)
			clear(group)
		}
	}
}

// commit applies a group of writes in one transaction and answers each
// writer after the commit. A write's own error fails only that write. If
// the transaction itself fails, each write is retried alone, so a write
// that breaks the transaction does not take the others with it.
func (b *Store) commit(group []*write) {
	errs := make([]error, len(group))
	var head uint64
	now := b.now().UTC().Truncate(time.Millisecond)
	err := b.update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		t := &txn{
			tx:    tx,
			now:   now,
			seq:   decodeUint(meta.Get(keySeq)),
			clock: decodeUint(meta.Get(keyClock)),
		}
		start := t.seq
		for i, w := range group {
			if err := w.ctx.Err(); err != nil {
				errs[i] = fmt.Errorf("not applied: %w", err)
				continue
			}
			errs[i] = w.apply(t)
			if t.err != nil {
				return t.err
			}
		}
		if t.seq == start {
			return errNoChange
		}
		t.put(metaBucket, keySeq, seqKey(t.seq))
		t.put(metaBucket, keyClock, seqKey(t.clock))
		head = t.seq
		return t.err
	})
	switch {
	case err == nil:
		b.head.Store(head)
		b.commits.Add(1)
		b.wake()
	case errors.Is(err, errNoChange):
	case len(group) > 1:
		b.log.Warn("group commit failed; committing its writes one by one", "writes", len(group), "err", err)
		for _, w := range group {
			b.commit([]*write{w})
		}
		return
	default:
		errs[0] = fmt.Errorf("commit: %w", err)
	}
	for i, w := range group {
		w.done <- errs[i]
	}
}

// wake tells every Follow waiting for a commit that one happened.
func (b *Store) wake() {
	b.notifyMu.Lock()
	close(b.notify)
	b.notify = make(chan struct{})
	b.notifyMu.Unlock()
}

// waiter returns a channel that is closed by the next commit.
func (b *Store) waiter() <-chan struct{} {
	b.notifyMu.Lock()
	defer b.notifyMu.Unlock()
	return b.notify
}
