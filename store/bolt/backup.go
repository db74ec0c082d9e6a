package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"changecast/store"
)

// Backups and offline checks of the embedded store.
//
// Backup copies the file as one read transaction sees it (bbolt's
// Tx.WriteTo): a consistent snapshot, taken while the store keeps serving
// and committing. The copy is a store file like any other: a server
// started on it opens it, and its positions are the deployment's, so
// clients resume from it. Inspect reads such a file without a server.

// Backup writes a consistent copy of the store file to w and returns how
// many bytes it wrote. The copy holds every write committed before Backup
// began and none that commits while it runs; writes go on meanwhile
// (a write that must grow the file waits for the copy to end: bbolt
// cannot move its memory map under an open reader). It stops early with
// ctx's error when ctx ends. Errors wrap ErrClosed after Close. Backup is
// safe for concurrent use.
func (b *Store) Backup(ctx context.Context, w io.Writer) (int64, error) {
	var n int64
	err := b.view(ctx, func(tx *bbolt.Tx) error {
		var err error
		n, err = tx.WriteTo(ctxWriter{ctx, w})
		return err
	})
	if err != nil {
		return n, fmt.Errorf("backup: %w", err)
	}
	return n, nil
}

// ctxWriter is a Writer that fails once its context ends, so a copy
// whose reader has gone stops instead of holding its transaction.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// Report is what Inspect finds in a store file.
type Report struct {
	// Path is the file inspected.
	Path string
	// Size is the file's size in bytes; PageSize its page size.
	Size     int64
	PageSize int
	// Format is the store's format version (see formatVersion); a
	// server brings format 1 up to date when it opens the file.
	Format uint64
	// Deployment is the prefix of every position the store made.
	Deployment string
	// Orders counts the orders, ActiveOrders those neither delivered
	// nor cancelled; Messages counts the messages of every room.
	Orders, ActiveOrders, Messages int
	// Changes counts the changes the log keeps, from position First to
	// Last (both "" when it keeps none). Head is the newest position the
	// store made: Last, or later if the log was pruned to nothing.
	Changes     int
	First, Last string
	Head        string
	// Restore says the file is a copy marked by MarkRestore: a server
	// started on it moves its log past the original's.
	Restore bool
}

// String describes r in a few lines, for people.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: a changecast store, format %d, deployment %s\n", r.Path, r.Format, r.Deployment)
	fmt.Fprintf(&b, "  %d bytes in pages of %d\n", r.Size, r.PageSize)
	fmt.Fprintf(&b, "  orders: %d (%d active)\n", r.Orders, r.ActiveOrders)
	fmt.Fprintf(&b, "  messages: %d\n", r.Messages)
	if r.Changes == 0 {
		fmt.Fprintf(&b, "  change log: empty (head %s)\n", r.Head)
	} else {
		fmt.Fprintf(&b, "  change log: %d changes, %s..%s (head %s)\n", r.Changes, r.First, r.Last, r.Head)
	}
	if r.Restore {
		fmt.Fprintf(&b, "  a backup copy: a server started on it moves its log on past %s, so ids the original made after the copy reset their clients\n", r.Head)
	}
	return b.String()
}

// Inspect checks the store file at path and reports what it holds. It
// runs the check a server runs before opening a file, then opens the file
// read-only and runs bbolt's own check of every page; it never writes
// the file, and never creates one that does not exist. A damaged file is
// an error wrapping ErrDamaged; a file a running server holds is an error
// saying so (take a copy with Backup instead).
func Inspect(path string) (Report, error) {
	r := Report{Path: path}
	st, err := os.Stat(path)
	if err != nil {
		return r, fmt.Errorf("inspect: %w", err)
	}
	if !st.Mode().IsRegular() {
		return r, fmt.Errorf("inspect %s: not a regular file", path)
	}
	r.Size = st.Size()
	if err := checkFile(path); err != nil {
		return r, err
	}
	var db *bbolt.DB
	err = guard(func() error {
		var err error
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{
			ReadOnly: true,
			Timeout:  openTimeout,
			// Never create the file, even if it vanished since Stat.
			OpenFile: openExisting,
		})
		return err
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return r, fmt.Errorf("inspect %s: a running server holds it; take a copy with changecast backup and check that: %w", path, err)
	}
	if err != nil {
		return r, fmt.Errorf("inspect %s: %w", path, err)
	}
	defer db.Close()
	r.PageSize = db.Info().PageSize
	err = guard(func() error {
		return db.View(func(tx *bbolt.Tx) error {
			for err := range tx.Check() {
				return fmt.Errorf("%w: bbolt's check: %v", ErrDamaged, err)
			}
			return r.read(tx)
		})
	})
	if err != nil {
		return r, fmt.Errorf("inspect %s: %w", path, err)
	}
	return r, nil
}

// read fills r's counts and positions from tx.
func (r *Report) read(tx *bbolt.Tx) error {
	meta := tx.Bucket(metaBucket)
	if meta == nil {
		return fmt.Errorf("%w: not a changecast store: no %s bucket", ErrDamaged, metaBucket)
	}
	r.Format = decodeUint(meta.Get(keyFormat))
	if r.Format < 1 || r.Format > formatVersion {
		return fmt.Errorf("%w: unknown format %d (this changecast reads 1 to %d)", ErrDamaged, r.Format, formatVersion)
	}
	// Format 1 has no order indexes: a server adds them when it opens it.
	names := [][]byte{logBucket, topicBucket, orderBucket, messageBucket}
	if r.Format == formatVersion {
		names = append(names, byCustomer, activeBucket)
	}
	for _, name := range names {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("%w: not a changecast store: no %s bucket", ErrDamaged, name)
		}
	}
	dep := meta.Get(keyDeployment)
	if len(dep) != deploymentLen || !isHex(string(dep)) {
		return fmt.Errorf("%w: corrupt deployment id %q", ErrDamaged, dep)
	}
	r.Deployment = string(dep)
	r.Restore = meta.Get(keyRestore) != nil
	// pos needs only the deployment.
	at := (&Store{deployment: r.Deployment}).pos
	r.Head = at(decodeUint(meta.Get(keySeq)))
	r.Orders = tx.Bucket(orderBucket).Stats().KeyN
	if active := tx.Bucket(activeBucket); active != nil {
		r.ActiveOrders = active.Stats().KeyN
	} else if err := countActive(tx, &r.ActiveOrders); err != nil {
		return err
	}
	r.Messages = tx.Bucket(messageBucket).Stats().KeyN
	log := tx.Bucket(logBucket)
	r.Changes = log.Stats().KeyN
	c := log.Cursor()
	if k, _ := c.First(); k != nil {
		r.First = at(decodeUint(k))
	}
	if k, _ := c.Last(); k != nil {
		r.Last = at(decodeUint(k))
	}
	return nil
}

// countActive counts the active orders of a format 1 file, which has no
// index of them, into n.
func countActive(tx *bbolt.Tx, n *int) error {
	return tx.Bucket(orderBucket).ForEach(func(k, v []byte) error {
		var o store.Order
		if err := json.Unmarshal(v, &o); err != nil {
			return fmt.Errorf("%w: decode order %s: %v", ErrDamaged, k, err)
		}
		if store.Active(o.Status) {
			*n++
		}
		return nil
	})
}

// MarkRestore marks the store file at path, a copy made by Backup, as one
// to restore: the first store opened on it (Open) moves its log's
// sequence on by restoreGap before its first write, and remembers the
// positions in between as lost. A client that saw changes the original
// store made after the copy holds such a position: resuming from it is
// refused as history lost (the client gets a reset and a snapshot)
// instead of passing silently over the restored store's own new changes
// at those positions. The file must not be in use.
func MarkRestore(path string) error {
	if err := checkFile(path); err != nil {
		return err
	}
	var db *bbolt.DB
	err := guard(func() error {
		var err error
		db, err = bbolt.Open(path, 0o600, &bbolt.Options{Timeout: openTimeout, OpenFile: openExisting})
		return err
	})
	if err != nil {
		return fmt.Errorf("mark %s for restore: %w", path, err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		meta := tx.Bucket(metaBucket)
		if meta == nil {
			return fmt.Errorf("no %q bucket: %w", metaBucket, ErrDamaged)
		}
		return meta.Put(keyRestore, []byte{1})
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("mark %s for restore: %w", path, err)
	}
	return nil
}

// openExisting opens a file bbolt asks for, never creating it.
func openExisting(name string, flag int, perm os.FileMode) (*os.File, error) {
	return os.OpenFile(name, flag&^os.O_CREATE, perm)
}

// moveOn moves the log of a store opened from a copy marked by
// MarkRestore past every position the original may have made after head,
// records the positions skipped as lost, and unmarks the copy. It returns
// the new head.
func moveOn(meta *bbolt.Bucket, head uint64) (uint64, error) {
	moved := head + restoreGap
	lost := append(seqKey(head), seqKey(moved)...)
	for _, kv := range [][2][]byte{{keySeq, seqKey(moved)}, {keyLost, lost}} {
		if err := meta.Put(kv[0], kv[1]); err != nil {
			return 0, err
		}
	}
	return moved, meta.Delete(keyRestore)
}
