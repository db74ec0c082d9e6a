package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"runtime/debug"
)

// Damage detection for the embedded store's file.
//
// bbolt reads its file through a memory map and trusts what it finds: a
// page id past the end of a truncated file is a SIGBUS, a garbage element
// offset a SIGSEGV, and with NoFreelistSync it walks the whole tree at open
// (and after a failed commit) in a goroutine of its own, where neither can
// be recovered. So before bbolt sees the file, checkFile reads it with
// plain reads and checks everything bbolt's walk relies on: a valid meta
// page (magic, version, checksum), a file long enough for every page the
// meta counts, and, from the root, every reachable page: its id, type and
// extent, element offsets inside the page, keys in B+tree order, each page
// referenced once, nested and inline buckets; and that the root leads to
// changecast's buckets and format (see isStore). A file that passes cannot
// make bbolt fault or panic while opening. Values are not checked (bbolt
// keeps no checksum of them): a damaged value is found when it is read,
// and that read fails alone (see guard).
//
// The walker restates bbolt's rules rather than running bbolt's own
// Tx.Check in a child process that may die: it costs less than bbolt's
// open, needs no second process, and says what is wrong. It is held to
// bbolt by TestCheckAgreesWithBbolt, which requires that it accept every
// store the real write path makes and that bbolt check clean every
// damaged file it accepts.

// ErrDamaged is wrapped by the error of Open when the store file is
// damaged, and by the error of a read or write that met damage at run time.
var ErrDamaged = errors.New("store file is damaged")

// The bbolt file format, version 2 (go.etcd.io/bbolt/internal/common).
const (
	pageMagic      = 0xED0CDAED
	pageVersion    = 2
	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	elementSize    = 16 // branch: pos, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	bucketHeader   = 16 // root pgid u64, sequence u64
	metaChecksumAt = 56 // the meta's checksum covers the bytes before it
	metaSize       = 64
	branchPage     = 0x01
	leafPage       = 0x02
	metaPage       = 0x04
	freelistPage   = 0x10
	bucketLeaf     = 0x01
	noFreelist     = ^uint64(0)
	// minPageSize and maxPageSize bound the page sizes bbolt probes
	// for (1 KiB to 16 MiB); a meta claiming another is damaged.
	minPageSize = 1 << 10
	maxPageSize = 1 << 24
)

// damage describes what is wrong with a store file.
type damage struct{ what string }

func (d *damage) Error() string { return d.what }

func damaged(format string, args ...any) error {
	return &damage{what: fmt.Sprintf(format, args...)}
}

// checkFile checks the bbolt file at path without mapping it. It
// returns nil if the file does not exist (a fresh store); an error
// wrapping errUnfinished if it holds nothing a start ever committed (see
// unfinished); and an error wrapping ErrDamaged, saying what is wrong,
// what to do and naming the file, if it is damaged.
func checkFile(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check store file %s: %w", path, err)
	}
	defer f.Close()
	err = check(f)
	var d *damage
	switch {
	case errors.Is(err, errUnfinished):
		return fmt.Errorf("store file %s holds no data: a start that never completed (on a full disk, say) left it; "+
			"the next start makes a new store in its place: %w", path, errUnfinished)
	case errors.As(err, &d):
		return fmt.Errorf("store file %s is damaged: %s; keep this file, and restore the latest copy made by "+
			"`changecast backup` in its place (`changecast check %s` says what a store file holds): %w",
			path, d.what, path, ErrDamaged)
	case err != nil:
		return fmt.Errorf("check store file %s: %w", path, err)
	}
	return nil
}

// meta is the part of a meta page the check uses.
type meta struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64 // high-water mark: pages 0..pgid-1 are allocated
	txid     uint64
	ok       bool // magic, version and checksum are right
}

// readMeta decodes the meta page in page (a whole page or more).
func readMeta(page []byte) meta {
	if len(page) < pageHeaderSize+metaSize {
		return meta{}
	}
	m := page[pageHeaderSize : pageHeaderSize+metaSize]
	le := binary.LittleEndian
	h := fnv.New64a()
	h.Write(m[:metaChecksumAt])
	return meta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		freelist: le.Uint64(m[32:]),
		pgid:     le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
		ok: le.Uint32(m[0:]) == pageMagic && le.Uint32(m[4:]) == pageVersion &&
			le.Uint64(m[metaChecksumAt:]) == h.Sum64(),
	}
}

// checker walks a bbolt file with plain reads.
type checker struct {
	r        io.ReaderAt
	pageSize uint64
	hwm      uint64   // the meta's pgid
	seen     []bool   // page id → reachable (or a meta or freelist page)
	bufs     [][]byte // one page buffer per tree depth, reused for siblings
}

// check checks the bbolt file f; see checkFile. Errors about the
// file's content are *damage.
func check(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	if ok, err := unfinished(f, size); err != nil {
		return err
	} else if ok {
		return errUnfinished
	}
	// Meta page 0 says the page size; if it is damaged, meta 1 is found
	// the way bbolt finds it, by trying every page size.
	var first [pageHeaderSize + metaSize]byte
	if _, err := f.ReadAt(first[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	m0 := readMeta(first[:])
	var m1 meta
	if m0.ok {
		if _, err := f.ReadAt(first[:], int64(m0.pageSize)); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		m1 = readMeta(first[:])
	} else {
		for ps := int64(minPageSize); ps <= maxPageSize && ps < size; ps *= 2 {
			if _, err := f.ReadAt(first[:], ps); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if m1 = readMeta(first[:]); m1.ok {
				break
			}
		}
	}
	// bbolt uses the meta with the higher transaction id if it is valid,
	// else the other.
	m := m0
	if m1.txid > m0.txid && m1.ok || !m0.ok {
		m = m1
	}
	if !m.ok {
		return damaged("neither meta page is valid (not a store file, or its header is overwritten)")
	}
	ps := uint64(m.pageSize)
	if ps < minPageSize || ps > maxPageSize || ps&(ps-1) != 0 {
		return damaged("its meta page gives an impossible page size %d", ps)
	}
	if m.pgid < 3 || m.pgid > uint64(size)/ps {
		return damaged("it is %d bytes but holds %d pages of %d bytes (%d bytes): it was cut short",
			size, m.pgid, ps, m.pgid*ps)
	}
	c := &checker{r: f, pageSize: ps, hwm: m.pgid, seen: make([]bool, m.pgid)}
	c.seen[0], c.seen[1] = true, true
	if m.freelist != noFreelist {
		if err := c.checkFreelist(m.freelist); err != nil {
			return err
		}
	}
	if _, err := c.tree(m.root, nil, nil, 0); err != nil {
		return err
	}
	return c.isStore(m)
}

// maxDepth bounds the tree's depth (a B+tree of 2^64 keys with two per
// page is 64 deep); deeper means a reference loop.
const maxDepth = 64

// page reads page id and its overflow pages into the buffer of depth,
// after checking that they are allocated, not reached before, and that the
// header names the page.
func (c *checker) page(id uint64, depth int) ([]byte, error) {
	if id < 2 || id >= c.hwm {
		return nil, damaged("a reference to page %d, outside the %d allocated pages", id, c.hwm)
	}
	for len(c.bufs) <= depth {
		c.bufs = append(c.bufs, make([]byte, c.pageSize))
	}
	p := c.bufs[depth][:c.pageSize]
	if _, err := c.r.ReadAt(p, int64(id*c.pageSize)); err != nil {
		return nil, err
	}
	if got := binary.LittleEndian.Uint64(p[0:]); got != id {
		return nil, damaged("page %d says it is page %d", id, got)
	}
	overflow := uint64(binary.LittleEndian.Uint32(p[12:]))
	if id+overflow >= c.hwm {
		return nil, damaged("page %d runs %d pages past the %d allocated pages", id, overflow, c.hwm)
	}
	for i := id; i <= id+overflow; i++ {
		if c.seen[i] {
			return nil, damaged("page %d is referenced twice", i)
		}
		c.seen[i] = true
	}
	p, err := c.rest(c.bufs[depth], id, overflow)
	if err != nil {
		return nil, err
	}
	c.bufs[depth] = p
	return p, nil
}

// rest returns buf, or a larger buffer, holding page id (already read
// into buf's first page) and its overflow pages: the page's elements and
// their keys run on into them.
func (c *checker) rest(buf []byte, id, overflow uint64) ([]byte, error) {
	n := (overflow + 1) * c.pageSize
	if uint64(cap(buf)) < n {
		buf = append(make([]byte, 0, n), buf[:c.pageSize]...)
	}
	buf = buf[:n]
	if overflow > 0 {
		if _, err := c.r.ReadAt(buf[c.pageSize:], int64((id+1)*c.pageSize)); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// checkFreelist checks a freelist page written by a bbolt that syncs it.
func (c *checker) checkFreelist(id uint64) error {
	p, err := c.page(id, 0)
	if err != nil {
		return err
	}
	if flags := binary.LittleEndian.Uint16(p[8:]); flags != freelistPage {
		return damaged("page %d should be the free-page list but has type %#x", id, flags)
	}
	n, at := uint64(binary.LittleEndian.Uint16(p[10:])), uint64(pageHeaderSize)
	if n == 0xFFFF { // the real count is the first element
		n, at = binary.LittleEndian.Uint64(p[at:]), at+8
	}
	if n > (uint64(len(p))-at)/8 {
		return damaged("the free-page list on page %d overruns its page", id)
	}
	for i := range n {
		if free := binary.LittleEndian.Uint64(p[at+8*i:]); free < 2 || free >= c.hwm {
			return damaged("the free-page list names page %d, outside the %d allocated pages", free, c.hwm)
		}
	}
	return nil
}

// tree checks the B+tree rooted at page id: every key k with min <= k < max
// (nil for no bound), as bbolt's own check requires. It returns the
// subtree's largest key.
func (c *checker) tree(id uint64, min, max []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, damaged("page %d is %d levels deep: the tree has a loop", id, depth)
	}
	p, err := c.page(id, depth)
	if err != nil {
		return nil, err
	}
	return c.node(p, id, min, max, depth)
}

// node checks the page p (a page read from the file, or an inline bucket's
// page, for which id is its bucket's page) and the subtrees below it.
func (c *checker) node(p []byte, id uint64, min, max []byte, depth int) ([]byte, error) {
	le := binary.LittleEndian
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	if flags != branchPage && flags != leafPage {
		return nil, damaged("page %d has type %#x where a branch or leaf page belongs", id, flags)
	}
	if pageHeaderSize+count*elementSize > len(p) {
		return nil, damaged("page %d claims %d elements, more than fit in it", id, count)
	}
	if flags == branchPage && count == 0 {
		return nil, damaged("branch page %d is empty", id)
	}
	var last []byte
	running := min
	for i := range count {
		at := pageHeaderSize + i*elementSize
		e := p[at : at+elementSize]
		var pos, ksize, vsize uint64
		if flags == branchPage {
			pos, ksize = uint64(le.Uint32(e[0:])), uint64(le.Uint32(e[4:]))
		} else {
			pos, ksize, vsize = uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
		}
		start := uint64(at) + pos
		if start+ksize+vsize > uint64(len(p)) {
			return nil, damaged("element %d of page %d points outside the page", i, id)
		}
		key := p[start : start+ksize]
		if i == 0 && running != nil && bytes.Compare(running, key) > 0 ||
			i > 0 && bytes.Compare(running, key) >= 0 ||
			max != nil && bytes.Compare(key, max) >= 0 {
			return nil, damaged("the keys of page %d are out of order", id)
		}
		if flags == branchPage {
			next := max
			if i+1 < count {
				n := p[pageHeaderSize+(i+1)*elementSize:]
				npos, nksize := uint64(le.Uint32(n[0:])), uint64(le.Uint32(n[4:]))
				nstart := uint64(pageHeaderSize+(i+1)*elementSize) + npos
				if nstart+nksize > uint64(len(p)) {
					return nil, damaged("element %d of page %d points outside the page", i+1, id)
				}
				next = p[nstart : nstart+nksize]
			}
			sub, err := c.tree(le.Uint64(e[8:]), key, next, depth+1)
			if err != nil {
				return nil, err
			}
			running, last = sub, sub
			continue
		}
		running, last = key, key
		if le.Uint32(e[0:])&bucketLeaf == 0 {
			continue
		}
		v := p[start+ksize : start+ksize+vsize]
		if len(v) < bucketHeader {
			return nil, damaged("bucket %q on page %d has a short header", key, id)
		}
		if root := le.Uint64(v[0:]); root != 0 {
			if _, err := c.tree(root, nil, nil, depth+1); err != nil {
				return nil, err
			}
			continue
		}
		inline := v[bucketHeader:]
		if len(inline) < pageHeaderSize || le.Uint16(inline[8:]) != leafPage {
			return nil, damaged("inline bucket %q on page %d is malformed", key, id)
		}
		if _, err := c.node(inline, id, nil, nil, depth+1); err != nil {
			return nil, err
		}
	}
	// The page's buffer is reused for its next sibling: keep a copy.
	return bytes.Clone(last), nil
}

// isStore checks that the tree of meta m, already checked, is
// changecast's: its root holds the buckets of every format and the meta
// bucket the format key. The only other tree accepted is the empty one
// bbolt writes when it makes a file, under its first metas (a store
// changecast has yet to commit to). A meta page that passes its checksum
// but leads anywhere else (rewritten, or another program's file) would
// have changecast serve an empty store and write over the old one.
func (c *checker) isStore(m meta) error {
	root, err := c.load(m.root)
	if err != nil {
		return err
	}
	if binary.LittleEndian.Uint16(root[10:]) == 0 && m.txid <= 1 && m.root == 3 && m.pgid == 4 {
		return nil
	}
	for _, name := range [][]byte{metaBucket, logBucket, topicBucket, orderBucket, messageBucket} {
		v, bucket, err := c.get(m.root, nil, name)
		if err != nil {
			return err
		}
		if !bucket {
			return damaged("its meta page's root (page %d) leads to no %q bucket: the meta page is damaged, "+
				"or the file is not changecast's", m.root, name)
		}
		if bytes.Equal(name, metaBucket) {
			f, _, err := c.get(binary.LittleEndian.Uint64(v), v[bucketHeader:], keyFormat)
			if err != nil {
				return err
			}
			if len(f) != 8 {
				return damaged("its meta page's root (page %d) leads to a %q bucket without a format: "+
					"the meta page is damaged, or the file is not changecast's", m.root, name)
			}
		}
	}
	return nil
}

// load reads page id and its overflow pages, of a tree already checked,
// into a new buffer.
func (c *checker) load(id uint64) ([]byte, error) {
	p := make([]byte, c.pageSize)
	if _, err := c.r.ReadAt(p, int64(id*c.pageSize)); err != nil {
		return nil, err
	}
	return c.rest(p, id, uint64(binary.LittleEndian.Uint32(p[12:])))
}

// get returns the value of key in a tree already checked: the tree at
// page root, or if root is 0 the inline bucket page inline, and whether
// the value is a bucket. A missing key is a nil value.
func (c *checker) get(root uint64, inline, key []byte) (v []byte, bucket bool, err error) {
	le := binary.LittleEndian
	p := inline
	if root != 0 {
		if p, err = c.load(root); err != nil {
			return nil, false, err
		}
	}
	for le.Uint16(p[8:]) == branchPage {
		// The child whose range holds key: the last with a first key
		// at or before it (or the first).
		child := le.Uint64(p[pageHeaderSize+8:])
		for i := 1; i < int(le.Uint16(p[10:])); i++ {
			at := pageHeaderSize + i*elementSize
			start := uint64(at) + uint64(le.Uint32(p[at:]))
			if bytes.Compare(p[start:start+uint64(le.Uint32(p[at+4:]))], key) > 0 {
				break
			}
			child = le.Uint64(p[at+8:])
		}
		if p, err = c.load(child); err != nil {
			return nil, false, err
		}
	}
	for i := range int(le.Uint16(p[10:])) {
		at := pageHeaderSize + i*elementSize
		start := uint64(at) + uint64(le.Uint32(p[at+4:]))
		ksize, vsize := uint64(le.Uint32(p[at+8:])), uint64(le.Uint32(p[at+12:]))
		if bytes.Equal(p[start:start+ksize], key) {
			return bytes.Clone(p[start+ksize : start+ksize+vsize]), le.Uint32(p[at:])&bucketLeaf != 0, nil
		}
	}
	return nil, false, nil
}

// guard runs fn, which reads or writes the mapped file, and turns a
// panic or a memory fault on damaged pages into an error wrapping
// ErrDamaged, so one bad record fails one request instead of the process.
// bbolt only faults in the goroutine that touches the page: the fault
// becomes a panic here because of SetPanicOnFault.
func guard(fn func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrDamaged, r)
		}
	}()
	return fn()
}
