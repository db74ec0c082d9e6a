package bolt

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"go.etcd.io/bbolt"

	"changecast/store"
)

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
	// Only the key of the seek matters: it says where to step back from.
	var k, v []byte
	if k, _ = c.Seek(seek); k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	out := []store.Message{} // not nil: an empty room's list is [], not null
	for ; k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Prev() {
		var m store.Message
		if err := json.Unmarshal(v, &m); err != nil {
			return nil, fmt.Errorf("decode message %s: %w", k[len(prefix):], err)
		}
		if cap(out) == 0 {
			// Room for a snapshot's worth only once there is a message:
			// every stream of an empty room asks for one.
			out = make([]store.Message, 0, min(limit, store.SnapshotMessages))
		}
		out = append(out, m)
	}
	slices.Reverse(out)
	return out, nil
}

// messageKey is a message's key: room, 0x00, id. No room name contains
// 0x00, so one room's keys are contiguous and ordered by id.
func messageKey(room, id string) []byte {
	k := make([]byte, 0, len(room)+1+len(id))
	k = append(k, room...)
	k = append(k, 0)
	return append(k, id...)
}
