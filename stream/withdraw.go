package stream

import (
	"context"
	"slices"
	"time"
)

// Withdrawal: a live stream whose access to some of its topics may be
// taken back (StreamOptions.Recheck) has a checker, a goroutine the
// session owns (started when the stream goes live, stopped and waited
// for by end). Each RecheckEvery it asks Recheck about the topics still
// carried (of RecheckTopics, when given), and stops when none is left;
// for each refused one it leaves the topic (no frame of it is
// queued any more, and the user leaves its presence), hands the event to
// the session and notifies it. The session's step, the only writer,
// then writes the event, and from then on skips what was queued of that
// topic before it was left; with no topic left the stream ends.

// startCheck starts the checker if the stream has a Recheck.
func (s *session) startCheck() {
	if s.opts.Recheck == nil || s.opts.RecheckEvery <= 0 {
		return
	}
	ctx, cancel := context.WithCancel(s.ctx)
	done := make(chan struct{})
	s.stopCheck = func() {
		cancel()
		<-done
	}
	go func() {
		defer close(done)
		s.check(ctx)
	}()
}

// check runs Recheck every RecheckEvery until ctx ends or no topic it
// may take back is left, withdrawing the topics it refuses.
func (s *session) check(ctx context.Context) {
	t := time.NewTicker(s.opts.RecheckEvery)
	defer t.Stop()
	live := s.opts.Topics
	if len(s.opts.RecheckTopics) > 0 {
		live = slices.DeleteFunc(slices.Clone(live), func(t string) bool { return !slices.Contains(s.opts.RecheckTopics, t) })
	}
	for len(live) > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		refused := s.opts.Recheck(ctx, slices.Clone(live))
		if ctx.Err() != nil {
			return
		}
		var topics []string
		var evs []Event
		for _, ev := range refused {
			if slices.Contains(live, ev.Topic) && !slices.Contains(topics, ev.Topic) {
				topics = append(topics, ev.Topic)
				evs = append(evs, ev)
			}
		}
		if len(topics) == 0 {
			continue
		}
		live = slices.DeleteFunc(slices.Clone(live), func(t string) bool { return slices.Contains(topics, t) })
		if !s.m.leave(s.sub, topics) {
			return // dropped: the stream is ending
		}
		s.withdrawMu.Lock()
		s.withdrawn = append(s.withdrawn, evs...)
		s.withdrawMu.Unlock()
		s.withdrawDue.Store(true)
		s.notify()
	}
}

// leave takes topics out of s's registration: no frame of theirs
// reaches its queue from now on, and its user leaves them. It returns
// false if s is no longer registered.
func (m *Multiplexer) leave(s *subscriber, topics []string) bool {
	m.mu.Lock()
	if s.closed {
		m.mu.Unlock()
		return false
	}
	m.detachLocked(s, topics)
	// A new slice: unsubscribe reads the old one after unlocking.
	s.topics = slices.DeleteFunc(slices.Clone(s.topics), func(t string) bool { return slices.Contains(topics, t) })
	m.mu.Unlock()
	m.presence.leave(s.user, topics)
	return true
}

// writeWithdrawn writes the events of the topics withdrawn since the
// last step, and adds those topics to gone. It returns true when no
// topic is left.
func (s *session) writeWithdrawn() bool {
	s.withdrawMu.Lock()
	evs := s.withdrawn
	s.withdrawn = nil
	s.withdrawMu.Unlock()
	for _, ev := range evs {
		s.gone = append(s.gone, ev.Topic)
		_ = s.sw.encode("", ev.Name, ev.Data) // ErrBadField: left out, as a notice
	}
	return len(s.gone) == len(s.opts.Topics)
}

// carries reports whether f is on a topic the stream still carries.
func (s *session) carries(f *frame) bool {
	if len(s.gone) == 0 {
		return true
	}
	if s.live(f.topic) {
		return true
	}
	return slices.ContainsFunc(f.also, s.live)
}

// live reports whether topic is one of the stream's, not withdrawn.
func (s *session) live(topic string) bool {
	return slices.Contains(s.opts.Topics, topic) && !slices.Contains(s.gone, topic)
}
