package bolt

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	"changecast/store"
)

// The embedded change log. Every committed write appends one entry, keyed by
// a sequence number (1, 2, ...), in the same transaction as the write; a
// per-topic index (topic, 0x00, seq) lets CatchUp range-scan a few topics.
// An order change is indexed under its own topic and under each of its list
// topics (orders and customers/<customer>), so catching up on a list topic
// reads only that list's entries: its cost grows with the number of changes
// on the list after the position (for orders, every order change; for a
// customer, only that customer's), never with the rest of the log.
// A position is "<deployment>-<seq>": 8 hex characters made with the
// database, a dash, 16 hex characters of the sequence number, so positions
// of one database order bytewise like the log. Seq 0 is the empty log. The
// pruner deletes a prefix of the log and records the last deleted seq;
// resuming from before it loses history.

const (
	// deploymentLen is the length of a deployment id.
	deploymentLen = 8
	// posLen is the length of a position: deployment, dash, 16 hex.
	posLen = deploymentLen + 1 + 16
	// readChunk is how many changes Follow and CatchUp read in one read
	// transaction: it bounds their memory and how long a transaction stays
	// open (bbolt cannot reuse pages freed after an open reader began).
	readChunk = 512
)

// record is a log entry as stored.
type record struct {
	Topic string `json:"topic"`
	// Lists are the change's list topics; absent in a record written
	// before list topics (see lists).
	Lists   []string       `json:"lists,omitempty"`
	Op      string         `json:"op"`
	Order   *storedOrder   `json:"order,omitempty"`
	Message *store.Message `json:"message,omitempty"`
	Time    time.Time      `json:"time"`
}

// storedOrder is an order as the store writes it: its own fields, without
// what store.Order's MarshalJSON derives from them for clients (allowed).
type storedOrder store.Order

// append logs a change with sequence number seq (from alloc) and indexes it
// under its topic and its list topics.
func (t *txn) append(seq uint64, rec *record) {
	rec.Time = t.now
	t.putJSON(logBucket, seqKey(seq), rec)
	for _, topic := range rec.topics() {
		t.put(topicBucket, topicKey(topic, seq), []byte{})
	}
}

// lists returns the record's list topics: those it holds, or for an order
// change logged before list topics, those of the order's customer (which
// never changes).
func (r *record) lists() []string {
	if r.Lists == nil && r.Order != nil && r.Order.Customer != "" {
		return store.OrderLists(r.Order.Customer)
	}
	return r.Lists
}

// topics returns every topic the record is indexed under: its own first,
// then its list topics.
func (r *record) topics() []string {
	return append([]string{r.Topic}, r.lists()...)
}

// topicKey is a topic index key: topic, 0x00, seq big-endian.
func topicKey(topic string, seq uint64) []byte {
	k := make([]byte, 0, len(topic)+9)
	k = append(k, topic...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seq)
}

// pos returns the position of sequence number seq.
func (b *Store) pos(seq uint64) string {
	var s [posLen]byte
	copy(s[:], b.deployment)
	s[deploymentLen] = '-'
	hex.Encode(s[deploymentLen+1:], binary.BigEndian.AppendUint64(nil, seq))
	return string(s[:])
}

// parsePos returns the sequence number of pos, or an error wrapping
// ErrInvalidPosition if pos is malformed or from another deployment.
func (b *Store) parsePos(pos string) (uint64, error) {
	if len(pos) != posLen || pos[deploymentLen] != '-' || !isHex(pos[deploymentLen+1:]) || !isHex(pos[:deploymentLen]) {
		return 0, fmt.Errorf("position %.40q is malformed: %w", pos, store.ErrInvalidPosition)
	}
	if pos[:deploymentLen] != b.deployment {
		return 0, fmt.Errorf("position %s is from another deployment: %w", pos, store.ErrInvalidPosition)
	}
	var seq [8]byte
	if _, err := hex.Decode(seq[:], []byte(pos[deploymentLen+1:])); err != nil {
		return 0, fmt.Errorf("position %s: %v: %w", pos, err, store.ErrInvalidPosition)
	}
	return binary.BigEndian.Uint64(seq[:]), nil
}
