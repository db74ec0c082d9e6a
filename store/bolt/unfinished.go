package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// A start that fails before its first commit (a full disk, say) can leave
// behind a store file that holds nothing: empty, or part of what bbolt
// writes when it makes a file. Such a file is replaced at the next start
// rather than called damaged, so freeing the space is all it takes to
// start again. Anything else, however little it holds, is kept.

// errUnfinished is wrapped by checkFile's error for a store file that
// holds nothing a start ever committed (see unfinished).
var errUnfinished = errors.New("store file was never committed to")

// unfinished reports whether the file f, of size bytes, holds nothing
// but what bbolt writes when it makes a file, or the start of it: its
// two first meta pages, an empty free-page list and an empty root page,
// each page whole, cut, or all zeros. The page size is the system's, the
// one bbolt gives a new file.
func unfinished(f io.ReaderAt, size int64) (bool, error) {
	ps := int64(os.Getpagesize())
	if size > 4*ps {
		return false, nil
	}
	data := make([]byte, size)
	if _, err := f.ReadAt(data, 0); err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	first := initialPages(ps)
	for at := int64(0); at < size; at += ps {
		got := data[at:min(at+ps, size)]
		if !bytes.Equal(got, first[at:at+int64(len(got))]) && len(bytes.TrimLeft(got, "\x00")) > 0 {
			return false, nil
		}
	}
	return true, nil
}

// initialPages returns the four pages bbolt writes when it makes a file
// with page size ps (bbolt's DB.init): metas 0 and 1 of transactions 0
// and 1, an empty free-page list at page 2, an empty root at page 3.
func initialPages(ps int64) []byte {
	buf := make([]byte, 4*ps)
	le := binary.LittleEndian
	for i := range int64(2) {
		p := buf[i*ps:]
		le.PutUint64(p[0:], uint64(i))
		le.PutUint16(p[8:], metaPage)
		m := p[pageHeaderSize : pageHeaderSize+metaSize]
		le.PutUint32(m[0:], pageMagic)
		le.PutUint32(m[4:], pageVersion)
		le.PutUint32(m[8:], uint32(ps))
		le.PutUint64(m[16:], 3) // root bucket's page
		le.PutUint64(m[32:], 2) // free-page list
		le.PutUint64(m[40:], 4) // pages in use
		le.PutUint64(m[48:], uint64(i))
		h := fnv.New64a()
		h.Write(m[:metaChecksumAt])
		le.PutUint64(m[metaChecksumAt:], h.Sum64())
	}
	le.PutUint64(buf[2*ps:], 2)
	le.PutUint16(buf[2*ps+8:], freelistPage)
	le.PutUint64(buf[3*ps:], 3)
	le.PutUint16(buf[3*ps+8:], leafPage)
	return buf
}

// removeUnfinished removes the store file at path after checking again,
// under bbolt's file lock, that it is unfinished: another process
// starting on the same directory holds that lock while it makes the
// file.
func removeUnfinished(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	defer f.Close()
	if err := lockFile(f); err != nil {
		return fmt.Errorf("open store %s: in use by another process: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	if ok, err := unfinished(f, st.Size()); err != nil || !ok {
		return fmt.Errorf("open store %s: it changed while it was checked (another process?): %v", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("open store %s: remove the unfinished file: %w", path, err)
	}
	return nil
}
