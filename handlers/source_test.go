package handlers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"changecast/store"
	"changecast/stream"
)

// boltSource is the tests' stream.Source over the embedded store, doing
// what cmd/changecast's adapter does: encode each change's payload once
// and map the store's position errors to the stream's.
type boltSource struct{ b *store.Bolt }

var _ stream.Source = boltSource{}

type (
	orderPayload struct {
		Topic string       `json:"topic"`
		Op    string       `json:"op"`
		Order *store.Order `json:"order"`
	}
	messagePayload struct {
		Topic   string         `json:"topic"`
		Op      string         `json:"op"`
		Message *store.Message `json:"message"`
	}
	orderSnapshot struct {
		Topic string       `json:"topic"`
		Order *store.Order `json:"order"`
	}
	roomSnapshot struct {
		Topic    string          `json:"topic"`
		Messages []store.Message `json:"messages"`
	}
)

func changeEvent(c store.Change) (stream.Event, error) {
	ev := stream.Event{ID: c.Pos, Topic: c.Topic, Time: c.Time}
	var payload any
	switch {
	case c.Order != nil:
		ev.Name = "order"
		payload = orderPayload{Topic: c.Topic, Op: c.Op, Order: c.Order}
	case c.Message != nil:
		ev.Name = "message"
		payload = messagePayload{Topic: c.Topic, Op: c.Op, Message: c.Message}
	default:
		return stream.Event{}, fmt.Errorf("change %s on %s carries no document", c.Pos, c.Topic)
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return stream.Event{}, err
	}
	ev.Data = data
	return ev, nil
}

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

func (s boltSource) Head(ctx context.Context) (string, error) {
	pos, err := s.b.Head(ctx)
	return pos, streamErr(err)
}

func (s boltSource) Follow(ctx context.Context, after string, fn func(stream.Batch) error) error {
	return streamErr(s.b.Follow(ctx, after, func(b store.Batch) error {
		out := stream.Batch{Checkpoint: b.Checkpoint, Events: make([]stream.Event, 0, len(b.Changes))}
		for _, c := range b.Changes {
			ev, err := changeEvent(c)
			if err != nil {
				return err
			}
			out.Events = append(out.Events, ev)
		}
		return fn(out)
	}))
}

func (s boltSource) CatchUp(ctx context.Context, topics []string, after, until string, fn func(stream.Event) error) error {
	return streamErr(s.b.CatchUp(ctx, topics, after, until, func(c store.Change) error {
		ev, err := changeEvent(c)
		if err != nil {
			return err
		}
		return fn(ev)
	}))
}

func (s boltSource) Snapshot(ctx context.Context, topics []string) ([]stream.Event, string, error) {
	snaps, pos, err := s.b.Snapshot(ctx, topics)
	if err != nil {
		return nil, "", streamErr(err)
	}
	out := make([]stream.Event, 0, len(snaps))
	for _, sn := range snaps {
		var payload any
		if kind, _, _ := store.ParseTopic(sn.Topic); kind == "rooms" {
			msgs := sn.Messages
			if msgs == nil {
				msgs = []store.Message{}
			}
			payload = roomSnapshot{Topic: sn.Topic, Messages: msgs}
		} else {
			payload = orderSnapshot{Topic: sn.Topic, Order: sn.Order}
		}
		data, err := json.Marshal(payload)
		if err != nil {
			return nil, "", err
		}
		out = append(out, stream.Event{ID: pos, Topic: sn.Topic, Name: "snapshot", Data: data})
	}
	return out, pos, nil
}

func (s boltSource) CheckPosition(pos string) error {
	return streamErr(s.b.CheckPosition(pos))
}
