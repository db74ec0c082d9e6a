// Package streamsource adapts a store.Backend's change log to stream's Source:
// every change is encoded once, in the payloads package protocol
// declares, for all its subscribers, and the store's position errors
// become the stream's.
package streamsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"changecast/protocol"
	"changecast/store"
	"changecast/stream"
)

// source turns a backend's change log into the multiplexer's events: it
// encodes each change's JSON payload once and maps the store's errors to
// the stream's.
type source struct {
	b store.Backend
}

// New returns the stream.Source that reads b's change log and encodes it
// as SSE events. It is safe for concurrent use as b is.
func New(b store.Backend) stream.Source { return source{b} }

// event encodes one change.
func event(c store.Change) (stream.Event, error) {
	ev := stream.Event{ID: c.Pos, Topic: c.Topic, Also: c.Lists, Time: c.Time}
	var payload any
	switch {
	case c.Order != nil:
		ev.Name = protocol.EventOrder
		payload = protocol.OrderChange{Topic: c.Topic, Op: c.Op, Order: c.Order}
	case c.Message != nil:
		ev.Name = protocol.EventMessage
		payload = protocol.MessageChange{Topic: c.Topic, Op: c.Op, Message: c.Message}
	default:
		return stream.Event{}, fmt.Errorf("change %s on %s carries no document", c.Pos, c.Topic)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return stream.Event{}, fmt.Errorf("encode change %s: %w", c.Pos, err)
	}
	ev.Data = data
	return ev, nil
}

// streamErr maps the store's position errors to the stream's, keeping the
// original in the chain.
func streamErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrHistoryLost):
		return fmt.Errorf("%w: %w", stream.ErrHistoryLost, err)
	case errors.Is(err, store.ErrInvalidPosition):
		return fmt.Errorf("%w: %w", stream.ErrInvalidPosition, err)
	}
	return err
}

func (s source) Head(ctx context.Context) (string, error) {
	pos, err := s.b.Head(ctx)
	return pos, streamErr(err)
}

func (s source) Follow(ctx context.Context, after string, fn func(stream.Batch) error) error {
	err := s.b.Follow(ctx, after, func(b store.Batch) error {
		out := stream.Batch{Checkpoint: b.Checkpoint, Events: make([]stream.Event, 0, len(b.Changes))}
		for _, c := range b.Changes {
			ev, err := event(c)
			if err != nil {
				return err
			}
			out.Events = append(out.Events, ev)
		}
		return fn(out)
	})
	return streamErr(err)
}

func (s source) CatchUp(ctx context.Context, topics []string, after, until string, fn func(stream.Event) error) error {
	err := s.b.CatchUp(ctx, topics, after, until, func(c store.Change) error {
		ev, err := event(c)
		if err != nil {
			return err
		}
		return fn(ev)
	})
	return streamErr(err)
}

func (s source) Snapshot(ctx context.Context, topics []string) ([]stream.Event, string, error) {
	snaps, pos, err := s.b.Snapshot(ctx, topics)
	if err != nil {
		return nil, "", streamErr(err)
	}
	out := make([]stream.Event, 0, len(snaps))
	for _, sn := range snaps {
		var payload any
		switch kind, _, _ := store.ParseTopic(sn.Topic); kind {
		case store.KindRoom:
			msgs := sn.Messages
			if msgs == nil {
				msgs = []store.Message{}
			}
			payload = protocol.RoomSnapshot{Topic: sn.Topic, Messages: msgs}
		case store.KindOrderList, store.KindCustomer:
			orders := sn.Orders
			if orders == nil {
				orders = []store.Order{}
			}
			payload = protocol.ListSnapshot{Topic: sn.Topic, Orders: orders}
		default:
			payload = protocol.OrderSnapshot{Topic: sn.Topic, Order: sn.Order}
		}
		data, err := json.Marshal(payload)
		if err != nil {
			return nil, "", fmt.Errorf("encode snapshot of %s: %w", sn.Topic, err)
		}
		out = append(out, stream.Event{ID: pos, Topic: sn.Topic, Name: protocol.EventSnapshot, Data: data})
	}
	return out, pos, nil
}

func (s source) CheckPosition(pos string) error {
	return streamErr(s.b.CheckPosition(pos))
}

func (s source) ComparePositions(a, b string) int { return s.b.ComparePositions(a, b) }
