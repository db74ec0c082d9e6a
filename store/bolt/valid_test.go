package bolt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"changecast/store"
)

// The start-up check against bbolt's own (the differential oracle).
// TestCheckAgreesWithBbolt builds random valid stores through the real
// write path and requires that checkFile accepts every one and that
// bbolt's Tx.Check finds nothing in it; then it damages copies of each and
// requires that whatever checkFile accepts, bbolt opens, checks clean and
// reads through without faulting. The number of stores comes from
// CHANGECAST_CHECK_STORES (default checkStores, a few seconds), the seed
// from CHANGECAST_CHECK_SEED (default random; a failure names it).

// checkStores is how many stores the normal run builds.
const checkStores = 8

// chars are the characters texts and SKUs are made of: 1 to 4 bytes of
// UTF-8 each.
var chars = []string{"x", "é", "中", "😀"}

// randText returns a message text of 1 to MaxTextLen characters, often
// one of the extremes, in 1-, 2-, 3- or 4-byte characters or a mix.
func randText(r *rand.Rand) string {
	n := []int{1, 1 + r.IntN(100), 1 + r.IntN(store.MaxTextLen), store.MaxTextLen}[r.IntN(4)]
	if c := r.IntN(len(chars) + 1); c < len(chars) {
		return strings.Repeat(chars[c], n)
	}
	var sb strings.Builder
	for range n {
		sb.WriteString(chars[r.IntN(len(chars))])
	}
	return sb.String()
}

// randItems returns 1 to MaxItems line items, often the most, with SKUs
// of 1 to MaxNameLen bytes.
func randItems(r *rand.Rand) []store.Item {
	items := make([]store.Item, []int{1, 1 + r.IntN(store.MaxItems), store.MaxItems}[r.IntN(3)])
	for i := range items {
		c := chars[r.IntN(len(chars))]
		items[i] = store.Item{SKU: strings.Repeat(c, 1+r.IntN(store.MaxNameLen/len(c))), Qty: 1 + r.IntN(store.MaxQty)}
	}
	return items
}

// nextStatus maps a status to those an order may move to from it.
var nextStatus = map[string][]string{
	store.StatusPlaced:         {store.StatusPreparing, store.StatusCancelled},
	store.StatusPreparing:      {store.StatusOutForDelivery, store.StatusCancelled},
	store.StatusOutForDelivery: {store.StatusDelivered},
}

// storeStats counts what the stores built hold, by bbolt's own count.
type storeStats struct {
	stores, records, branchPages, overflowPages, freePages, bytes int
	damaged, refused                                              int
}

// buildRandomStore builds a random valid store in dir with the real
// write path: messages and orders of every size the API accepts,
// status changes, pruning by count and age, closing and reopening, a
// group of concurrent writes, now and then a record larger than the API
// accepts, and, with large, growth past 4 MiB. A quarter of the stores
// start as a format 1 file that Open migrates.
func buildRandomStore(t *testing.T, dir string, r *rand.Rand, large bool) {
	t.Helper()
	ctx := context.Background()
	if r.IntN(4) == 0 {
		writeFormat1(t, filepath.Join(dir, fileName), r, r.IntN(150))
	}
	clock := newFakeClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	opts := Options{PruneInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	if r.IntN(2) == 0 {
		opts.RetainCount = 10 + r.IntN(400)
	}
	if r.IntN(2) == 0 {
		opts.RetainAge = time.Duration(1+r.IntN(120)) * time.Minute
	}
	b, err := open(dir, opts, clock.Now)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer func() {
		if b != nil {
			b.Close()
		}
	}()
	var orders []store.Order
	burst := func(writers, each int, text func() string) {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for range each {
					if _, err := b.PostMessage(ctx, fmt.Sprintf("burst-%d", w), "w", text()); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
	}
	var mu sync.Mutex // r is not safe for concurrent use
	randLong := func() string { mu.Lock(); defer mu.Unlock(); return randText(r) }
	for range 20 + r.IntN(200) {
		switch op := r.IntN(100); {
		case op < 40:
			if _, err := b.PostMessage(ctx, fmt.Sprintf("room-%d", r.IntN(5)), "alice", randText(r)); err != nil {
				t.Fatal(err)
			}
		case op < 60:
			o, err := b.CreateOrder(ctx, fmt.Sprintf("cust-%d", r.IntN(8)), randItems(r))
			if err != nil {
				t.Fatal(err)
			}
			orders = append(orders, o)
		case op < 80 && len(orders) > 0:
			i := r.IntN(len(orders))
			if next := nextStatus[orders[i].Status]; len(next) > 0 {
				if orders[i], err = b.UpdateOrderStatus(ctx, orders[i].ID, next[r.IntN(len(next))], orders[i].Version); err != nil {
					t.Fatal(err)
				}
			}
		case op < 86:
			clock.Advance(time.Duration(r.IntN(90)) * time.Minute)
			if _, err := b.prune(ctx); err != nil {
				t.Fatal(err)
			}
		case op < 90:
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			if b, err = open(dir, opts, clock.Now); err != nil {
				t.Fatalf("reopen: %v", err)
			}
		case op < 93:
			// Beyond the API: a message of up to 1 MiB, as a later,
			// larger limit would write it.
			m := store.Message{ID: fmt.Sprintf("%08x%016x", 0x70000000, r.Uint64()), Room: "big", Author: "a", Text: strings.Repeat("b", 8<<10+r.IntN(1<<20))}
			err := b.update(func(tx *bbolt.Tx) error {
				v, err := json.Marshal(m)
				if err != nil {
					return err
				}
				return tx.Bucket(messageBucket).Put(messageKey(m.Room, m.ID), v)
			})
			if err != nil {
				t.Fatal(err)
			}
		default:
			burst(4, 5, randLong)
		}
	}
	if large {
		long := func() string { return strings.Repeat("L", store.MaxTextLen) }
		for st, _ := os.Stat(filepath.Join(dir, fileName)); st.Size() < 4<<20; st, _ = os.Stat(filepath.Join(dir, fileName)) {
			burst(8, 25, long)
		}
		// Prune most of it: its pages are freed.
		clock.Advance(3 * time.Hour)
		b.opts.RetainCount = 100
		if _, err := b.prune(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// bboltCheck opens the store file at path with bbolt, read-only, runs
// Tx.Check and adds what the file holds to stats. Any panic or memory
// fault becomes an error (guard).
func bboltCheck(path string, stats *storeStats) (problems []error, err error) {
	err = guard(func() error {
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
		if err != nil {
			return err
		}
		defer db.Close()
		return db.View(func(tx *bbolt.Tx) error {
			for err := range tx.Check() {
				problems = append(problems, err)
			}
			if stats == nil || len(problems) > 0 {
				return nil
			}
			stats.freePages += db.Stats().FreePageN
			return tx.ForEach(func(_ []byte, bk *bbolt.Bucket) error {
				s := bk.Stats()
				stats.records += s.KeyN
				stats.branchPages += s.BranchPageN
				stats.overflowPages += s.BranchOverflowN + s.LeafOverflowN
				// Read every value: an accepted file never faults.
				return bk.ForEach(func(k, v []byte) error {
					if len(v) > 0 {
						_ = v[len(v)-1]
					}
					return nil
				})
			})
		})
	})
	return problems, err
}

// metaPageNotItself tells whether bbolt's check came to its assertion
// that meta page 0 or 1 does not identify as itself.
func metaPageNotItself(err error, problems []error) bool {
	for _, e := range append(problems, err) {
		if e != nil && (strings.Contains(e.Error(), "Page expected to be: 0, but") || strings.Contains(e.Error(), "Page expected to be: 1, but")) {
			return true
		}
	}
	return false
}

// bboltCheckAfterCommits opens path with bbolt as the server does,
// commits twice (so both meta pages are written again), and checks the
// file as bboltCheck does.
func bboltCheckAfterCommits(path string) (problems []error, err error) {
	err = guard(func() error {
		db, err := bbolt.Open(path, 0o600, nil)
		if err != nil {
			return err
		}
		defer db.Close()
		for i := range 2 {
			if err := db.Update(func(tx *bbolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists([]byte("check-commits"))
				if err != nil {
					return err
				}
				return b.Put([]byte{byte(i)}, []byte{byte(i)})
			}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return bboltCheck(path, nil)
}

// damageCopy writes to dst the file src damaged at random: bytes flipped
// anywhere (the metas too), the file cut, or a page zeroed.
func damageCopy(tb testing.TB, src, dst string, r *rand.Rand) {
	tb.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		tb.Fatal(err)
	}
	switch r.IntN(4) {
	case 0:
		for range 1 + r.IntN(50) {
			data[r.IntN(len(data))] ^= byte(1 + r.IntN(255))
		}
	case 1:
		data = data[:r.IntN(len(data))]
	case 2:
		ps := os.Getpagesize()
		at := ps * r.IntN(len(data)/ps)
		clear(data[at : at+ps])
	default:
		// One byte of a page header or element: the places the walk reads.
		ps := os.Getpagesize()
		at := ps*(2+r.IntN(len(data)/ps-2)) + r.IntN(pageHeaderSize+4*elementSize)
		data[at] ^= byte(1 + r.IntN(255))
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// TestCheckAgreesWithBbolt: see the comment at the top of this file.
func TestCheckAgreesWithBbolt(t *testing.T) {
	n := checkStores
	if testing.Short() {
		n = 3
	}
	if s := os.Getenv("CHANGECAST_CHECK_STORES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil {
			t.Fatalf("CHANGECAST_CHECK_STORES: %v", err)
		}
	}
	seed := rand.Uint64()
	if s := os.Getenv("CHANGECAST_CHECK_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("CHANGECAST_CHECK_SEED: %v", err)
		}
	}
	t.Logf("CHANGECAST_CHECK_SEED=%d", seed)
	const copies = 6 // damaged copies per store
	var stats storeStats
	for i := range n {
		r := rand.New(rand.NewPCG(seed, uint64(i)))
		dir := t.TempDir()
		buildRandomStore(t, dir, r, i%4 == 3)
		if t.Failed() {
			t.Fatalf("building store %d (CHANGECAST_CHECK_SEED=%d) failed", i, seed)
		}
		path := filepath.Join(dir, fileName)
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		stats.stores++
		stats.bytes += int(st.Size())
		if err := checkFile(path); err != nil {
			t.Fatalf("store %d (CHANGECAST_CHECK_SEED=%d): the check refused a valid store: %v", i, seed, err)
		}
		if problems, err := bboltCheck(path, &stats); err != nil || len(problems) > 0 {
			t.Fatalf("store %d (CHANGECAST_CHECK_SEED=%d): bbolt: %v %v", i, seed, err, problems)
		}
		for c := range copies {
			dst := filepath.Join(dir, fmt.Sprintf("damaged-%d.db", c))
			damageCopy(t, path, dst, r)
			stats.damaged++
			err := checkFile(dst)
			if err != nil {
				if !errors.Is(err, ErrDamaged) && !errors.Is(err, errUnfinished) {
					t.Errorf("store %d copy %d (CHANGECAST_CHECK_SEED=%d): got %v, want an error wrapping ErrDamaged", i, c, seed, err)
				}
				stats.refused++
				continue
			}
			problems, err := bboltCheck(dst, nil)
			if metaPageNotItself(err, problems) {
				// One meta page is not a valid meta (zeroed): bbolt opens
				// the file on the other, as the check does, but Tx.Check
				// asserts both metas' page ids. bbolt's own use must still
				// find the file clean once its commits have rewritten both
				// metas, as a server's first two commits do.
				problems, err = bboltCheckAfterCommits(dst)
			}
			if err != nil || len(problems) > 0 {
				t.Errorf("store %d copy %d (CHANGECAST_CHECK_SEED=%d): the check accepted a file bbolt finds damaged: %v %v", i, c, seed, err, problems)
			}
		}
		os.RemoveAll(dir) // a long run builds gigabytes
	}
	t.Logf("seed %d: %d stores (%d MiB), %d records, %d branch pages, %d overflow pages, %d free pages; %d damaged copies, %d refused, the rest opened and checked clean by bbolt",
		seed, stats.stores, stats.bytes>>20, stats.records, stats.branchPages, stats.overflowPages, stats.freePages, stats.damaged, stats.refused)
}
