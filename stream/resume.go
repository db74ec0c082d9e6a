package stream

import (
	"changecast/protocol"
	"context"
	"errors"
	"time"
)

var (
	// errWrite ends a catch-up whose write to the client failed.
	errWrite = errors.New("write to client failed")
	// errFeedBehind means the feed did not reach a client's position in
	// time.
	errFeedBehind = errors.New("the feed did not reach the position in time")
)

// The resume protocol of one stream: what it sends before its live
// events. Each step is the session's own, on its writer, under its
// context; the Multiplexer only lends its Source, its memory (replay) and
// the bound on catch-ups reading the Source.

// begin sends what comes before live events and returns the position the
// client then holds: every queued event at or before it is skipped.
// s.head is the feed's position when the subscriber was registered; every
// event after it reaches the subscriber's queue.
func (s *session) begin() (string, error) {
	m, ctx, topics, head := s.m, s.ctx, s.opts.Topics, s.head
	m.hit(fpBegin, topics)
	p := s.opts.LastEventID
	if p != "" {
		if err := m.src.CheckPosition(p); err != nil {
			s.reset(protocol.ResetInvalidID)
			p = ""
		}
	}
	if m.compare(p, head) > 0 {
		// The client is ahead of this process's feed: it came from a
		// process further along, or its id was never made here (another
		// cluster, or made by hand) although it looks right. Every event
		// after head reaches the queue, where those up to p are skipped,
		// once the feed gets to p; if it does not soon, p is not ours.
		if err := m.awaitFeed(ctx, p); err != nil {
			if ctx.Err() != nil {
				return "", err
			}
			s.reset(protocol.ResetInvalidID)
			p = ""
		}
	}
	for attempt := 0; ; attempt++ {
		if p == "" {
			pos, err := s.snapshot()
			if err != nil {
				return "", err
			}
			p = pos
		}
		// A snapshot may be older than head (the database answered from
		// an earlier point than the feed has reached): fill the gap too.
		err := s.catchUp(p, head)
		var reason protocol.ResetReason
		switch {
		case err == nil:
			m.hit(fpHandover, topics)
			if m.compare(p, head) > 0 {
				return p, nil
			}
			return head, nil
		case errors.Is(err, ErrHistoryLost):
			reason = protocol.ResetHistoryLost
		case errors.Is(err, ErrInvalidPosition):
			reason = protocol.ResetInvalidID
		}
		if reason == "" || attempt > 0 {
			return "", err
		}
		s.reset(reason)
		p = ""
	}
}

// awaitFeed waits until the feed's position is at or after pos, for at
// most aheadWait. It returns errFeedBehind when that time passes first,
// or ctx's error.
func (m *Multiplexer) awaitFeed(ctx context.Context, pos string) error {
	timer := time.NewTimer(aheadWait)
	defer timer.Stop()
	for {
		m.mu.Lock()
		if m.compare(m.last, pos) >= 0 {
			m.mu.Unlock()
			return nil
		}
		if m.advanced == nil {
			m.advanced = make(chan struct{})
		}
		moved := m.advanced
		m.mu.Unlock()
		select {
		case <-moved:
		case <-timer.C:
			return errFeedBehind
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// snapshot sends one snapshot event per topic, each with the snapshot's
// position as its id, and returns that position.
func (s *session) snapshot() (string, error) {
	evs, pos, err := s.m.src.Snapshot(s.ctx, s.opts.Topics)
	if err != nil {
		return "", err
	}
	if pos == "" {
		return "", errors.New("snapshot without a position")
	}
	for _, ev := range evs {
		if err := s.sw.encode(pos, protocol.EventSnapshot, ev.Data); err != nil {
			return "", err
		}
	}
	return pos, nil
}

// catchUp sends the events of the stream's topics with after < position
// <= head, from memory when it holds them all, else from the Source.
func (s *session) catchUp(after, head string) error {
	m, ctx, sw, topics := s.m, s.ctx, s.sw, s.opts.Topics
	if m.compare(after, head) >= 0 {
		return nil
	}
	m.hit(fpReplay, topics)
	if frames, ok := m.replay(topics, after, head); ok {
		for _, f := range frames {
			sw.addEvent(f.wire)
			if sw.full() {
				if err := s.send(); err != nil {
					return errWrite
				}
			}
		}
		return nil
	}
	// A slot of the pool bounds the catch-ups reading the Source at once;
	// it is given back while the client is written to, so clients that
	// do not read never keep others from catching up.
	take := func() error {
		select {
		case m.catchups <- struct{}{}:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := take(); err != nil {
		return err
	}
	held := true
	defer func() {
		if held {
			<-m.catchups
		}
	}()
	m.catchUpsRunning.Add(1)
	m.catchUpsTotal.Add(1)
	start := time.Now()
	defer func() {
		m.catchUpsRunning.Add(-1)
		if m.cfg.OnCatchUp != nil {
			m.cfg.OnCatchUp(time.Since(start))
		}
	}()
	var werr error
	err := m.src.CatchUp(ctx, topics, after, head, func(ev Event) error {
		if m.compare(ev.ID, after) <= 0 || m.compare(ev.ID, head) > 0 {
			return nil
		}
		if err := sw.encode(ev.ID, ev.Name, ev.Data); err != nil {
			// The feed skips such an event too: no client ever gets it.
			m.log.Error("event cannot be encoded; skipped", "topic", ev.Topic, "err", err)
			return nil
		}
		after = ev.ID
		if sw.full() {
			<-m.catchups
			held = false
			if err := s.send(); err != nil {
				werr = errWrite
				return werr
			}
			if err := take(); err != nil {
				return err
			}
			held = true
		}
		return nil
	})
	if werr != nil {
		return werr
	}
	return err
}

// reset sends one `reset` event per topic.
func (s *session) reset(reason protocol.ResetReason) {
	for _, t := range s.opts.Topics {
		_ = s.sw.encode("", protocol.EventReset, jsonData(protocol.Reset{Topic: t, Reason: reason}))
	}
}
